"""The FastAPI app: routers, error handlers and middleware around one AsyncLLMEngine."""
from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.middleware.cors import CORSMiddleware

import lite
from lite.engine.async_engine import AsyncLLMEngine
from lite.serve.config import ServerConfig
from lite.serve.errors import install_error_handlers
from lite.serve.middleware import BearerAuth, CountRequests, LimitRequestBody
from lite.serve.routes import chat, completions, system
from lite.serve.state import ServerState


def build_app(engine: AsyncLLMEngine, config: ServerConfig) -> FastAPI:
    """The app owns the engine from here on: it shuts it down when the server stops (after uvicorn
    has drained the requests in flight)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        engine.shutdown()

    app = FastAPI(title="lite", version=lite.__version__, lifespan=lifespan,
                  description="OpenAI-compatible chat and text completions served by lite.")
    state = app.state.lite = ServerState(engine, config)
    install_error_handlers(app)
    for module in (chat, completions, system):
        app.include_router(module.router)
    # add_middleware wraps what is there: the last added runs first on a request.
    app.add_middleware(LimitRequestBody, max_bytes=config.max_request_bytes)
    if config.api_keys:
        app.add_middleware(BearerAuth, api_keys=config.api_keys)
    if config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["*"],
                           allow_headers=["*"], allow_credentials="*" not in config.cors_origins)
    app.add_middleware(CountRequests, metrics=state.metrics)
    app.openapi = lambda: _openapi_with_model_names(app, config.served_model_names)
    return app


def _openapi_with_model_names(app: FastAPI, names: tuple[str, ...]) -> dict:
    """The schema FastAPI derives, with `model` narrowed to the names served here: the docs page
    then says what to send, and schema-driven clients and fuzzers send names that exist."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description,
                             routes=app.routes)
        for request in ("ChatCompletionRequest", "CompletionRequest"):
            schema["components"]["schemas"][request]["properties"]["model"]["enum"] = list(names)
        app.openapi_schema = schema
    return app.openapi_schema
