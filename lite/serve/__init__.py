"""`lite serve`: an OpenAI-compatible HTTP server around the async engine (docs/architecture.md)."""
