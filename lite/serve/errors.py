"""OpenAI-style error bodies for every failure, so SDKs raise the right exception with a useful message."""
from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lite.serve.protocol import ErrorDetail, ErrorResponse

logger = logging.getLogger("lite.serve")

# The `type` OpenAI puts in the body for each status: SDKs and dashboards key on it.
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               405: "invalid_request_error", 413: "invalid_request_error", 422: "invalid_request_error",
               429: "rate_limit_error", 500: "server_error", 503: "server_overloaded"}


class ClientDisconnected(Exception):
    """The client left before its answer was ready; its sequences have been aborted."""


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    detail = ErrorDetail(message=message, type=ERROR_TYPES.get(status, "invalid_request_error"),
                         param=param, code=code)
    return ErrorResponse(error=detail).model_dump()


def error_response(status: int, message: str, param: str | None = None, code: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param, code), status_code=status, headers=headers)


def sse_error(exc: Exception) -> str:
    """An error after a stream began: the status line is gone, so it travels as an event."""
    status = exc.status if isinstance(exc, APIError) else 500
    message = exc.message if isinstance(exc, APIError) else f"generation failed: {exc}"
    return f"data: {json.dumps(error_body(status, message))}\n\n"


def _describe_validation_error(exc: RequestValidationError) -> tuple[str, str | None]:
    parts, param = [], None
    for error in exc.errors():
        location = [str(p) for p in error.get("loc", ()) if p != "body"]
        param = param or ".".join(location) or None
        where = ".".join(location) or "body"
        if error.get("type") == "json_invalid":
            parts.append(f"the body is not valid JSON ({error.get('msg')})")
        else:
            parts.append(f"{where}: {error.get('msg')}")
    return "; ".join(dict.fromkeys(parts)) or "invalid request", param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return error_response(exc.status, exc.message, exc.param, exc.code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        # OpenAI answers schema violations with 400, not FastAPI's 422.
        message, param = _describe_validation_error(exc)
        return error_response(400, message, param)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}; see /docs for the API"
        return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(ClientDisconnected)
    async def _client_gone(request: Request, exc: ClientDisconnected):
        # Nobody reads this; 499 (nginx's "client closed request") keeps it apart in the metrics.
        return error_response(499, "the client closed the connection before the answer was ready")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}")
