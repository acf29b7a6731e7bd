"""The LitServe API of `lightning-ft serve`: the inference worker loads the base model and its adapters once, and
LitServe's batched streaming loop hands it the jobs that arrived together (``max_batch_size``, ``batch_timeout``)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import litserve as ls
from fastapi import Request
from litserve.loops.streaming_loops import BatchedStreamingLoop

from lightning_ft.serve.errors import RequestError
from lightning_ft.serve.generation import generate_steps
from lightning_ft.serve.jobs import GenerationJob
from lightning_ft.serve.models import ModelRegistry
from lightning_ft.serve.reply import ReplyUpdate
from lightning_ft.serve.spec import OpenAIRoutes


class GenerationAPI(ls.LitAPI):
    """Generates the replies to batches of `GenerationJob`s, streaming each step's text.

    Args:
        registry: The served models.
        api_key: When given, every request must carry ``Authorization: Bearer <api_key>``.
        max_batch_size: Most jobs generated together.
        batch_timeout: Seconds to wait for a batch to fill.
    """

    def __init__(
        self, registry: ModelRegistry, api_key: str | None = None, max_batch_size: int = 8, batch_timeout: float = 0.05
    ) -> None:
        # the batched loop even for batches of one, so `predict` always takes a list
        super().__init__(
            max_batch_size=max_batch_size,
            batch_timeout=batch_timeout,
            spec=OpenAIRoutes(registry),
            loop=BatchedStreamingLoop(),
        )
        self.registry = registry
        self.api_key = api_key

    def setup(self, device: str) -> None:
        self.network = self.registry.load_network().to(device)

    def decode_request(self, request: GenerationJob, **kwargs: Any) -> GenerationJob:
        return request  # checked and tokenized by `OpenAIRoutes` already

    def predict(self, jobs: list[GenerationJob], **kwargs: Any) -> Iterator[list[ReplyUpdate]]:
        yield from generate_steps(self.network, self.registry, jobs)

    def encode_response(self, steps: Iterator[list[ReplyUpdate]], **kwargs: Any) -> Iterator[list[dict[str, Any]]]:
        for step in steps:
            yield [asdict(update) for update in step]

    def authorize(self, request: Request) -> None:
        """A FastAPI dependency of every route: with an API key set, the request's bearer token must be it."""
        if self.api_key is None:
            return
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), self.api_key.encode()):
            message = "Incorrect or missing API key: send 'Authorization: Bearer <key>'"
            raise RequestError(message, code="invalid_api_key", status_code=401)
