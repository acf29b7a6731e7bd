"""Token-level masks and truncation of preference pairs (tiny ChatML tokenizer)."""

from __future__ import annotations

import pytest

from lightning_ft.data.preference_formats import PreferencePair
from lightning_ft.data.preference_tokenize import PreferenceTokenizer
from lightning_ft.data.tokenize import IGNORE_INDEX

PAIR = PreferencePair(
    prompt=[
        {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": "Hi! How can I help?"},
        {"role": "user", "content": "What is the capital of France?"},
    ],
    chosen=[{"role": "assistant", "content": "The capital of France is Paris."}],
    rejected=[{"role": "assistant", "content": "No."}],
)


def trained_text(tokenizer, ids, labels) -> str:
    return tokenizer.decode([t for t, label in zip(ids, labels, strict=True) if label != IGNORE_INDEX])


def test_only_the_responses_carry_labels(tiny_tokenizer):
    encoded = PreferenceTokenizer(tiny_tokenizer, max_length=256)(PAIR)
    assert encoded["status"] == "ok"
    assert trained_text(tiny_tokenizer, encoded["chosen_input_ids"], encoded["chosen_labels"]) == (
        "The capital of France is Paris.<|im_end|>"
    )
    assert trained_text(tiny_tokenizer, encoded["rejected_input_ids"], encoded["rejected_labels"]) == "No.<|im_end|>"
    # Labels are the tokens themselves where trained; chosen and rejected share the prompt tokens exactly.
    prompt = tiny_tokenizer.apply_chat_template(PAIR.prompt, add_generation_prompt=True, tokenize=False)
    prompt_ids = tiny_tokenizer(prompt, add_special_tokens=False)["input_ids"]
    for side in ("chosen", "rejected"):
        ids, labels = encoded[f"{side}_input_ids"], encoded[f"{side}_labels"]
        assert ids[: len(prompt_ids)] == prompt_ids
        assert labels[: len(prompt_ids)] == [IGNORE_INDEX] * len(prompt_ids)
        assert all(label in (IGNORE_INDEX, token) for token, label in zip(ids, labels, strict=True))


def test_truncation_keeps_the_prompt_end_and_the_response_start(tiny_tokenizer):
    full = PreferenceTokenizer(tiny_tokenizer, max_length=256)(PAIR)
    prompt_length = full["chosen_labels"].index(next(label for label in full["chosen_labels"] if label != -100))
    chosen_response = full["chosen_input_ids"][prompt_length:]
    max_length = prompt_length  # too short for the prompt and the chosen response together
    cut = PreferenceTokenizer(tiny_tokenizer, max_length=max_length, max_prompt_length=max_length // 2)(PAIR)
    assert cut["status"] == "truncated"
    assert len(cut["chosen_input_ids"]) == max_length
    kept_prompt = max(max_length - len(chosen_response), max_length // 2)
    assert (
        cut["chosen_input_ids"][:kept_prompt] == full["chosen_input_ids"][prompt_length - kept_prompt : prompt_length]
    )
    assert cut["chosen_input_ids"][kept_prompt:] == chosen_response[: max_length - kept_prompt]
    # The rejected side loses the same prompt tokens.
    assert cut["rejected_input_ids"][:kept_prompt] == cut["chosen_input_ids"][:kept_prompt]


def test_overlong_pairs_can_be_dropped(tiny_tokenizer):
    encoded = PreferenceTokenizer(tiny_tokenizer, max_length=16, max_prompt_length=8, overlong="drop")(PAIR)
    assert encoded["status"] == "dropped_too_long"
    assert encoded["chosen_input_ids"] == encoded["rejected_input_ids"] == []


def test_invalid_max_prompt_length(tiny_tokenizer):
    with pytest.raises(ValueError, match="max_prompt_length must be in"):
        PreferenceTokenizer(tiny_tokenizer, max_length=16, max_prompt_length=16)
