"""Rule rewards on hand-made completions, and GSM8K answers from the real eval slice."""

from __future__ import annotations

import json

import pytest

from lightning_ft.rewards import answer_in_tags, answer_sentence, gsm8k_exact_match, length_penalty
from lightning_ft.rewards.loading import load_reward_function, score_completions
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


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("1,234", 1234.0),
        ("It costs $12,345,678 in all", 12345678.0),
        ("The answer is 3,4", 4.0),  # "3,4" is a list: its last number, never 34
        ("Options 3, 4", 4.0),
        ("1,2345", 2345.0),  # a group of four digits is no thousands group: two numbers
        ("1,234,56", 56.0),
        ("#### 3,4", 3.0),  # the first number after ####
        ("#### 1,000 apples", 1000.0),
    ],
)
def test_commas_separate_thousands_only_before_exactly_three_digits(text, number):
    assert final_number(text) == number


def test_a_list_of_options_is_not_a_thousands_number():
    completions = ["Options 3,4", "Options 3, 4", "It is 1,234", "It is 1234", "It is 12,34"]
    assert gsm8k_exact_match([""] * 5, completions, answer=["34", "34", "1234", "1,234", "1234"]) == [
        0.0,
        0.0,
        1.0,
        1.0,
        0.0,
    ]


def test_gsm8k_exact_match_against_real_reference_solutions():
    records = [json.loads(line) for line in shared_data("eval/gsm8k_test.jsonl").read_text().splitlines()[:20]]
    answers = [record["answer"] for record in records]
    right = [f"Let me think. The result is {record['final_answer']}." for record in records]
    wrong = [f"#### {float(record['final_answer'].replace(',', '')) + 1}" for record in records]
    prompts = [record["question"] for record in records]
    assert gsm8k_exact_match(prompts, right, answer=answers) == [1.0] * len(records)
    assert gsm8k_exact_match(prompts, wrong, answer=answers) == [0.0] * len(records)


def test_answer_in_tags_and_length_penalty():
    completions = ["<answer>42</answer>", "<answer> </answer>", "<answer>1</answer><answer>2</answer>", "42"]
    assert answer_in_tags([""] * 4, completions) == [1.0, 0.0, 0.0, 0.0]
    assert length_penalty(["", "", ""], ["a" * 10, "a" * 15, "a" * 30], max_chars=10) == [0.0, -0.5, -1.0]


def test_answer_sentence():
    completions = [
        "The answer is 18.",
        "So the final answer is: $2,125",
        "the answer is -3",
        "The answer is N.",
        "The answer is: B.",
        "I think 18.",
        "Theanswer is 4",
    ]
    assert answer_sentence([""] * 7, completions) == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]


def reward_raises(prompts, completions, **fields):
    raise KeyError("answer")


def reward_too_few(prompts, completions, **fields):
    return [1.0]


def reward_nan(prompts, completions, **fields):
    return [0.0, float("nan")]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("reward_raises", "Reward function tests.rewards.test_rules.reward_raises raised KeyError"),
        ("reward_too_few", "reward_too_few returned 1 scores for 2 completions"),
        ("reward_nan", "reward_nan returned nan \\(not a finite number\\) for completion 1"),
    ],
)
def test_bad_reward_functions_are_named(name, message):
    path = f"tests.rewards.test_rules.{name}"
    functions = {path: load_reward_function(path)}
    with pytest.raises((RuntimeError, ValueError), match=message):
        score_completions(functions, [1.0], ["p", "q"], ["a", "b"], {})


def test_weighted_sum_and_import_errors():
    functions = {"tags": answer_in_tags, "length": length_penalty}
    total, each = score_completions(functions, [1.0, 0.5], ["p", "q"], ["<answer>1</answer>", "x" * 1500], {})
    assert each["tags"].tolist() == [1.0, 0.0] and each["length"].tolist() == [0.0, -0.5]
    assert total.tolist() == [1.0, -0.25]
    with pytest.raises(ValueError, match="Cannot import reward function 'lightning_ft.rewards.nope'"):
        load_reward_function("lightning_ft.rewards.nope")
