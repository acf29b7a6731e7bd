"""Label masks derived from the single chat-template rendering, checked token by token."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from lightning_ft.data.sources import DataError
from lightning_ft.data.tokenize import IGNORE_INDEX, ConversationTokenizer
from lightning_ft.model.chat_templates import resolve_chat_template
from tests.conftest import build_tiny_tokenizer

THREE_TURNS = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris."},
    {"role": "user", "content": "Convert 3 kilometres to metres."},
    {"role": "assistant", "content": "3000 metres."},
    {"role": "user", "content": "Thank you!"},
    {"role": "assistant", "content": "Goodbye!"},
]


def expected_chatml_labels(tokenizer, messages, trained_roles=("assistant",), last_only=False):
    """Build ids and labels piece by piece from ChatML's structure: each turn is
    ``<|im_start|>`` + ``role\\n`` + content + ``<|im_end|>`` + ``\\n``; content and ``<|im_end|>`` of assistant turns
    are trained. (The pieces tokenize independently here: ``\\n`` never merges with letters in byte-level BPE.)"""
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    assistant_positions = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    ids, labels = [], []
    for position, message in enumerate(messages):
        head = encode("<|im_start|>") + encode(message["role"] + "\n")
        body = encode(message["content"]) + encode("<|im_end|>")
        tail = encode("\n")
        trained = message["role"] in trained_roles and (not last_only or position == assistant_positions[-1])
        ids += head + body + tail
        labels += (
            [IGNORE_INDEX] * len(head) + (body if trained else [IGNORE_INDEX] * len(body)) + [IGNORE_INDEX] * len(tail)
        )
    return ids, labels


@pytest.mark.parametrize("pad_is_eos", [False, True])
def test_three_turn_mask_is_assistant_content_plus_eos(pad_is_eos):
    tokenizer = build_tiny_tokenizer(pad_is_eos=pad_is_eos)
    assert (tokenizer.pad_token_id == tokenizer.eos_token_id) is pad_is_eos
    example = ConversationTokenizer(tokenizer, max_length=512)(THREE_TURNS)
    expected_ids, expected_labels = expected_chatml_labels(tokenizer, THREE_TURNS)
    assert (
        example["input_ids"] == tokenizer.apply_chat_template(THREE_TURNS, tokenize=True, return_dict=True)["input_ids"]
    )
    assert example["input_ids"] == expected_ids
    assert example["labels"] == expected_labels
    eos_positions = [i for i, token in enumerate(example["input_ids"]) if token == tokenizer.eos_token_id]
    trained_eos = [i for i in eos_positions if example["labels"][i] == tokenizer.eos_token_id]
    assert len(trained_eos) == 3  # one EOS per assistant turn is trained, even when it is also the pad token
    assert example["status"] == "ok"


def test_last_assistant_only_and_all_tokens():
    tokenizer = build_tiny_tokenizer()
    last = ConversationTokenizer(tokenizer, max_length=512, train_on="last_assistant")(THREE_TURNS)
    assert last["labels"] == expected_chatml_labels(tokenizer, THREE_TURNS, last_only=True)[1]
    everything = ConversationTokenizer(tokenizer, max_length=512, train_on="all")(THREE_TURNS)
    assert everything["labels"] == everything["input_ids"]


def test_real_smollm2_tokenizer_mask_with_pad_equal_to_eos(smollm2_dir):
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    assert tokenizer.pad_token_id == tokenizer.eos_token_id  # <|im_end|>
    example = ConversationTokenizer(tokenizer, max_length=512)(THREE_TURNS)
    expected_ids, expected_labels = expected_chatml_labels(tokenizer, THREE_TURNS)
    assert example["input_ids"] == expected_ids
    assert example["labels"] == expected_labels


def test_sentencepiece_style_leading_space_token_belongs_to_the_reply(tiny_tokenizer):
    """The alpaca template puts the reply right after '### Response:\\n'; a reply starting with a space must have
    that space's token trained, not left to the prompt."""
    tokenizer = build_tiny_tokenizer()
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'user' %}{{ 'Q:' + m['content'] }}"
        "{% else %}{{ ' ' + m['content'] + eos_token }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '' }}{% endif %}"
    )
    messages = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "world"}]
    example = ConversationTokenizer(tokenizer, max_length=64)(messages)
    trained_text = tokenizer.decode([t for t in example["labels"] if t != IGNORE_INDEX])
    assert trained_text == " world<|im_end|>"


def test_truncate_drop_and_no_trainable_tokens():
    tokenizer = build_tiny_tokenizer()
    full_length = len(ConversationTokenizer(tokenizer, max_length=512)(THREE_TURNS)["input_ids"])
    truncated = ConversationTokenizer(tokenizer, max_length=full_length - 5)(THREE_TURNS)
    assert truncated["status"] == "truncated" and len(truncated["input_ids"]) == full_length - 5
    dropped = ConversationTokenizer(tokenizer, max_length=full_length - 1, overlong="drop")(THREE_TURNS)
    assert dropped == {"input_ids": [], "labels": [], "status": "dropped_too_long"}
    nothing_left = ConversationTokenizer(tokenizer, max_length=12)(THREE_TURNS)  # cut inside the system/user turns
    assert nothing_left["status"] == "dropped_no_trainable"
    exact = ConversationTokenizer(tokenizer, max_length=full_length, overlong="drop")(THREE_TURNS)
    assert exact["status"] == "ok"


def test_a_turn_that_cannot_be_located_is_reported_with_the_turn():
    tokenizer = build_tiny_tokenizer()
    # Renders the number of messages first, so a shorter conversation is never a prefix of a longer one.
    tokenizer.chat_template = "{{ messages | length }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(
        DataError, match="assistant turn 1 \\('The capital of France is Paris.'\\): the turn cannot be located"
    ):
        ConversationTokenizer(tokenizer, max_length=64)(THREE_TURNS[:3])


def test_bad_options_list_the_valid_ones(tiny_tokenizer):
    with pytest.raises(ValueError, match="assistant, last_assistant, all"):
        ConversationTokenizer(tiny_tokenizer, max_length=8, train_on="users")
    with pytest.raises(ValueError, match="truncate, drop"):
        ConversationTokenizer(tiny_tokenizer, max_length=8, overlong="cut")


def test_plain_template_masks_and_tolerates_an_empty_assistant_turn():
    """``plain`` writes no end-of-turn text: an empty reply is an empty span, the other reply is trained alone."""
    tokenizer = build_tiny_tokenizer()
    tokenizer.chat_template = resolve_chat_template("plain")
    messages = [
        {"role": "user", "content": "Say hello."},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "Say it."},
        {"role": "assistant", "content": "hello world"},
    ]
    encoded = ConversationTokenizer(tokenizer, max_length=128)(messages)
    trained = [token for token, label in zip(encoded["input_ids"], encoded["labels"], strict=True) if label != -100]
    assert tokenizer.decode(trained) == " hello world"  # the space before a reply rides on its first token
    assert tokenizer.decode(encoded["input_ids"]).startswith("User: Say hello.\n\nAssistant: \n\nUser: Say it.")
