"""Reward functions for online RL: ``fn(prompts, completions, **fields) -> list[float]``, one score per completion.
``fields`` are the prompt records' other columns (e.g. a reference ``answer``), one list entry per completion."""

from lightning_ft.rewards.rules import answer_in_tags, answer_sentence, gsm8k_exact_match, length_penalty

__all__ = ["answer_in_tags", "answer_sentence", "gsm8k_exact_match", "length_penalty"]
