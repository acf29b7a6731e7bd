"""Judge backends: the model that reads a judging prompt and writes a verdict, either a local model answering with
its own chat template or any OpenAI-compatible endpoint.

A backend has one method, ``complete(messages, seed, temperature=None) -> str``, which raises on failure. A
conversation that ends with an assistant message asks the backend to continue that message (prefill); the text
returned is then the continuation alone. Backends that can do that say so with ``supports_prefill = True``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from torch import nn
from transformers import ProcessorMixin
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from lightning_ft.data.formats import Message
from lightning_ft.errors import UsageError
from lightning_ft.model.endpoint import openai_client
from lightning_ft.model.export import load_export
from lightning_ft.model.generation import generate_replies

EVAL_EXTRA = "pip install 'lightning-ft[eval]'"


class JudgeBackend(Protocol):
    """What `grade` and `compare` need from a judge."""

    def complete(self, messages: list[Message], seed: int, temperature: float | None = None) -> str:
        """The judge's reply to ``messages`` (``temperature`` overrides the judge's own, e.g. on a retry)."""
        ...


def ends_with_prefill(messages: list[Message]) -> bool:
    """Whether ``messages`` end with the start of an assistant reply to continue."""
    return bool(messages) and messages[-1]["role"] == "assistant"


class PrefillTokenizer:
    """A tokenizer whose chat rendering continues a final assistant message instead of opening a new turn, so
    `generate_replies` generates the rest of a prefilled reply. Everything else is the wrapped tokenizer's.

    Args:
        tokenizer: The judge model's tokenizer.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer

    def __getattr__(self, name: str) -> Any:
        if name == "tokenizer":  # not set yet (copy, unpickling): no recursion through __getattr__
            raise AttributeError(name)
        return getattr(self.tokenizer, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.tokenizer(*args, **kwargs)

    def apply_chat_template(self, conversation: list[Message], **kwargs: Any) -> Any:
        if ends_with_prefill(conversation):
            kwargs.update(add_generation_prompt=False, continue_final_message=True)
        return self.tokenizer.apply_chat_template(conversation, **kwargs)


class LocalJudge:
    """A local model as the judge, answering with its own chat template; `complete_many` batches requests.

    Args:
        model: The judge model (anything `load_export` loads).
        tokenizer: Its tokenizer (a vision-language processor's tokenizer is used for text).
        max_new_tokens: Longest verdict.
        temperature: 0 decodes greedily; above 0 samples.
        batch_size: Requests generated together.
    """

    supports_prefill = True

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase | ProcessorMixin,
        max_new_tokens: int = 512,
        temperature: float = 0.0,
        batch_size: int = 8,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer.tokenizer if isinstance(tokenizer, ProcessorMixin) else tokenizer
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.batch_size = batch_size

    @classmethod
    def from_path(cls, path: str | Path, dtype: str = "float32", **options: Any) -> LocalJudge:
        """A judge from a model directory, export, GGUF directory or hub id.

        Args:
            path: What `load_export` loads.
            dtype: Weights' dtype.
            **options: `LocalJudge` options (``max_new_tokens``, ``temperature``, ``batch_size``).
        """
        model, tokenizer = load_export(path, dtype=dtype)
        return cls(model, tokenizer, **options)

    def complete(self, messages: list[Message], seed: int, temperature: float | None = None) -> str:
        """The judge's reply to one conversation.

        Args:
            messages: The judging conversation (may end with an assistant message to continue).
            seed: Sampling seed.
            temperature: Overrides the judge's temperature.
        """
        return self.complete_many([messages], seed, temperature)[0]

    def complete_many(
        self, conversations: list[list[Message]], seed: int, temperature: float | None = None
    ) -> list[str]:
        """The judge's reply to each conversation, generated in batches of ``batch_size``.

        Args:
            conversations: Judging conversations.
            seed: Sampling seed.
            temperature: Overrides the judge's temperature.
        """
        return generate_replies(
            self.model,
            PrefillTokenizer(self.tokenizer),
            conversations,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature if temperature is None else temperature,
            seed=seed,
            batch_size=self.batch_size,
        )

    def __repr__(self) -> str:
        name = getattr(getattr(self.model, "config", None), "name_or_path", type(self.model).__name__)
        return f"LocalJudge(model={name!r}, max_new_tokens={self.max_new_tokens}, temperature={self.temperature})"


class EndpointJudge:
    """Any OpenAI-compatible chat endpoint as the judge (OpenAI, vLLM, llama.cpp server, `lightning-ft serve`, ...),
    through the official ``openai`` client. The API key is read from the environment and never shown.

    Args:
        base_url: The API root, e.g. ``http://localhost:8000/v1``.
        model: The model name the endpoint serves.
        api_key_env: Environment variable holding the API key (``EMPTY`` is sent when unset).
        timeout: Seconds to wait for one reply.
        max_tokens: Longest verdict.
        temperature: Sampling temperature.
    """

    supports_prefill = False

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_tokens: int = 512,
        temperature: float = 0.0,
    ) -> None:
        self._client = openai_client(base_url, api_key_env, timeout, EVAL_EXTRA)
        self.base_url = base_url
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.max_tokens = max_tokens
        self.temperature = temperature

    def complete(self, messages: list[Message], seed: int, temperature: float | None = None) -> str:
        """The endpoint's reply to one conversation.

        Args:
            messages: The judging conversation.
            seed: Sampling seed (sent as the request's ``seed``).
            temperature: Overrides the judge's temperature.

        Raises:
            ValueError: On a prefilled conversation, or a reply without text.
        """
        if ends_with_prefill(messages):
            raise UsageError(
                "An OpenAI-compatible endpoint cannot continue a prefilled assistant message: use a local judge "
                "(--judge MODEL) for --judge_prefill"
            )
        response = self._client.chat.completions.create(
            model=self.model,
            messages=messages,
            max_tokens=self.max_tokens,
            temperature=self.temperature if temperature is None else temperature,
            seed=seed,
        )
        if not response.choices or response.choices[0].message.content is None:
            raise ValueError(f"{self.base_url} returned no text for model {self.model!r}")
        return response.choices[0].message.content

    def __repr__(self) -> str:
        return f"EndpointJudge(base_url={self.base_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"
