"""Per-item metrics against hand computations and independent libraries."""

from __future__ import annotations

import json

import pytest

from lightning_ft.eval.metrics import (
    GENERATION_METRICS,
    bleu,
    chrf,
    exact_match,
    extract_final_answer,
    normalize_number,
    normalize_text,
    rouge_l,
)
from tests.conftest import require, shared_data


def test_normalisation_drops_case_punctuation_articles_and_spacing() -> None:
    assert normalize_text("  The  Cat, sat!  ") == "cat sat"
    assert exact_match("an apple.", "Apple") == 1.0
    assert exact_match("apple pie", "apple") == 0.0


@pytest.mark.parametrize(
    ("text", "number"),
    [("$1,000.50", "1000.5"), ("18.", "18"), ("-3", "-3"), ("7.000", "7"), ("0.0", "0"), ("no digits", None)],
)
def test_numbers_are_normalised(text: str, number: str | None) -> None:
    assert normalize_number(text) == number


def test_gsm8k_extractor_finds_every_reference_answer_of_the_real_test_set() -> None:
    records = [json.loads(line) for line in shared_data("eval/gsm8k_test.jsonl").read_text().splitlines()]
    extracted = [normalize_number(extract_final_answer(record["answer"])) for record in records]
    assert extracted == [normalize_number(record["final_answer"]) for record in records]
    assert len(records) == 1319


@pytest.mark.parametrize(
    ("completion", "score"),
    [
        ("She makes 9 * 2 = $18 every day.\n#### 18", 1.0),
        ("The answer is $18.", 1.0),
        ("So the answer is: 18", 1.0),
        ("\\boxed{18}", 1.0),
        ("9 eggs at $2 each make 18 dollars", 1.0),  # no marker: the last number
        ("The answer is 18 or 19", 1.0),  # "The answer is" wins over the last number
        ("She makes $1,8", 0.0),
        ("I don't know", 0.0),
    ],
)
def test_exact_match_compares_final_answers_when_the_reference_has_one(completion: str, score: float) -> None:
    assert exact_match(completion, "Janet sells 9 eggs.\nShe makes 9 * 2 = $<<9*2=18>>18.\n#### 18") == score


def test_bleu_matches_the_closed_form() -> None:
    """hyp "the cat sat on the mat", ref "the cat sat on a mat" (6 words each, brevity penalty 1). Clipped n-gram
    matches: 1-grams 5/6; 2-grams 3/5; 3-grams 2/4; 4-grams 1/3. Add-one smoothing for n > 1 gives 4/6, 3/5, 2/4,
    so BLEU = (5/6 * 4/6 * 3/5 * 2/4) ** (1/4)."""
    expected = (5 / 6 * 4 / 6 * 3 / 5 * 2 / 4) ** 0.25
    assert bleu("the cat sat on the mat", "the cat sat on a mat") == pytest.approx(expected, abs=1e-6)
    assert bleu("four identical words here", "four identical words here") == pytest.approx(1.0)
    assert bleu("too short", "too short") == 0.0  # no 4-grams at all: BLEU-4 is 0, as torchmetrics defines it


PAIRS = [
    ("the cat sat on the mat", "the cat sat on a mat"),
    ("police killed the gunman", "the gunman was shot down by police"),
    ("a quick brown fox", "the lazy dog"),
    ("It is raining today in Paris", "Today it rains in Paris"),
]


def test_rouge_l_matches_the_closed_form_and_google_rouge_score() -> None:
    """ "the cat sat" vs "the cat sat on": LCS 3, precision 3/3, recall 3/4, F = 2PR/(P+R) = 6/7."""
    assert rouge_l("the cat sat", "the cat sat on") == pytest.approx(6 / 7, abs=1e-6)
    rouge_scorer = require("rouge_score.rouge_scorer", "ROUGE-L reference (the eval extra)")
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    for completion, reference in PAIRS:
        expected = scorer.score(reference, completion)["rougeL"].fmeasure
        assert rouge_l(completion, reference) == pytest.approx(expected, abs=1e-6)


def test_chrf_matches_sacrebleu() -> None:
    sacrebleu = require("sacrebleu.metrics", "chrF reference (the eval extra)")
    for completion, reference in PAIRS:
        expected = sacrebleu.CHRF().sentence_score(completion, [reference]).score / 100
        assert chrf(completion, reference) == pytest.approx(expected, abs=1e-3)


def test_every_metric_scores_identical_text_as_one_and_is_bounded() -> None:
    for metric in GENERATION_METRICS.values():
        assert metric("Paris is the capital of France.", "Paris is the capital of France.") == pytest.approx(1.0)
        assert 0.0 <= metric("", "Paris") <= 1.0
