"""Sampling options: explicit options win over an export's recorded ones, which win over greedy decoding; every
option reaches ``generate`` explicitly; top-k and the repetition penalty do what their closed forms say; a seed makes
a sampled chat reproducible; a value out of range fails naming the option and its range."""

from __future__ import annotations

import re

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from lightning_ft.model.generation import Conversation, generate_reply, policy_sampling, without_generation_defaults
from lightning_ft.model.sampling import SamplingOptions, sampling_options
from tests.helpers import context_dependent, greedy_reply

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
NEW_TOKENS = 12


@pytest.fixture(scope="module")
def talker(tiny_model_dir):
    """The tiny Llama with `context_dependent` weights (peaked, prompt-dependent next-token distributions)."""
    model = context_dependent(AutoModelForCausalLM.from_pretrained(tiny_model_dir)).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def test_explicit_options_win_over_recorded_ones_which_win_over_greedy():
    assert sampling_options(None) == SamplingOptions(256, temperature=0.0, top_p=1.0, top_k=0, repetition_penalty=1.0)
    saved = GenerationConfig(do_sample=True, temperature=0.7, top_k=5, max_new_tokens=9, repetition_penalty=1.1)
    assert sampling_options(saved) == SamplingOptions(9, temperature=0.7, top_k=5, repetition_penalty=1.1)
    assert sampling_options(saved, temperature=0.0, top_p=None, seed=3) == SamplingOptions(
        9, temperature=0.0, top_k=5, repetition_penalty=1.1, seed=3
    )
    assert sampling_options(saved, top_p=0.5, top_k=0) == SamplingOptions(
        9, temperature=0.7, top_p=0.5, top_k=0, repetition_penalty=1.1
    )
    # read as `generate` reads it: no do_sample -> greedy; do_sample without a temperature -> temperature 1
    assert sampling_options(GenerationConfig(temperature=0.6, top_p=0.9)).temperature == 0.0
    assert sampling_options(GenerationConfig(do_sample=True)).temperature == 1.0


def test_every_option_is_passed_to_generate():
    assert SamplingOptions().generate_kwargs() == {"max_new_tokens": 256, "do_sample": False, "repetition_penalty": 1.0}
    assert SamplingOptions(8, temperature=0.7, top_p=0.9, top_k=5, repetition_penalty=1.2).generate_kwargs() == {
        "max_new_tokens": 8,
        "do_sample": True,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 5,
        "repetition_penalty": 1.2,
    }
    # RL rollouts: exactly softmax(logits / T) within the nucleus, no top-k, no penalty
    assert policy_sampling(1.3, 0.95) == {
        "do_sample": True,
        "temperature": 1.3,
        "top_p": 0.95,
        "top_k": 0,
        "repetition_penalty": 1.0,
    }
    assert policy_sampling(0.0) == {"do_sample": False, "repetition_penalty": 1.0}


@pytest.mark.parametrize(
    ("option", "value", "valid_range"),
    [
        ("top_p", 0.0, "in (0, 1]"),
        ("top_p", 1.5, "in (0, 1]"),
        ("temperature", -0.1, "a number >= 0"),
        ("top_k", -1, "an integer >= 0"),
        ("repetition_penalty", 0.0, "a number > 0"),
        ("max_new_tokens", 0, "an integer >= 1"),
    ],
)
def test_a_value_out_of_range_names_the_option_and_its_range(option, value, valid_range):
    message = f"{option}={value!r} is out of range: {option} must be {valid_range}"
    with pytest.raises(ValueError, match=re.escape(message)):
        SamplingOptions(**{option: value})
    with pytest.raises(ValueError, match=re.escape(message)):
        sampling_options(GenerationConfig(do_sample=True, temperature=0.7), **{option: value})


def test_a_recorded_value_out_of_range_says_where_it_comes_from_unless_overridden():
    saved = GenerationConfig(do_sample=True, temperature=0.7, top_p=1.5)
    with pytest.raises(ValueError, match=r"top_p=1.5 is out of range: .*generation_config.json records it"):
        sampling_options(saved)
    assert sampling_options(saved, top_p=0.9).top_p == 0.9


def test_top_k_1_sampling_is_greedy_decoding(talker):
    """With one token left after top-k, the sample is the argmax whatever the temperature and seed; without top-k
    the same temperature and seeds leave the greedy path."""
    model, tokenizer = talker
    greedy = greedy_reply(model, tokenizer, QUESTION, NEW_TOKENS)
    assert greedy
    for seed in range(3):
        top_1 = SamplingOptions(NEW_TOKENS, temperature=5.0, top_k=1, seed=seed)
        assert generate_reply(model, tokenizer, QUESTION, top_1) == greedy
    unrestricted = [SamplingOptions(NEW_TOKENS, temperature=5.0, seed=seed) for seed in range(3)]
    assert all(generate_reply(model, tokenizer, QUESTION, options) != greedy for options in unrestricted)


def test_the_repetition_penalty_divides_positive_and_multiplies_negative_logits_of_seen_tokens(talker):
    """One greedy step: the scores ``generate`` picks from are the raw last-position logits with, for every token id
    in the prompt, ``l / p`` where ``l > 0`` and ``l * p`` where ``l <= 0``; other tokens keep theirs."""
    model, tokenizer = talker
    penalty = 1.5
    inputs = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        logits = model(**inputs).logits[0, -1].float()
    seen = inputs["input_ids"][0].unique()
    expected = logits.clone()
    expected[seen] = torch.where(logits[seen] > 0, logits[seen] / penalty, logits[seen] * penalty)
    options = SamplingOptions(max_new_tokens=1, repetition_penalty=penalty)
    with torch.no_grad(), without_generation_defaults(model):
        output = model.generate(
            **inputs,
            pad_token_id=tokenizer.pad_token_id,
            output_scores=True,
            return_dict_in_generate=True,
            **options.generate_kwargs(),
        )
    scores = output.scores[0][0]
    assert (scores - logits).abs().max() > 0.1  # the penalty changed something
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=0)
    assert output.sequences[0, -1] == expected.argmax()


def test_a_seed_makes_a_sampled_chat_reproducible(talker):
    """Turn ``n`` is sampled after ``torch.manual_seed(seed + n)``: two chats with one seed agree turn by turn,
    and each turn equals a single reply generated with that turn's seed."""
    model, tokenizer = talker
    options = SamplingOptions(NEW_TOKENS, temperature=1.0, seed=7)
    chats = [Conversation(model, tokenizer, sampling=options) for _ in range(2)]
    replies = [[chat.ask("Say hello."), chat.ask("Again.")] for chat in chats]
    assert replies[0] == replies[1]
    first_turn = [{"role": "user", "content": "Say hello."}]
    assert replies[0][0] == generate_reply(model, tokenizer, first_turn, options)
    second_turn = chats[0].messages[:-1]
    seeded_8 = SamplingOptions(NEW_TOKENS, temperature=1.0, seed=8)
    assert replies[0][1] == generate_reply(model, tokenizer, second_turn, seeded_8)
