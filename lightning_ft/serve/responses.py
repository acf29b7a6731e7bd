"""The OpenAI response bodies: chat completions and their stream chunks, text completions and theirs, model lists."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

Endpoint = Literal["chat", "completion"]


def response_id(endpoint: Endpoint) -> str:
    return f"{'chatcmpl' if endpoint == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_body(
    endpoint: Endpoint, identifier: str, model: str, text: str, finish_reason: str | None, counts: dict[str, int]
) -> dict[str, Any]:
    """The whole reply: ``chat.completion`` (an assistant message) or ``text_completion`` (text)."""
    if endpoint == "chat":
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}}
    else:
        choice = {"index": 0, "text": text, "logprobs": None}
    choice["finish_reason"] = finish_reason
    return {
        "id": identifier,
        "object": "chat.completion" if endpoint == "chat" else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": counts,
    }


def chunk_body(
    endpoint: Endpoint,
    identifier: str,
    model: str,
    text: str | None,
    finish_reason: str | None = None,
    counts: dict[str, int] | None = None,
    first: bool = False,
) -> dict[str, Any]:
    """One streamed chunk; the first chat chunk names the role, the last carries the finish reason and usage."""
    if endpoint == "chat":
        delta: dict[str, Any] = {"role": "assistant"} if first else {}
        if text is not None:
            delta["content"] = text
        choice: dict[str, Any] = {"index": 0, "delta": delta}
    else:
        choice = {"index": 0, "text": text or "", "logprobs": None}
    choice["finish_reason"] = finish_reason
    return {
        "id": identifier,
        "object": "chat.completion.chunk" if endpoint == "chat" else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": counts,
    }


def models_body(names: list[str], created: int) -> dict[str, Any]:
    entries = [{"id": name, "object": "model", "created": created, "owned_by": "lightning-ft"} for name in names]
    return {"object": "list", "data": entries}
