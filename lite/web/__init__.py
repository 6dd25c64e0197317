"""The web demo: a Gradio chat over the in-process engine or any OpenAI-compatible endpoint.

Only `ui.py` and `app.py` import gradio, and only when a demo is built: `import lite` and every
other command work without it.
"""
