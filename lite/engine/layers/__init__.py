"""Building blocks models are written against; each calls backend ops and never names a device."""
