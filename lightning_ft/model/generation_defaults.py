"""The ``generation_config.json`` an export writes: the decoding defaults transformers' ``generate``, vLLM and
``lightning-ft chat`` read, and the stop tokens that end a trained turn."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any

from transformers import GenerationConfig
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from lightning_ft.errors import UsageError
from lightning_ft.model.generation import stop_token_ids
from lightning_ft.model.sampling import SamplingOptions, check_sampling_values

# `generate` ignores these unless it samples, and `GenerationConfig.save_pretrained` refuses a changed config that
# sets them without ``do_sample: true``.
SAMPLING_ONLY = ("temperature", "top_p", "top_k", "min_p", "top_h", "typical_p", "epsilon_cutoff", "eta_cutoff")
DECODING = ("do_sample", "max_new_tokens", "repetition_penalty", *SAMPLING_ONLY)


@dataclass(frozen=True)
class GenerationDefaults:
    """Decoding defaults an export records in ``generation_config.json``, for every tool that generates from it.

    Args:
        max_new_tokens: Longest reply; ``None`` records none (each tool keeps its own).
        temperature: 0 records greedy decoding (``do_sample: false``); above 0, sampling at this temperature.
        top_p: Nucleus of the sampling (1 keeps every token); needs temperature > 0.
        top_k: Sample within the ``top_k`` most likely tokens (0 keeps every token, recorded as 0 so transformers
            does not apply its default of 50); needs temperature > 0.
        repetition_penalty: Penalty on tokens already in the sequence (1 applies none).
    """

    max_new_tokens: int | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        check_sampling_values(asdict(self))
        if self.temperature == 0 and (self.top_p != 1 or self.top_k != 0):
            raise UsageError(
                f"top_p={self.top_p} and top_k={self.top_k} only apply when sampling: set a temperature above 0 "
                "(0 records greedy decoding)"
            )

    def decoding_kwargs(self) -> dict[str, Any]:
        """The options recorded: what `SamplingOptions` passes to ``generate`` for them, plus ``max_new_tokens``."""
        options = {name: value for name, value in asdict(self).items() if value is not None}
        sampling = SamplingOptions(**options)
        return sampling.generate_kwargs() if self.max_new_tokens is not None else sampling.decoding_kwargs()


def export_generation_config(
    base: GenerationConfig, tokenizer: PreTrainedTokenizerBase, defaults: GenerationDefaults | None = None
) -> GenerationConfig:
    """The generation config of an export: the base model's own (nothing when the base had no
    ``generation_config.json``), its decoding options replaced by ``defaults`` when given, and ``eos_token_id`` set to
    every stop token (EOS and end-of-turn tokens) so any tool stops where a trained turn ends."""
    config = GenerationConfig() if getattr(base, "_from_model_config", False) else copy.deepcopy(base)
    if defaults is not None:
        _unset(config, DECODING)
        config.update(**defaults.decoding_kwargs())
    if config.do_sample is not True:
        _unset(config, SAMPLING_ONLY)
    stops = stop_token_ids(tokenizer)
    config.eos_token_id = stops
    config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return config


def _unset(config: GenerationConfig, names: tuple[str, ...]) -> None:
    for name in names:
        if hasattr(config, name):
            setattr(config, name, None)
