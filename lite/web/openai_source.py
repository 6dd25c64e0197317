"""Answers from any OpenAI-compatible endpoint (`lite gradio --api-url`), lite serve's included.

Streams /chat/completions over httpx; closing the stream closes the connection, and lite serve
aborts a request whose client has gone. lite serve's /models entries carry a `lite` object
(backend, quantization, vision, generation defaults); other servers' show only the name.
"""
from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx

from lite.model_info import ModelInfo
from lite.web.errors import ChatError, failed_while_answering, http_error, unreachable
from lite.web.settings import GenerationSettings
from lite.web.source import AnswerDelta

CONNECT_TIMEOUT_S = 5.0
# A long prompt on a busy server may take minutes before its first token: no read timeout.
TIMEOUT = httpx.Timeout(CONNECT_TIMEOUT_S, read=None)


def model_info_from_card(card: dict) -> ModelInfo:
    details = card.get("lite") or {}
    return ModelInfo(
        name=card["id"], backend=details.get("backend"), dtype=details.get("dtype"),
        weight_quantization=details.get("weight_quantization"),
        kv_cache_dtype=details.get("kv_cache_dtype"), max_model_len=card.get("max_model_len"),
        is_vision=bool(details.get("vision")), generation_defaults=details.get("generation_defaults") or {})


class OpenAIChatSource:
    def __init__(self, api_url: str, api_key: str | None = None, model: str | None = None,
                 transport: httpx.AsyncBaseTransport | None = None):
        self.api_url = api_url.rstrip("/")
        self.model = model  # None: the first model the server lists
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._transport = transport  # tests answer from a mock

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=TIMEOUT, headers=self._headers, transport=self._transport)

    async def info(self) -> ModelInfo:
        url = f"{self.api_url}/models"
        try:
            async with self._client() as client:
                response = await client.get(url)
        except httpx.HTTPError as exc:
            raise unreachable(self.api_url, _describe(exc)) from exc
        if response.status_code != 200:
            raise http_error(url, response.status_code, _json_or_text(response))
        try:
            cards = response.json()["data"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ChatError(f"{url} did not answer with an OpenAI model list: is --api-url the API's "
                            "base URL (it usually ends in /v1)?") from exc
        if not cards:
            raise ChatError(f"the server at {self.api_url} serves no model")
        if self.model is None:
            self.model = cards[0]["id"]
        card = next((c for c in cards if c.get("id") == self.model), None)
        if card is None:
            names = ", ".join(c.get("id", "?") for c in cards)
            raise ChatError(f"the server at {self.api_url} does not serve {self.model!r}; it serves {names}")
        return model_info_from_card(card)

    async def stream(self, messages: list[dict], settings: GenerationSettings
                     ) -> AsyncIterator[AnswerDelta]:
        if self.model is None:
            await self.info()
        body = {"model": self.model, "messages": messages, "stream": True,
                "stream_options": {"include_usage": True}, **settings.request_fields()}
        url = f"{self.api_url}/chat/completions"
        num_chunks = 0
        try:
            async with self._client() as client, client.stream("POST", url, json=body) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise http_error(url, response.status_code, _json_or_text(response))
                async for line in response.aiter_lines():
                    event = _parse_event(line)
                    if event is None:
                        continue
                    if "error" in event:
                        raise failed_while_answering(url, event)
                    if event.get("usage"):  # the exact count, in the last chunk
                        yield AnswerDelta("", event["usage"]["completion_tokens"])
                    for choice in event.get("choices") or ():
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            # Servers send about one chunk per token: a live count until the usage.
                            num_chunks += 1
                            yield AnswerDelta(text, num_chunks)
        except httpx.HTTPError as exc:
            raise unreachable(self.api_url, _describe(exc)) from exc


def _parse_event(line: str) -> dict | None:
    """One server-sent event line: its JSON, or None for keep-alives, comments and [DONE]."""
    if not line.startswith("data:"):
        return None
    data = line[len("data:"):].strip()
    if not data or data == "[DONE]":
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def _json_or_text(response: httpx.Response) -> dict | str:
    try:
        return response.json()
    except ValueError:
        return response.text


def _describe(exc: httpx.HTTPError) -> str:
    return str(exc) or type(exc).__name__
