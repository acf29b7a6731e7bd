"""Multiple-choice log-likelihoods: a hand computation on the tiny random model, batching invariance, and the
acc / acc_norm / acc_bytes rules on hand-made log-likelihoods."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_ft.eval.choice import choice_loglikelihoods, choice_scores, encode_pair
from lightning_ft.eval.items import EvalItem, load_items
from lightning_ft.model.export import load_export
from tests.helpers import context_dependent, write_jsonl

QUESTIONS = [
    ("What is the capital of France?", ["Paris", "London", "the capital of France is Paris", "a"]),
    ("Convert 3 kilometres to metres.", ["3000 metres", "3 metres"]),
    ("Say hello.", ["hello world", "goodbye", "Thank you, goodbye!"]),
    ("Write a haiku about autumn leaves falling on a quiet pond.", ["autumn leaves", "the a of and to in is it"]),
    ("0123456789?", ["0", "1", "2", "3", "4"]),
]


def items(questions: list[tuple[str, list[str]]] = QUESTIONS) -> list[EvalItem]:
    return [
        EvalItem(str(i), [{"role": "user", "content": q}], choices=c, answer=0, source=f"test:{i}")
        for i, (q, c) in enumerate(questions)
    ]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    """The tiny Llama with weights redrawn at std 0.2, so options' log-likelihoods differ clearly."""
    model, tokenizer = load_export(tiny_model_dir)
    return context_dependent(model).eval(), tokenizer


def test_encode_pair_moves_trailing_whitespace_into_the_continuation(tiny_tokenizer) -> None:
    """lm-eval's rule: "Q: hi \\n" + "A" scores " \\nA" after the context "Q: hi"; the whole string's tokens past the
    context's own count are the continuation."""
    context_ids, continuation_ids = encode_pair(tiny_tokenizer, "Q: hi \n", "A")
    assert tiny_tokenizer.decode(context_ids) == "Q: hi"
    assert tiny_tokenizer.decode(continuation_ids) == " \nA"
    assert context_ids + continuation_ids == tiny_tokenizer.encode("Q: hi \nA")


def test_empty_context_is_the_prefix_token(tiny_tokenizer) -> None:
    context_ids, continuation_ids = encode_pair(tiny_tokenizer, "", " hello")
    assert context_ids == [tiny_tokenizer.bos_token_id]
    assert continuation_ids == tiny_tokenizer.encode(" hello", add_special_tokens=False)


@pytest.mark.parametrize("chat_template", [True, False])
def test_option_loglikelihood_equals_a_hand_computation(tiny, chat_template: bool) -> None:
    """log p(option | context) = sum over the option's tokens t of log_softmax(logits[t - 1])[token t], from one
    forward pass over context + option. With the chat template the context ends in "assistant\\n": the newline moves
    into the option (continuation "\\nParis", no delimiter); without it the continuation is " Paris"."""
    model, tokenizer = tiny
    item = items()[:1]
    question = item[0].prompt[0]["content"]
    if chat_template:
        rendered = tokenizer.apply_chat_template(item[0].prompt, tokenize=False, add_generation_prompt=True)
        assert rendered.endswith("assistant\n")
        context, continuation = rendered[:-1], "\nParis"
    else:
        context, continuation = question, " Paris"
    context_ids = tokenizer.encode(context, add_special_tokens=False)
    whole = tokenizer.encode(context + continuation, add_special_tokens=False)
    assert whole[: len(context_ids)] == context_ids
    with torch.no_grad():
        logits = model(torch.tensor([whole])).logits[0]
    logps = torch.log_softmax(logits.float(), dim=-1)
    expected = sum(float(logps[t - 1, whole[t]]) for t in range(len(context_ids), len(whole)))

    scores = choice_loglikelihoods(model, tokenizer, item, chat_template=chat_template)
    assert scores[0][0] == pytest.approx(expected, abs=1e-5)
    assert len(scores[0]) == 4 and len(set(scores[0])) == 4


@pytest.mark.parametrize("chat_template", [True, False])
def test_batching_and_padding_do_not_change_results(tiny, chat_template: bool) -> None:
    """18 (context, option) pairs of different lengths: one at a time equals four per right-padded batch."""
    model, tokenizer = tiny
    alone = choice_loglikelihoods(model, tokenizer, items(), batch_size=1, chat_template=chat_template)
    batched = choice_loglikelihoods(model, tokenizer, items(), batch_size=4, chat_template=chat_template)
    assert [len(row) for row in batched] == [len(c) for _, c in QUESTIONS]
    for one, four in zip(alone, batched, strict=True):
        assert four == pytest.approx(one, abs=1e-5)


