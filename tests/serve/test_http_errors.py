"""Malformed requests get the right 4xx with an OpenAI-style error body; the server keeps serving."""
import httpx
import pytest

from .conftest import API_KEY, MODEL, WEB_ORIGIN

CHAT = [{"role": "user", "content": "Hi"}]


def post(server, path: str, body=None, content=None, headers=None) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, content=content, headers=headers, timeout=60)


def assert_error(response: httpx.Response, status: int, says: str, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert says in error["message"] and error["type"]
    if code:
        assert error["code"] == code
    return error


@pytest.mark.parametrize("path, body, status, says", [
    ("/v1/chat/completions", {"model": MODEL, "messages": "hi"}, 400, "messages"),
    ("/v1/chat/completions", {"model": MODEL, "messages": CHAT, "temperature": "hot"}, 400, "temperature"),
    ("/v1/chat/completions", {"model": MODEL, "messages": []}, 400, "messages"),
    ("/v1/chat/completions", {"messages": CHAT}, 400, "model"),
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, 400, "role"),
    ("/v1/chat/completions", {"model": MODEL, "messages": CHAT, "n": 0}, 400, "n"),
    ("/v1/chat/completions", {"model": MODEL, "messages": CHAT, "n": 1000}, 400, "n"),
    ("/v1/chat/completions", {"model": MODEL, "messages": CHAT, "max_tokens": 0}, 400, "max_tokens"),
    ("/v1/chat/completions", {"model": MODEL, "messages": CHAT, "max_tokens": 10**6}, 400,
     "lower max_tokens"),
    ("/v1/chat/completions", {"model": MODEL, "messages": CHAT, "top_logprobs": 2}, 400, "logprobs"),
    ("/v1/chat/completions", {"model": MODEL, "messages": CHAT, "logit_bias": {"x": 1}}, 400, "token ids"),
    ("/v1/chat/completions", {"model": MODEL, "messages": CHAT, "logit_bias": {"99999999": 1}}, 400,
     "vocabulary"),
    ("/v1/chat/completions", {"model": MODEL, "messages": CHAT, "stop": [""]}, 400, "stop"),
    ("/v1/chat/completions", {"model": MODEL, "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, 400, "text"),
    ("/v1/chat/completions", {"model": MODEL, "messages": CHAT, "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}}, 400, "schema"),
    ("/v1/chat/completions", {"model": MODEL, "messages": CHAT, "tool_choice": "required"}, 400, "tools"),
    ("/v1/chat/completions", {"model": MODEL, "messages": CHAT, "tools": [
        {"type": "function", "function": {"name": "f"}}],
        "tool_choice": {"type": "function", "function": {"name": "g"}}}, 400, "not among the tools"),
    ("/v1/completions", {"model": MODEL, "prompt": "word " * 2000}, 400, "shorten the prompt"),
    ("/v1/completions", {"model": MODEL, "prompt": [[1, 2, -5]]}, 400, "token ids"),
    ("/v1/completions", {"model": MODEL, "prompt": ""}, 400, "prompt"),
    ("/v1/completions", {"model": MODEL, "prompt": "x", "suffix": "y"}, 400, "suffix"),
])
def test_malformed_request_gets_a_4xx_that_says_what_is_wrong(server, path, body, status, says):
    assert_error(post(server, path, body), status, says)


def test_invalid_json_body(server):
    response = post(server, "/v1/chat/completions", content=b'{"model": "x", "messages": [',
                    headers={"Content-Type": "application/json"})
    assert_error(response, 400, "not valid JSON")


def test_unknown_model_is_404(server):
    response = post(server, "/v1/completions", {"model": "gpt-9", "prompt": "Hi"})
    assert_error(response, 404, "gpt-9", code="model_not_found")


def test_unknown_route_and_wrong_method(server):
    assert_error(httpx.get(f"{server.url}/v1/engines"), 404, "no route")
    assert_error(httpx.get(f"{server.url}/v1/chat/completions"), 405, "Method Not Allowed")


def test_the_server_keeps_serving_after_bad_requests(server):
    for _ in range(3):
        post(server, "/v1/chat/completions", content=b"\xff\x00garbage",
             headers={"Content-Type": "application/json"})
    response = post(server, "/v1/chat/completions", {"model": MODEL, "messages": CHAT, "max_tokens": 4})
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"]


def test_api_key_is_required_on_v1_only(strict_server):
    url = f"{strict_server.url}/v1/models"
    missing = httpx.get(url)
    assert_error(missing, 401, "API key", code="invalid_api_key")
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert_error(httpx.get(url, headers={"Authorization": "Bearer wrong"}), 401, "API key")
    assert httpx.get(url, headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200
    assert httpx.get(f"{strict_server.url}/health").status_code == 200


def test_oversized_body_is_413_with_or_without_content_length(strict_server):
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    body = b'{"model": "%s", "prompt": "%s"}' % (MODEL.encode(), b"x" * (80 << 10))
    assert_error(post(strict_server, "/v1/completions", content=body, headers=headers), 413, "larger than")

    def chunks():  # streamed without a Content-Length: counted as it arrives
        for start in range(0, len(body), 8192):
            yield body[start:start + 8192]
    assert_error(post(strict_server, "/v1/completions", content=chunks(), headers=headers), 413,
                 "larger than")


def test_cors_preflight_passes_without_a_key_for_the_allowed_origin(strict_server):
    headers = {"Origin": WEB_ORIGIN, "Access-Control-Request-Method": "POST",
               "Access-Control-Request-Headers": "authorization,content-type"}
    allowed = httpx.options(f"{strict_server.url}/v1/chat/completions", headers=headers)
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == WEB_ORIGIN
    other = httpx.options(f"{strict_server.url}/v1/chat/completions",
                          headers={**headers, "Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers
