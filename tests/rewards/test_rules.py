"""Rule rewards on hand-made completions, and GSM8K answers from the real eval slice."""

from __future__ import annotations

import json

import pytest

from lightning_ft.rewards import answer_in_tags, gsm8k_exact_match, length_penalty
from lightning_ft.rewards.rules import final_number
from tests.conftest import shared_data


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("So she makes 9 * 2 = 18 dollars.\n#### 18", 18.0),
        ("The answer is 1,234.5 apples", 1234.5),
        ("first 3 then -4", -4.0),
        ("#### 7 (from 3 + 4)", 7.0),
        ("no number here", None),
    ],
)
def test_final_number(text, number):
    assert final_number(text) == number


def test_gsm8k_exact_match_against_real_reference_solutions():
    records = [json.loads(line) for line in shared_data("eval/gsm8k_test.jsonl").read_text().splitlines()[:20]]
    answers = [record["answer"] for record in records]
    right = [f"Let me think. The result is {record['final_answer']}." for record in records]
    wrong = [f"#### {float(record['final_answer'].replace(',', '')) + 1}" for record in records]
    prompts = [record["question"] for record in records]
    assert gsm8k_exact_match(prompts, right, answer=answers) == [1.0] * 20
    assert gsm8k_exact_match(prompts, wrong, answer=answers) == [0.0] * 20


def test_answer_in_tags_and_length_penalty():
    completions = ["<answer>42</answer>", "<answer> </answer>", "<answer>1</answer><answer>2</answer>", "42"]
    assert answer_in_tags([""] * 4, completions) == [1.0, 0.0, 0.0, 0.0]
    assert length_penalty(["", "", ""], ["a" * 10, "a" * 15, "a" * 30], max_chars=10) == [0.0, -0.5, -1.0]
