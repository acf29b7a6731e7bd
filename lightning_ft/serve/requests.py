"""The bodies of ``/v1/chat/completions`` and ``/v1/completions``, and their checks: a request either becomes a
`GenerationJob` (prompt rendered and tokenized, options merged with the model's recorded defaults) or a
`RequestError` naming what is wrong, before it reaches the model."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict

from lightning_ft.model.sampling import DEFAULT_MAX_NEW_TOKENS, check_sampling_values, sampling_options
from lightning_ft.serve.errors import RequestError
from lightning_ft.serve.jobs import GenerationJob
from lightning_ft.serve.models import ModelRegistry, ServedModel, UnknownModelError

MAX_STOP_STRINGS = 4  # as OpenAI
MAX_SEED = 2**63


class ChatMessage(BaseModel):
    """A message; fields beyond OpenAI's (e.g. ``reasoning_content``) pass through to the chat template."""

    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class GenerationRequest(BaseModel):
    """What both endpoints share. ``top_k`` and ``repetition_penalty`` are extensions (as in vLLM); an option left
    unset (or null) takes the model's recorded default."""

    model: str = ""
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    n: int = 1
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logprobs: bool | int | None = None


class ChatCompletionRequest(GenerationRequest):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None


class CompletionRequest(GenerationRequest):
    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None


def chat_job(request: ChatCompletionRequest, registry: ModelRegistry) -> GenerationJob:
    """The request's messages (and tools) rendered with the model's chat template, checked and tokenized."""
    served = _served(request, registry)
    if request.response_format and request.response_format.get("type") != "text":
        raise RequestError("Only response_format {'type': 'text'} is supported", param="response_format")
    messages = [_template_message(message, index) for index, message in enumerate(request.messages)]
    if not messages:
        raise RequestError("messages must hold at least one message", param="messages")
    try:
        prompt = served.tokenizer.apply_chat_template(
            messages, tools=request.tools, tokenize=False, add_generation_prompt=True
        )
    except Exception as error:  # noqa: BLE001 - a template raises whatever Jinja raises for what it cannot render
        raise RequestError(f"The chat template cannot render these messages: {error}", param="messages") from None
    prompt_ids = served.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    max_tokens = request.max_completion_tokens if request.max_completion_tokens is not None else request.max_tokens
    return _job(request, registry, served, prompt_ids, max_tokens, strip=True)


def completion_job(request: CompletionRequest, registry: ModelRegistry) -> GenerationJob:
    """The raw prompt continued: tokenized as the tokenizer does by default (special tokens such as BOS added)."""
    served = _served(request, registry)
    prompts = [request.prompt] if isinstance(request.prompt, str) else request.prompt
    if len(prompts) != 1:
        raise RequestError("Give one prompt per request (a string)", param="prompt")
    if request.echo or request.suffix:
        raise RequestError("echo and suffix are not supported", param="echo" if request.echo else "suffix")
    prompt_ids = served.tokenizer(prompts[0])["input_ids"]
    if not prompt_ids:  # an empty prompt, with a tokenizer that adds no BOS: nothing to continue
        raise RequestError("The prompt is empty: give at least one token of text to continue", param="prompt")
    return _job(request, registry, served, prompt_ids, request.max_tokens, strip=False)


def _served(request: GenerationRequest, registry: ModelRegistry) -> ServedModel:
    try:
        return registry.get(request.model)
    except UnknownModelError:
        message = f"The model {request.model!r} does not exist; served: {', '.join(registry.names)}"
        raise RequestError(message, param="model", code="model_not_found", status_code=404) from None


def _template_message(message: ChatMessage, index: int) -> dict[str, Any]:
    """A message as chat templates take it: text parts joined, tool-call arguments as objects."""
    rendered = message.model_dump(exclude_none=True)
    if isinstance(message.content, list):
        if any(part.get("type") != "text" for part in message.content):
            raise RequestError("Only text content parts are supported", param=f"messages.{index}.content")
        rendered["content"] = "".join(str(part.get("text", "")) for part in message.content)
    for call in rendered.get("tool_calls") or []:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and isinstance(function.get("arguments"), str):
            try:
                function["arguments"] = json.loads(function["arguments"])
            except json.JSONDecodeError:
                pass  # a template that prints the string prints it as given
    return rendered


def _job(
    request: GenerationRequest,
    registry: ModelRegistry,
    served: ServedModel,
    prompt_ids: list[int],
    max_tokens: int | None,
    strip: bool,
) -> GenerationJob:
    _check_supported(request)
    if max_tokens is not None and (isinstance(max_tokens, bool) or max_tokens < 1):
        raise RequestError(f"max_tokens={max_tokens} is out of range: it must be an integer >= 1", param="max_tokens")
    explicit = {
        "temperature": request.temperature,
        "top_p": request.top_p,
        "top_k": request.top_k,
        "repetition_penalty": request.repetition_penalty,
    }
    try:
        check_sampling_values(explicit)
    except ValueError as error:
        raise RequestError(str(error), param=str(error).split("=", 1)[0]) from None
    if request.seed is not None and not -MAX_SEED <= request.seed < MAX_SEED:
        raise RequestError(f"seed must be within [-2**63, 2**63), got {request.seed}", param="seed")
    stop = _stop_strings(request.stop)
    recorded = sampling_options(served.defaults, **explicit)
    if max_tokens is None:  # the recorded default, shortened to what the context still holds
        max_tokens = recorded.max_new_tokens or DEFAULT_MAX_NEW_TOKENS
        if registry.max_positions is not None:
            max_tokens = max(1, min(max_tokens, registry.max_positions - len(prompt_ids)))
    _check_length(len(prompt_ids), max_tokens, registry.max_positions, "messages" if strip else "prompt")
    sampling = sampling_options(served.defaults, **explicit, max_new_tokens=max_tokens, seed=request.seed)
    return GenerationJob(served.name, tuple(prompt_ids), sampling, stop, strip)


def _check_supported(request: GenerationRequest) -> None:
    if request.n != 1:
        raise RequestError("Only n=1 is supported", param="n")
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(request, name):
            raise RequestError(f"{name} is not supported (use repetition_penalty)", param=name)
    if request.logprobs:
        raise RequestError("logprobs are not supported", param="logprobs")


def _stop_strings(stop: str | list[str] | None) -> tuple[str, ...]:
    strings = [stop] if isinstance(stop, str) else list(stop or [])
    if len(strings) > MAX_STOP_STRINGS or any(not text for text in strings):
        raise RequestError(f"stop takes up to {MAX_STOP_STRINGS} non-empty strings", param="stop")
    return tuple(strings)


def _check_length(prompt_tokens: int, max_tokens: int, max_positions: int | None, param: str) -> None:
    if max_positions is not None and prompt_tokens + max_tokens > max_positions:
        message = (
            f"This model's maximum context length is {max_positions} tokens. However, you requested "
            f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the prompt, {max_tokens} for the reply)."
        )
        raise RequestError(message, param=param, code="context_length_exceeded")
