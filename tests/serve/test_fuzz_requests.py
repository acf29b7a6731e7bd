"""Generated request bodies against the running server: every body is answered, a good one with a reply, a bad one
with an OpenAI-shaped 4xx naming the field (never a 500, never a dropped connection), and a good request is still
answered afterwards."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.serve.conftest import API_KEY
from tests.serve.test_bad_requests import GOOD, chat_url, post

FUZZ = settings(
    max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(["alpha", "beta", "user", "assistant", "system", "tool", "text", "image_url"])
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
OPTIONS: dict[str, st.SearchStrategy[Any]] = {
    "model": st.sampled_from(["", "gamma", "ALPHA"]) | values,
    "max_tokens": st.integers(-3, 300) | values,
    "max_completion_tokens": st.integers(-3, 8) | values,
    "temperature": st.floats(-1, 3) | values,
    "top_p": st.floats(-0.5, 1.5) | values,
    "top_k": st.integers(-2, 50) | values,
    "repetition_penalty": st.floats(-1, 3) | values,
    "seed": st.integers(-(2**64), 2**64) | values,
    "stop": st.lists(st.text(max_size=4), max_size=6) | values,
    "stream": st.booleans() | values,
    "n": st.integers(0, 3) | values,
    "logprobs": values,
    "presence_penalty": values,
    "response_format": st.fixed_dictionaries({"type": st.sampled_from(["text", "json_object"])}) | values,
    "unknown_option": values,
}
text_parts = st.lists(
    st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"]) | values, "text": st.text(max_size=20)}),
    max_size=2,
)
tool_calls = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.just("function"),
            "function": st.fixed_dictionaries({"name": st.text(max_size=8), "arguments": values}),
        }
    ),
    max_size=2,
)
good_messages = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system"]), "content": st.text(max_size=60)}),
    min_size=1,
    max_size=3,
)
MESSAGE_CHANGES: dict[str, st.SearchStrategy[Any]] = {
    "role": st.sampled_from(["tool", "developer", ""]) | values,
    "content": text_parts | values,
    "tool_calls": tool_calls | values,
    "reasoning_content": st.text(max_size=20) | values,
}


@st.composite
def changed(draw: st.DrawFn, body: dict[str, Any], changes: dict[str, st.SearchStrategy[Any]]) -> dict[str, Any]:
    """``body`` with up to two of its fields set to generated values (wrong types, out of range, unknown names)."""
    count = draw(st.sampled_from([0, 0, 1, 1, 2]))  # about 40% unchanged: the good requests must be answered
    for key in draw(st.lists(st.sampled_from(sorted(changes)), min_size=count, max_size=count, unique=True)):
        body[key] = draw(changes[key])
    return body


@st.composite
def encoded(draw: st.DrawFn, body: Any) -> bytes:
    """The body as JSON (NaN and infinities as Python writes them), now and then cut short."""
    content = json.dumps(body, allow_nan=True).encode()
    if draw(st.integers(0, 14).map(lambda value: value == 7)):  # rarely: hypothesis favours the ends of ranges
        content = content[: draw(st.integers(0, len(content) - 1))]
    return content


@st.composite
def chat_bodies(draw: st.DrawFn) -> bytes:
    """A good chat request with up to two fields changed, a message changed, or messages that are no list."""
    messages = draw(good_messages)
    if draw(st.integers(0, 3)) == 0:
        index = draw(st.integers(0, len(messages) - 1))
        messages[index] = draw(changed(messages[index], MESSAGE_CHANGES))
    if draw(st.integers(0, 9)) == 0:
        messages = draw(values)
    body = {"model": draw(st.sampled_from(["alpha", "beta"])), "messages": messages, "max_tokens": 4}
    if draw(st.integers(0, 4)) == 0:
        body["tools"] = draw(st.lists(st.dictionaries(st.text(max_size=8), values, max_size=2), max_size=2) | values)
    return draw(encoded(draw(changed(body, OPTIONS))))


@st.composite
def completion_bodies(draw: st.DrawFn) -> bytes:
    """A completion request with up to two fields changed (the prompt any text, list or value)."""
    prompt = draw(st.text(max_size=60) | st.lists(st.text(max_size=10), max_size=2) | values)
    body = {"model": draw(st.sampled_from(["alpha", "beta"])), "prompt": prompt, "max_tokens": 4}
    return draw(encoded(draw(changed(body, {**OPTIONS, "echo": values, "suffix": values}))))


def check_answer(status: int, body: dict) -> None:
    """A reply, or an OpenAI error naming what is wrong: a client's fault is a 4xx, never the server's 500."""
    if status == 200:
        assert body["choices"] and isinstance(body["choices"][0], dict), body
        return
    assert status in (400, 404), (status, body)
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, body
    assert isinstance(error["message"], str) and error["message"], body
    assert error["type"] == ("not_found_error" if status == 404 else "invalid_request_error"), body


def request(url: str, body: bytes) -> tuple[int, dict]:
    """The status and JSON body of a reply; a streamed reply's events are read to ``data: [DONE]`` and its last chunk
    returned (a stream's checks run before its first event, so a bad streamed request is a plain 4xx)."""
    message = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    message.add_header("Authorization", f"Bearer {API_KEY}")
    try:
        with urllib.request.urlopen(message, timeout=60) as response:
            if not response.headers.get("Content-Type", "").startswith("text/event-stream"):
                return response.status, json.loads(response.read())
            events = [line[len(b"data: ") :] for line in response.read().splitlines() if line.startswith(b"data: ")]
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    assert events and events[-1] == b"[DONE]", events
    return 200, json.loads(events[-2])


@FUZZ
@given(body=chat_bodies())
def test_generated_chat_requests_get_a_reply_or_a_named_4xx(server_url, body):
    check_answer(*request(chat_url(server_url), body))


@FUZZ
@given(body=completion_bodies())
def test_generated_completion_requests_get_a_reply_or_a_named_4xx(server_url, body):
    check_answer(*request(f"{server_url}/completions", body))


def test_the_server_still_answers_after_the_generated_requests(server_url):
    status, body = post(chat_url(server_url), json.dumps(GOOD).encode())
    assert status == 200 and body["choices"][0]["message"]["content"] is not None
