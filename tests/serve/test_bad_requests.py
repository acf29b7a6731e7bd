"""Bad requests get OpenAI-shaped 4xx errors (``{"error": {"message", "type", "param", "code"}}``), and the server
answers the next good request."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.serve.conftest import API_KEY, openai

GOOD = {"model": "alpha", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 4, "temperature": 0}


def post(url: str, body: bytes, key: str | None = API_KEY) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def chat_url(server_url: str) -> str:
    return f"{server_url}/chat/completions"


@pytest.mark.parametrize(
    ("changes", "status", "param", "code"),
    [
        ({"model": "gamma"}, 404, "model", "model_not_found"),
        ({"max_tokens": -1}, 400, "max_tokens", None),
        ({"temperature": -0.5}, 400, "temperature", None),
        ({"top_p": 1.5}, 400, "top_p", None),
        ({"stop": ["a", "b", "c", "d", "e"]}, 400, "stop", None),
        ({"messages": "hello"}, 400, "messages", "invalid_value"),
        ({"stop": ["a", 5]}, 400, "stop", "invalid_value"),  # not "stop.list[str].1": the field, not pydantic's union
        ({"messages": [{"role": "user", "content": 7}]}, 400, "messages.0.content", "invalid_value"),
        ({"messages": [{"role": "user", "content": "hello " * 300}]}, 400, "messages", "context_length_exceeded"),
        ({"max_tokens": 250}, 400, "messages", "context_length_exceeded"),  # prompt + 250 > 256 positions
    ],
)
def test_a_bad_value_is_a_4xx_and_the_next_request_is_answered(server_url, changes, status, param, code):
    got_status, body = post(chat_url(server_url), json.dumps({**GOOD, **changes}).encode())
    assert got_status == status, body
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["param"] == param and body["error"]["code"] == code
    assert body["error"]["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
    assert post(chat_url(server_url), json.dumps(GOOD).encode())[0] == 200


def test_malformed_json_is_a_400(server_url):
    status, body = post(chat_url(server_url), b'{"model": "alpha", "messages": [')
    assert (status, body["error"]["code"], body["error"]["type"]) == (400, "invalid_json", "invalid_request_error")
    assert post(chat_url(server_url), json.dumps(GOOD).encode())[0] == 200


def test_an_empty_body_is_a_400_that_says_so(server_url):
    status, body = post(chat_url(server_url), b"")
    assert (status, body["error"]["message"]) == (400, "The request has no body: send a JSON object")


def test_an_empty_completion_prompt_is_a_400(server_url):  # the tiny tokenizer adds no BOS: no token to continue
    status, body = post(f"{server_url}/completions", json.dumps({"model": "alpha", "prompt": ""}).encode())
    assert (status, body["error"]["param"]) == (400, "prompt")


@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_a_missing_or_wrong_api_key_is_a_401(server_url, key):
    status, body = post(chat_url(server_url), json.dumps(GOOD).encode(), key=key)
    assert (status, body["error"]["code"]) == (401, "invalid_api_key")
    if key is not None:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=server_url, api_key=key, max_retries=0).models.list()
    assert post(chat_url(server_url), json.dumps(GOOD).encode())[0] == 200


def test_the_openai_client_raises_on_an_unknown_model(client):
    with pytest.raises(openai.NotFoundError, match="gamma"):
        client.chat.completions.create(model="gamma", messages=GOOD["messages"])
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.completions.create(model="alpha", prompt="hi", max_tokens=0)
