"""Chat completions for the data tools that write text with a model (self-instruct, back-translation): a local model
generating in batches with its chat template, or any OpenAI-compatible endpoint. Every request answers with text or
with the reason it failed (``http_500``, ``timeout``, ``empty_reply``, ...), so one bad request never stops a run."""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from typing import Any, Protocol, Self

from torch import nn
from tqdm.auto import tqdm
from transformers import ProcessorMixin
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from lightning_ft.errors import UsageError
from lightning_ft.model.endpoint import openai_client
from lightning_ft.model.export import load_export
from lightning_ft.model.generation import generate_replies
from lightning_ft.model.spec import DTypeName

Message = dict[str, Any]
DATA_EXTRA = "pip install 'lightning-ft[data]'"


@dataclass(frozen=True)
class Completion:
    """A reply's text, or ``None`` and the reason there is none."""

    text: str | None
    failure: str | None = None


class Completer(Protocol):
    """What the tools need from a model: the assistant's reply to each conversation."""

    def complete_many(self, conversations: list[list[Message]], seed: int, progress: str = "") -> list[Completion]:
        """One `Completion` per conversation, in order; ``progress`` labels a progress bar."""
        ...

    def with_sampling(self, temperature: float, top_p: float = 1.0) -> Self:
        """The same model sampling at ``temperature`` within the top-``p`` nucleus (0: greedy)."""
        ...


class SamplingSettable:
    """``with_sampling`` for completers that keep ``temperature`` and ``top_p`` as attributes."""

    temperature: float
    top_p: float

    def with_sampling(self, temperature: float, top_p: float = 1.0) -> Self:
        changed = copy.copy(self)
        changed.temperature, changed.top_p = temperature, top_p
        return changed


class LocalCompleter(SamplingSettable):
    """A local model answering with its own chat template, in batches (`generate_replies`).

    Args:
        model: The model.
        tokenizer: Its tokenizer (a processor's tokenizer is used).
        max_new_tokens: Longest reply.
        temperature: 0 decodes greedily; above 0 samples.
        top_p: Nucleus of the sampling.
        batch_size: Conversations generated together.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase | ProcessorMixin,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        batch_size: int = 8,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer.tokenizer if isinstance(tokenizer, ProcessorMixin) else tokenizer
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.batch_size = batch_size

    def complete_many(self, conversations: list[list[Message]], seed: int, progress: str = "") -> list[Completion]:
        with tqdm(total=len(conversations), desc=progress, disable=not progress, leave=False) as bar:
            replies = generate_replies(
                self.model,
                self.tokenizer,
                conversations,
                max_new_tokens=self.max_new_tokens,
                temperature=self.temperature,
                top_p=self.top_p,
                seed=seed,
                batch_size=self.batch_size,
                on_batch=lambda indices, _: bar.update(len(indices)),
            )
        return [Completion(reply) if reply.strip() else Completion(None, "empty_reply") for reply in replies]

    def __repr__(self) -> str:
        name = getattr(getattr(self.model, "config", None), "name_or_path", type(self.model).__name__)
        return f"LocalCompleter(model={name!r})"


class EndpointCompleter(SamplingSettable):
    """An OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp server, `lightning-ft serve`, ...) through the
    official ``openai`` client, one request at a time, without retries: a failed request is reported, not repeated.
    The API key is read from the environment and never shown.

    Args:
        base_url: The API root, e.g. ``http://localhost:8000/v1``.
        model: The model name the endpoint serves.
        api_key_env: Environment variable holding the API key (``EMPTY`` is sent when unset).
        timeout: Seconds to wait for one reply.
        max_tokens: Longest reply.
        temperature: Sampling temperature.
        top_p: Nucleus of the sampling.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
    ) -> None:
        self._client = openai_client(base_url, api_key_env, timeout, DATA_EXTRA)
        self.openai = sys.modules["openai"]  # its error classes
        self.base_url = base_url
        self.model = model
        self.api_key_env = api_key_env
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.top_p = top_p

    def complete_many(self, conversations: list[list[Message]], seed: int, progress: str = "") -> list[Completion]:
        return [
            self.complete(messages, seed + number)
            for number, messages in enumerate(tqdm(conversations, desc=progress, disable=not progress, leave=False))
        ]

    def complete(self, messages: list[Message], seed: int) -> Completion:
        """The endpoint's reply to one conversation, or why there is none."""
        try:
            response = self._client.chat.completions.create(
                model=self.model,
                messages=messages,
                max_tokens=self.max_tokens,
                temperature=self.temperature,
                top_p=self.top_p,
                seed=seed,
            )
        except self.openai.APITimeoutError:
            return Completion(None, "timeout")
        except self.openai.APIStatusError as error:
            return Completion(None, f"http_{error.status_code}")
        except self.openai.APIConnectionError:
            return Completion(None, "connection_error")
        except self.openai.APIResponseValidationError:
            return Completion(None, "malformed_response")
        choices = getattr(response, "choices", None)
        if not choices or not isinstance(choices[0].message.content, str) or not choices[0].message.content.strip():
            return Completion(None, "empty_reply")
        return Completion(choices[0].message.content)

    def __repr__(self) -> str:
        return f"EndpointCompleter(base_url={self.base_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"


def completer_from(
    model: str | None,
    endpoint: str | None,
    endpoint_model: str | None,
    api_key_env: str = "OPENAI_API_KEY",
    timeout: float = 60.0,
    dtype: DTypeName = "float32",
    **sampling: Any,
) -> Completer:
    """The local ``model`` or the ``endpoint`` serving ``endpoint_model``: exactly one of ``model`` and ``endpoint``.

    Args:
        model: What `load_export` loads (model directory, export, GGUF directory or hub id).
        endpoint: An OpenAI-compatible API root.
        endpoint_model: The model name the endpoint serves.
        api_key_env: Environment variable holding the endpoint's API key.
        timeout: Seconds to wait for one endpoint reply.
        dtype: The local model's weights' dtype.
        **sampling: ``max_new_tokens``, ``temperature``, ``top_p`` (and ``batch_size`` for a local model).
    """
    check_backend(model, endpoint, endpoint_model)
    if endpoint is not None:
        sampling.pop("batch_size", None)
        sampling["max_tokens"] = sampling.pop("max_new_tokens", 256)
        return EndpointCompleter(endpoint, endpoint_model, api_key_env, timeout=timeout, **sampling)
    loaded, tokenizer = load_export(model, dtype=dtype)
    return LocalCompleter(loaded, tokenizer, **sampling)


def check_backend(
    model: str | None, endpoint: str | None, endpoint_model: str | None, model_name: str = "model"
) -> None:
    """Refuse anything but exactly one of a local model and an endpoint with its model name."""
    if (model is None) == (endpoint is None):
        given = "both" if model is not None else "neither"
        raise UsageError(f"Give exactly one of `{model_name}` (a local model) and `endpoint` (an API URL); got {given}")
    if endpoint is not None and not endpoint_model:
        raise UsageError(f"`endpoint` {endpoint!r} needs `endpoint_model`: the model name the endpoint serves")


def describe(completer: Completer) -> str:
    """The model or endpoint, as a report names it."""
    if isinstance(completer, EndpointCompleter):
        return f"endpoint {completer.base_url} model {completer.model}"
    return repr(completer)
