"""The OpenAI routes on LitServe: ``/v1/chat/completions``, ``/v1/completions`` and ``/v1/models``.

Requests are checked, rendered and tokenized here, in the HTTP process, so a bad one is answered with a 4xx before it
reaches the model (streaming ones too); good ones go to the inference worker as `GenerationJob`s through LitServe's
request queue, where its batching loop collects them. LitServe's `OpenAISpec` is kept for that plumbing and its
checks of the `LitAPI`; its endpoints are replaced because they answer every reply with ``finish_reason "stop"``,
drop ``seed``, refuse tools without a description, and have no ``/v1/completions`` or ``/v1/models``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse
from litserve.specs.openai import OpenAISpec
from litserve.utils import LitAPIStatus, ResponseBufferItem

from lightning_ft.serve.errors import RequestError, as_request_error
from lightning_ft.serve.jobs import GenerationJob
from lightning_ft.serve.models import ModelRegistry
from lightning_ft.serve.requests import ChatCompletionRequest, CompletionRequest, chat_job, completion_job
from lightning_ft.serve.responses import Endpoint, chunk_body, completion_body, models_body, response_id, usage


class OpenAIRoutes(OpenAISpec):
    """The OpenAI-compatible endpoints of the models in ``registry``."""

    def __init__(self, registry: ModelRegistry) -> None:
        super().__init__()
        self.registry = registry
        self.created = int(time.time())

    def pre_setup(self, lit_api: Any) -> None:
        super().pre_setup(lit_api)  # checks the LitAPI and registers chat_completion (ours) at /v1/chat/completions
        self.add_endpoint("/v1/completions", self.completion, ["POST"])
        self.add_endpoint("/v1/models", self.list_models, ["GET"])

    def populate_context(self, context: dict, request: Any) -> None:
        pass  # the worker receives checked jobs, not request bodies

    async def chat_completion(self, request: ChatCompletionRequest) -> Any:  # type: ignore[override]
        return await self._answer("chat", chat_job(request, self.registry), request.stream)

    async def completion(self, request: CompletionRequest) -> Any:
        return await self._answer("completion", completion_job(request, self.registry), request.stream)

    async def list_models(self, request: Request) -> JSONResponse:
        return JSONResponse(models_body(self.registry.names, self.created))

    async def _answer(self, endpoint: Endpoint, job: GenerationJob, stream: bool) -> Any:
        updates = self._submit(job)
        identifier = response_id(endpoint)
        if stream:
            chunks = self._stream(endpoint, identifier, job.model, updates)
            return StreamingResponse(chunks, media_type="text/event-stream")
        text, finish_reason, counts = [], None, usage(len(job.prompt_ids), 0)
        async for update in updates:
            text.append(update["content"])
            if update["finish_reason"]:
                finish_reason = update["finish_reason"]
                counts = usage(update["prompt_tokens"], update["completion_tokens"])
        return JSONResponse(completion_body(endpoint, identifier, job.model, "".join(text), finish_reason, counts))

    def _submit(self, job: GenerationJob) -> AsyncIterator[dict[str, Any]]:
        """Queue ``job`` for the inference worker; its `ReplyUpdate`s (as dicts) come back through the iterator,
        which raises a `RequestError` when the worker failed."""
        uid = uuid.uuid4()
        updates: deque = deque()
        available = asyncio.Event()
        self.response_buffer[uid] = ResponseBufferItem(response_queue=updates, event=available)
        self.request_queue.put((self.response_queue_id, uid, time.monotonic(), job))
        return self._receive(uid, updates, available)

    async def _receive(self, uid: uuid.UUID, updates: deque, available: asyncio.Event) -> AsyncIterator[dict]:
        try:
            async for response, status in self.data_streamer(updates, available, send_status=True):
                if status == LitAPIStatus.ERROR:
                    raise as_request_error(response)
                yield json.loads(response)
        finally:
            self.response_buffer.pop(uid, None)

    async def _stream(
        self, endpoint: Endpoint, identifier: str, model: str, updates: AsyncIterator[dict[str, Any]]
    ) -> AsyncIterator[str]:
        """Server-sent events: the first chunk names the role, then text deltas, then the finish reason and usage."""
        try:
            yield _event(chunk_body(endpoint, identifier, model, "", first=True))
            async for update in updates:
                if update["content"]:
                    yield _event(chunk_body(endpoint, identifier, model, update["content"]))
                if update["finish_reason"]:
                    counts = usage(update["prompt_tokens"], update["completion_tokens"])
                    yield _event(chunk_body(endpoint, identifier, model, None, update["finish_reason"], counts))
            yield "data: [DONE]\n\n"
        except RequestError as error:
            yield _event(error.body())


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload)}\n\n"
