"""`lite gradio`: the web demo on its own port, over the in-process engine or an OpenAI-compatible API."""
from __future__ import annotations

import asyncio
import logging
import os
from contextlib import asynccontextmanager

from lite.cli import add_listen_args, add_model_args, engine_from_args

logger = logging.getLogger("lite.web")


def add_gradio_parser(sub) -> None:
    parser = sub.add_parser(
        "gradio", help="chat with a model in the browser (Gradio web demo)",
        description="Start a web chat: streaming answers with history, a system prompt, generation "
                    "settings (temperature, top-p, max tokens, stop strings), Stop / Regenerate / Clear, "
                    "and the backend, quantization and tokens/s of the last answer. It runs MODEL in "
                    "this process, or, with --api-url, talks to any OpenAI-compatible server (lite "
                    "serve's included); the model flags below then do not apply. Needs "
                    "`pip install 'lite-deploy[web]'`. `lite serve --web` puts the same page beside the API.")
    add_model_args(parser)
    remote = parser.add_argument_group("remote model (instead of MODEL)")
    remote.add_argument("--api-url", metavar="URL",
                        help="base URL of an OpenAI-compatible API to chat with instead of loading a "
                             "model, e.g. http://127.0.0.1:8000/v1")
    remote.add_argument("--api-key", metavar="KEY",
                        default=os.environ.get("LITE_API_KEY") or os.environ.get("OPENAI_API_KEY"),
                        help="API key sent as 'Authorization: Bearer KEY' to --api-url (default: "
                             "$LITE_API_KEY, else $OPENAI_API_KEY; none: no header)")
    remote.add_argument("--api-model", metavar="NAME",
                        help="which of the server's models to chat with (default: the first that "
                             "its /models lists)")
    server = parser.add_argument_group("web server")
    add_listen_args(server, port=7860)
    parser.set_defaults(func=cmd_gradio)


def cmd_gradio(args) -> int:
    from lite.web.app import require_gradio

    require_gradio()  # before minutes of model loading, not after
    import uvicorn
    from fastapi import FastAPI

    from lite.web.app import mount_demo

    source, where, on_shutdown = _source_from_args(args)
    info = asyncio.run(source.info())

    @asynccontextmanager
    async def lifespan(app):
        yield
        on_shutdown()

    app = mount_demo(FastAPI(lifespan=lifespan), source, info, where, path="/")
    logger.info("web demo of %s (%s) at http://%s:%d/", info.name, where, args.host, args.port)
    # Open pages hold streams; past this many seconds Ctrl-C closes them rather than wait.
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=3)
    return 0


def _source_from_args(args):
    """(source, where it runs, what to do at shutdown)."""
    if args.api_url:
        from lite.web.openai_source import OpenAIChatSource

        return OpenAIChatSource(args.api_url, args.api_key, args.api_model), args.api_url, lambda: None
    from lite.engine.async_engine import AsyncLLMEngine
    from lite.model_info import describe_engine
    from lite.serve.cli import model_name
    from lite.web.engine_source import EngineChatSource

    engine = AsyncLLMEngine(engine_from_args(args))
    info = describe_engine(engine.engine, model_name(args.model))
    return EngineChatSource(engine, info), "in this process", engine.shutdown
