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


# "\t hello world" follows the template's "<|im_start|>assistant\n": the byte-level BPE merges that "\n" and the
# response's "\t" into one token "\n\t", so the chosen rendering's prompt is one token shorter than the rejected one's.
MERGING_PAIR = PreferencePair(
    prompt=PAIR.prompt,
    chosen=[{"role": "assistant", "content": "\t hello world"}],
    rejected=[{"role": "assistant", "content": "goodbye"}],
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


def merging_pair_tokens(tokenizer) -> tuple[list[int], list[int], list[int]]:
    """The rendered prompt's tokens (generation prompt included, ending in "\n"), and each response's tokens as the
    whole rendering splits them: chosen "\n\t", " hel", "lo", " wor", "ld", "<|im_end|>", "\n" (its first token
    takes the prompt's last "\n"); rejected "go", "odby", "e", "<|im_end|>", "\n"."""
    prompt = tokenizer.apply_chat_template(MERGING_PAIR.prompt, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    chosen = tokenizer("\n\t hello world<|im_end|>\n", add_special_tokens=False)["input_ids"]
    rejected = tokenizer("goodbye<|im_end|>\n", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(prompt_ids[-1:]) == "\n" and tokenizer.decode(chosen[:1]) == "\n\t"
    return prompt_ids, chosen, rejected


def response_labels(response: list[int]) -> list[int]:
    """Labels of a response: its tokens through ``<|im_end|>``; the newline the template writes after it is not
    trained."""
    return response[:-1] + [IGNORE_INDEX]


def test_each_side_keeps_its_whole_prompt_when_its_response_merges_with_the_template(tiny_tokenizer):
    prompt_ids, chosen, rejected = merging_pair_tokens(tiny_tokenizer)
    encoded = PreferenceTokenizer(tiny_tokenizer, max_length=256)(MERGING_PAIR)
    assert encoded["status"] == "ok"
    chosen_prompt = len(prompt_ids) - 1  # its last "\n" is in the response's first token
    assert encoded["chosen_input_ids"] == prompt_ids[:-1] + chosen
    assert encoded["chosen_labels"] == [IGNORE_INDEX] * chosen_prompt + response_labels(chosen)
    assert encoded["rejected_input_ids"] == prompt_ids + rejected
    assert encoded["rejected_labels"] == [IGNORE_INDEX] * len(prompt_ids) + response_labels(rejected)
    start = tiny_tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert encoded["chosen_input_ids"][0] == encoded["rejected_input_ids"][0] == start


def test_truncation_cuts_each_side_relative_to_its_own_prompt(tiny_tokenizer):
    """The longer prompt (rejected's, 52 tokens) keeps max(30 - 7, 12) = 23 of its tokens beside the longest response
    (chosen's 7): both sides lose the prompt's first 29 tokens, so they start on the same prompt token, and each keeps
    its own prompt end: 22 chosen prompt tokens + 7, and 23 rejected prompt tokens + 5, within 30."""
    prompt_ids, chosen, rejected = merging_pair_tokens(tiny_tokenizer)
    max_length, max_prompt_length = 30, 12
    encoded = PreferenceTokenizer(tiny_tokenizer, max_length=max_length, max_prompt_length=max_prompt_length)(
        MERGING_PAIR
    )
    assert encoded["status"] == "truncated"
    cut = len(prompt_ids) - max(max_length - len(chosen), max_prompt_length)
    assert encoded["chosen_input_ids"] == prompt_ids[cut:-1] + chosen
    assert encoded["rejected_input_ids"] == prompt_ids[cut:] + rejected
    assert encoded["chosen_labels"] == [IGNORE_INDEX] * (len(prompt_ids) - 1 - cut) + response_labels(chosen)
    assert encoded["rejected_labels"] == [IGNORE_INDEX] * (len(prompt_ids) - cut) + response_labels(rejected)
    assert max(len(encoded["chosen_input_ids"]), len(encoded["rejected_input_ids"])) <= max_length


def test_overlong_pairs_can_be_dropped(tiny_tokenizer):
    encoded = PreferenceTokenizer(tiny_tokenizer, max_length=16, max_prompt_length=8, overlong="drop")(PAIR)
    assert encoded["status"] == "dropped_too_long"
    assert encoded["chosen_input_ids"] == encoded["rejected_input_ids"] == []


def test_invalid_max_prompt_length(tiny_tokenizer):
    with pytest.raises(ValueError, match="max_prompt_length must be in"):
        PreferenceTokenizer(tiny_tokenizer, max_length=16, max_prompt_length=16)
