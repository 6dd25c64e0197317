"""lite: deploy LLMs and VLMs on whatever accelerator the server has."""
__version__ = "0.1.0"


def __getattr__(name: str):
    # Keep `import lite` cheap: torch and transformers load only when an engine is asked for.
    if name in ("pipeline", "Pipeline"):
        from lite import api as module
        return getattr(module, name)
    if name == "SamplingParams":
        from lite.engine.sequence import SamplingParams
        return SamplingParams
    raise AttributeError(f"module 'lite' has no attribute {name!r}")
