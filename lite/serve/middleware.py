"""Plain ASGI middleware: request counting by status, API-key auth, and a request body size limit.

Plain ASGI rather than Starlette's BaseHTTPMiddleware, which buffers and wraps streaming
responses and would delay every server-sent event.
"""
from __future__ import annotations

import hmac

from lite.serve.errors import error_response
from lite.serve.metrics import Metrics

ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics", "/docs",
          "/openapi.json")


def route_label(path: str) -> str:
    """A bounded set of labels, whatever paths clients (or fuzzers) try."""
    if path in ROUTES:
        return path
    return "/v1/models/{model}" if path.startswith("/v1/models/") else "other"


class CountRequests:
    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500  # unless a response starts

        async def send_and_record(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            self.metrics.http_requests.labels(route_label(scope["path"]), str(status)).inc()


class BearerAuth:
    """API keys guard /v1/*; /health and /metrics stay open for probes and scrapers."""

    def __init__(self, app, api_keys: tuple[str, ...]):
        self.app = app
        self.api_keys = [key.encode() for key in api_keys]

    async def __call__(self, scope, receive, send):
        if (scope["type"] == "http" and scope["path"].startswith("/v1")
                and scope["method"] != "OPTIONS" and not self._is_authorized(scope)):
            response = error_response(401, "a valid API key is required: send 'Authorization: Bearer "
                                           "<key>'", code="invalid_api_key",
                                      headers={"WWW-Authenticate": "Bearer"})
            return await response(scope, receive, send)
        return await self.app(scope, receive, send)

    def _is_authorized(self, scope) -> bool:
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        token = token.strip()
        # compare_digest against every key: the time taken does not tell how close a guess was.
        matches = [hmac.compare_digest(token, key) for key in self.api_keys]
        return scheme.lower() == b"bearer" and any(matches)


class LimitRequestBody:
    """Reads the whole body first (JSON bodies are small) and answers 413 past the limit, before
    any parsing; the app then gets the body back as one message."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await self._too_large(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left while sending
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await self._too_large(scope, receive, send)
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay():
            nonlocal delivered
            if delivered:
                return await receive()  # later reads wait for the disconnect, as they should
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, scope, receive, send):
        response = error_response(413, f"the request body is larger than {self.max_bytes} bytes "
                                       "(--max-request-body)", code="request_too_large")
        await response(scope, receive, send)
