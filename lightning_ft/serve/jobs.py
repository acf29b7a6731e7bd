"""A checked request as the inference worker receives it: the prompt's token ids and exactly how to continue them."""

from __future__ import annotations

from dataclasses import dataclass

from lightning_ft.model.sampling import SamplingOptions


@dataclass(frozen=True)
class GenerationJob:
    """One reply to generate.

    Args:
        model: The served name (`ModelRegistry.get`), whose tokenizer decodes the reply.
        prompt_ids: The rendered prompt's token ids.
        sampling: How tokens are picked and at most how many (``max_new_tokens``).
        stop: Strings that end the reply (cut before the first one found).
        strip: Strip the reply's surrounding whitespace, as `lightning-ft chat` does (chat turns; not completions).
    """

    model: str
    prompt_ids: tuple[int, ...]
    sampling: SamplingOptions
    stop: tuple[str, ...] = ()
    strip: bool = False

    def batch_key(self) -> tuple:
        """Jobs with equal keys are generated in one batch: same decoding options (lengths and stops may differ).
        A seeded sampled job is generated alone, so its reply does not depend on what else was asked at the time."""
        sampling = self.sampling
        key = tuple(sorted(sampling.decoding_kwargs().items()))
        if sampling.greedy or sampling.seed is None:
            return key
        return (*key, ("seeded", id(self)))
