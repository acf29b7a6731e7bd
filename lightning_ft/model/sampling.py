"""How ``generate`` picks each next token: every option set explicitly, validated, and merged with the defaults an
export records in ``generation_config.json`` (explicit options win, then the recorded ones, then greedy decoding)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from transformers import GenerationConfig

from lightning_ft.errors import UsageError

# option -> (valid range in words, test); only the options given (not None) are checked
VALID_RANGES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "max_new_tokens": ("an integer >= 1", lambda value: isinstance(value, int) and value >= 1),
    "temperature": ("a number >= 0 (0 decodes greedily)", lambda value: 0 <= value < math.inf),
    "top_p": ("in (0, 1] (1 keeps every token)", lambda value: 0 < value <= 1),
    "top_k": ("an integer >= 0 (0 keeps every token)", lambda value: isinstance(value, int) and value >= 0),
    "repetition_penalty": ("a number > 0 (1 applies none)", lambda value: 0 < value < math.inf),
}
DEFAULT_MAX_NEW_TOKENS = 256


def check_sampling_values(options: Mapping[str, Any]) -> None:
    """Raise a ``ValueError`` naming the first option of ``options`` (``None`` = not given) outside its valid range."""
    for name, value in options.items():
        if value is None or name not in VALID_RANGES:
            continue
        valid_range, is_valid = VALID_RANGES[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or not is_valid(value):
            raise UsageError(f"{name}={value!r} is out of range: {name} must be {valid_range}")


@dataclass(frozen=True)
class SamplingOptions:
    """Every option that shapes how ``generate`` picks the next token, so none is left to the model's
    ``generation_config.json`` or to transformers' global defaults (such as top_k 50).

    Args:
        max_new_tokens: Longest reply.
        temperature: 0 decodes greedily (``top_p`` and ``top_k`` then do nothing); above 0 samples from
            ``softmax(logits / temperature)``.
        top_p: Sample within the smallest set of most likely tokens whose probability reaches ``top_p``.
        top_k: Sample within the ``top_k`` most likely tokens; 0 keeps every token.
        repetition_penalty: Logits of tokens already in the sequence (prompt included) are divided by it when
            positive and multiplied by it when negative, greedy decoding included; 1 applies none.
        seed: ``torch.manual_seed`` before generating, so a sampled reply is reproducible; ``None`` seeds nothing.
    """

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        check_sampling_values(asdict(self))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def decoding_kwargs(self) -> dict[str, Any]:
        """The ``generate`` options that pick tokens (all but the length): ``do_sample`` and, when sampling, every
        warper, ``top_k`` 0 included. Pass them inside `without_generation_defaults`, which hides the model's own."""
        if self.greedy:
            return {"do_sample": False, "repetition_penalty": self.repetition_penalty}
        return {
            "do_sample": True,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "repetition_penalty": self.repetition_penalty,
        }

    def generate_kwargs(self) -> dict[str, Any]:
        """`decoding_kwargs` plus ``max_new_tokens``."""
        return {"max_new_tokens": self.max_new_tokens, **self.decoding_kwargs()}


def sampling_options(saved: GenerationConfig | None, **explicit: Any) -> SamplingOptions:
    """The options to generate with: each of ``explicit`` that is not ``None`` wins; else the value ``saved`` (an
    export's ``generation_config.json``) records; else `SamplingOptions`' default (greedy, 256 tokens, no top-k, no
    penalty), never transformers' global defaults. ``saved`` is read as ``generate`` reads it: without
    ``do_sample: true`` it decodes greedily, and with it but no temperature it samples at temperature 1."""
    check_sampling_values(explicit)
    given = {name: value for name, value in explicit.items() if value is not None}
    recorded = recorded_options(saved) if saved is not None else {}
    kept = {name: value for name, value in recorded.items() if name not in given}
    try:
        check_sampling_values(kept)
    except ValueError as error:
        raise UsageError(
            f"{error}; the model's generation_config.json records it: give the option explicitly"
        ) from None
    return SamplingOptions(**{**kept, **given})


def recorded_options(saved: GenerationConfig) -> dict[str, Any]:
    """The `SamplingOptions` fields a generation config sets (the seed is never recorded)."""
    options = {name: getattr(saved, name, None) for name in ("max_new_tokens", "top_p", "top_k", "repetition_penalty")}
    options["temperature"] = (1.0 if saved.temperature is None else saved.temperature) if saved.do_sample else 0.0
    return {name: value for name, value in options.items() if value is not None}
