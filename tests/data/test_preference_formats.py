"""Preference records of every format -> canonical pairs; bad records named by index and field."""

from __future__ import annotations

import json

import pytest

from lightning_ft.data.preference_formats import (
    PREFERENCE_FIELDS,
    IdenticalPair,
    PreferencePair,
    UnpairedExample,
    record_to_preference,
)
from lightning_ft.data.sources import DataError
from tests.conftest import shared_data
from tests.helpers import identical_pairs


def convert(record: dict, format: str, where: str = "data.jsonl: record 3"):
    return record_to_preference(record, format, PREFERENCE_FIELDS[format], where)


def test_hh_rlhf_splits_at_the_last_shared_user_turn():
    shared = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Name a fruit."
    pair = convert(
        {"chosen": shared + "\n\nAssistant: An apple.", "rejected": shared + "\n\nAssistant: No."}, "hh_rlhf"
    )
    assert pair == PreferencePair(
        prompt=[
            {"role": "user", "content": "Hi there"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Name a fruit."},
        ],
        chosen=[{"role": "assistant", "content": "An apple."}],
        rejected=[{"role": "assistant", "content": "No."}],
    )


def test_ultrafeedback_responses_lose_the_repeated_prompt():
    record = {
        "prompt": "Say hi",
        "chosen": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hi!"}],
        "rejected": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "No."}],
        "system": "Be kind.",
    }
    assert convert(record, "pairs") == PreferencePair(
        prompt=[{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Say hi"}],
        chosen=[{"role": "assistant", "content": "Hi!"}],
        rejected=[{"role": "assistant", "content": "No."}],
    )


def test_sharegpt_pairs_and_kto_examples():
    record = {
        "conversations": [{"from": "human", "value": "2+2?"}],
        "chosen": {"from": "gpt", "value": "4"},
        "rejected": {"from": "gpt", "value": "5"},
    }
    pair = convert(record, "sharegpt")
    assert pair.prompt == [{"role": "user", "content": "2+2?"}]
    assert (pair.chosen, pair.rejected) == (
        [{"role": "assistant", "content": "4"}],
        [{"role": "assistant", "content": "5"}],
    )
    kto = convert(
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "label": False}, "kto"
    )
    assert kto == UnpairedExample([{"role": "user", "content": "q"}], [{"role": "assistant", "content": "a"}], False)


@pytest.mark.parametrize(
    "record, format, message",
    [
        ({"prompt": "q", "rejected": "a"}, "pairs", "record 3: missing field 'chosen'"),
        ({"prompt": "q", "chosen": "a"}, "pairs", "record 3: missing field 'rejected'"),
        ({"chosen": "\n\nHuman: q\n\nAssistant: a"}, "hh_rlhf", "record 3: missing field 'rejected'"),
        ({"prompt": "q", "chosen": "a", "rejected": 5}, "pairs", "field 'rejected' must be text"),
        ({"chosen": "Human: q", "rejected": "Human: r"}, "hh_rlhf", "field 'chosen' is not a"),
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "label": "yes"},
            "kto",
            "field 'label' must be true or false",
        ),
        (
            {"prompt": [{"role": "robot", "content": "q"}], "chosen": "a", "rejected": "b"},
            "pairs",
            "unknown role 'robot'",
        ),
    ],
)
def test_bad_records_name_the_record_and_field(record, format, message):
    with pytest.raises(DataError, match=message):
        convert(record, format)


def test_identical_responses_are_reported_as_such():
    with pytest.raises(IdenticalPair, match="record 3: chosen and rejected are identical"):
        convert({"prompt": "q", "chosen": "same", "rejected": "same"}, "pairs")


@pytest.mark.parametrize(
    "file, format",
    [
        ("preference/hh_rlhf_helpful_base_test.jsonl", "hh_rlhf"),  # 2 identical pairs (721, 2168) of 2354
        ("preference/dpo_en_demo.jsonl", "sharegpt"),
        ("preference/ultrafeedback_binarized_sample.jsonl", "pairs"),
        ("preference/oasst_en100_ranked_pairs.jsonl", "pairs"),
        ("preference/alpaca_eval_gpt4_pairs.jsonl", "pairs"),
        ("preference/kto_en_demo.jsonl", "kto"),
    ],
)
def test_every_real_record_converts_or_is_an_identical_pair(file, format):
    lines = shared_data(file).read_text().splitlines()
    assert lines and all(line.strip() for line in lines)
    converted, identical = 0, []
    for index, line in enumerate(lines):
        try:
            example = convert(json.loads(line), format, f"{file}: record {index}")
        except IdenticalPair:
            identical.append(index)
            continue
        converted += 1
        if isinstance(example, PreferencePair):
            assert example.prompt[-1]["role"] == "user"
            assert example.chosen[0]["role"] == example.rejected[0]["role"] == "assistant"
    assert identical == identical_pairs([json.loads(line) for line in lines])
    assert converted + len(identical) == len(lines)