def test_truncation_keeps_the_continuation(tiny) -> None:
    """With room for 6 tokens the context loses tokens from the left; the score is that of the last 7 tokens'
    window (6 read, the continuation's tokens scored)."""
    model, tokenizer = tiny
    item = items([("What is the capital of France? Answer briefly and politely.", ["Paris"])])
    context_ids, continuation_ids = encode_pair(tokenizer, item[0].prompt[0]["content"], " Paris")
    window = (context_ids + continuation_ids)[-7:]
    with torch.no_grad():
        logps = torch.log_softmax(model(torch.tensor([window[:-1]])).logits[0].float(), dim=-1)
    count = len(continuation_ids)
    expected = sum(float(logps[t - 1, window[t]]) for t in range(len(window) - count, len(window)))
    scores = choice_loglikelihoods(model, tokenizer, item, chat_template=False, max_length=6)
    assert scores[0][0] == pytest.approx(expected, abs=1e-5)
    too_long = items([("Where?", ["the capital of France is Paris"])])
    with pytest.raises(ValueError, match="test:0: option 0 of item '0' is .* tokens, longer than the 2"):
        choice_loglikelihoods(model, tokenizer, too_long, chat_template=False, max_length=2)


def test_acc_and_acc_norm_disagree_on_option_length() -> None:
    """Options "a" and "abcdefghij", answer 1, log-likelihoods (-2, -5): acc picks "a" (-2 > -5), wrong; acc_norm
    divides by characters: -2 / 1 = -2 < -5 / 10 = -0.5, picks the long option, right."""
    item = EvalItem("x", [{"role": "user", "content": "?"}], choices=["a", "abcdefghij"], answer=1)
    [score] = choice_scores([item], [[-2.0, -5.0]])
    assert (score["choice"], score["acc"]) == (0, 0.0)
    assert (score["choice_norm"], score["acc_norm"]) == (1, 1.0)


def test_acc_norm_counts_characters_and_acc_bytes_utf8_bytes() -> None:
    """Options "éé" (2 characters, 4 bytes) and "abc" (3, 3), answer 0, log-likelihoods (-2.2, -3.0): acc picks 0;
    per character -1.1 < -1.0 picks 1 (lm-eval's acc_norm is len(str)); per byte -0.55 > -1.0 picks 0."""
    item = EvalItem("y", [{"role": "user", "content": "?"}], choices=["éé", "abc"], answer=0)
    [score] = choice_scores([item], [[-2.2, -3.0]])
    assert (score["acc"], score["acc_norm"], score["acc_bytes"]) == (1.0, 0.0, 1.0)
    assert (score["choice"], score["choice_norm"], score["choice_bytes"]) == (0, 1, 0)


def test_ties_go_to_the_first_option() -> None:
    item = EvalItem("z", [{"role": "user", "content": "?"}], choices=["ab", "cd"], answer=1)
    [score] = choice_scores([item], [[-1.0, -1.0]])
    assert (score["choice"], score["choice_norm"], score["acc"]) == (0, 0, 0.0)


def test_letter_text_and_index_answers_load_and_score(tiny, tmp_path: Path) -> None:
    model, tokenizer = tiny
    options = ["Paris", "London", "Rome"]
    records = [
        {"question": "Capital of France?", "choices": options, "answer": "A"},
        {"question": "Capital of England?", "choices": options, "answer": "London"},
        {"question": "Capital of Italy?", "choices": options, "answer": 2},
    ]
    loaded = load_items(str(write_jsonl(tmp_path / "mc.jsonl", records)))
    assert [item.answer for item in loaded] == [0, 1, 2]
    scores = choice_scores(loaded, choice_loglikelihoods(model, tokenizer, loaded))
    assert [score["answer"] for score in scores] == [0, 1, 2]
    assert all(score["acc"] in (0.0, 1.0) for score in scores)


def test_an_item_without_choices_names_its_source(tiny, tmp_path: Path) -> None:
    model, tokenizer = tiny
    source = write_jsonl(tmp_path / "qa.jsonl", [{"question": "What is 2 + 2?", "answer": "4"}])
    loaded = load_items(str(source))
    with pytest.raises(ValueError, match=f"{source}:1: item .* has no choices"):
        choice_loglikelihoods(model, tokenizer, loaded)
    with pytest.raises(ValueError, match="has no choices"):
        choice_scores(loaded, [[]])
