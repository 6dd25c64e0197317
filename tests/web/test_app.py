"""The demo mounted on a FastAPI app, as `lite serve --web` mounts it: API keys guard the page too."""
from fastapi import FastAPI
from fastapi.testclient import TestClient

from lite.model_info import ModelInfo
from lite.web.app import mount_demo
from lite.web.source import AnswerDelta

INFO = ModelInfo("smol", backend="cpu")


class SilentSource:
    async def info(self):
        return INFO

    async def stream(self, messages, settings):
        yield AnswerDelta("", 0)


def mounted(api_keys=()) -> TestClient:
    return TestClient(mount_demo(FastAPI(), SilentSource(), INFO, "lite serve", "/web", api_keys=api_keys))


def test_without_api_keys_the_page_is_open():
    with mounted() as client:
        assert client.get("/web/config").status_code == 200


def test_with_api_keys_the_page_takes_one_as_its_password():
    with mounted(api_keys=("key-1", "key-2")) as client:
        refused = client.get("/web/config")
        assert refused.status_code == 401 and "API keys as the password" in refused.text
        assert client.post("/web/login", data={"username": "me", "password": "guess"}).status_code == 400
        assert client.post("/web/login", data={"username": "me", "password": "key-2"}).status_code == 200
        assert client.get("/web/config").status_code == 200
