"""The demo as a FastAPI app: on its own (`lite gradio`) or mounted beside the API (`lite serve --web`)."""
from __future__ import annotations

import hmac

from fastapi import FastAPI

from lite.model_info import ModelInfo
from lite.web.source import ChatSource

INSTALL_HINT = "pip install 'lite-deploy[web]'"


def require_gradio() -> None:
    try:
        import gradio  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(f"the web demo needs Gradio, which is not installed: {INSTALL_HINT}") from exc


def mount_demo(app: FastAPI, source: ChatSource, info: ModelInfo, where: str, path: str,
               api_keys: tuple[str, ...] = ()) -> FastAPI:
    """Serve the demo under `path` of `app`. With API keys the page asks for one as the password
    (any user name), so the web page is no way around the API's keys."""
    require_gradio()
    import gradio as gr

    from lite.web.ui import build_demo

    def is_api_key(_user: str, password: str) -> bool:
        # compare_digest against every key: the time taken does not tell how close a guess was.
        return any([hmac.compare_digest(password.encode(), key.encode()) for key in api_keys])

    demo = build_demo(source, info, where)
    return gr.mount_gradio_app(
        app, demo, path=path, ssr_mode=False, footer_links=[],
        auth=is_api_key if api_keys else None,
        auth_message="Log in with any user name and one of the server's API keys as the password.")
