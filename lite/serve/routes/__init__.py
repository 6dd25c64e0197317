"""One module per endpoint group: chat, completions, system (models, health, metrics)."""
