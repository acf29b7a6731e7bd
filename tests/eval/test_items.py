"""Evaluation items from the files users have, paired by identity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lightning_ft.data.sft import InstructionData
from lightning_ft.data.sources import DataError
from lightning_ft.eval.items import load_items
from lightning_ft.eval.sets import eval_sets
from tests.conftest import shared_data
from tests.helpers import write_jsonl


def test_each_format_becomes_prompt_reference_and_follow_ups(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            {"instruction": "Add", "input": "2 and 3", "output": "5"},
            {"instruction": "Name a colour", "context": "", "response": "red"},
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
            {"question": "2+2?", "answer": "#### 4"},
            {"question_id": 7, "turns": ["Write a poem.", "Shorter."], "reference": ["A poem."]},
            {"question": "Sky colour?", "choices": ["green", "blue"], "answer": "B"},
        ],
    )
    alpaca, dolly, chat, qa, turns, choice = load_items(str(path))
    assert alpaca.prompt == [{"role": "user", "content": "Add\n\n2 and 3"}] and alpaca.reference == "5"
    assert dolly.prompt == [{"role": "user", "content": "Name a colour"}] and dolly.reference == "red"
    assert chat.prompt == [{"role": "user", "content": "hi"}] and chat.reference == "hello"
    assert qa.reference == "#### 4"
    assert (turns.id, turns.follow_ups, turns.reference) == ("7", ["Shorter."], "A poem.")
    assert (choice.choices, choice.answer, choice.reference) == (["green", "blue"], 1, None)
    assert [item.source for item in (alpaca, choice)] == [f"{path}:1", f"{path}:6"]


def test_identity_is_the_id_field_else_a_hash_of_the_prompt_and_duplicates_stay_apart(tmp_path: Path) -> None:
    records = [{"question": "Same?", "answer": "yes"}, {"question": "Other?"}, {"question": "Same?", "answer": "no"}]
    first, other, again = load_items(str(write_jsonl(tmp_path / "a.jsonl", records)))
    assert again.id == f"{first.id}#2" and len({first.id, other.id, again.id}) == 3
    reordered = load_items(str(write_jsonl(tmp_path / "b.jsonl", [records[1], records[0]])))
    assert [item.id for item in reordered] == [other.id, first.id]  # identity does not depend on position


def test_a_record_of_no_known_format_names_its_line_and_fields(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [{"question": "ok?"}, {"prompt_text": "?", "label": 1}])
    with pytest.raises(
        DataError, match=r"bad.jsonl:2: cannot tell the item format from fields \['label', 'prompt_text'\]"
    ):
        load_items(str(path))
    bad_choice = write_jsonl(tmp_path / "choice.jsonl", [{"question": "?", "choices": ["a", "b"], "answer": 5}])
    with pytest.raises(
        DataError, match=r"choice.jsonl:1: field 'answer' must be the index of the right choice \(0..1\)"
    ):
        load_items(str(bad_choice))
    with pytest.raises(ValueError, match="format"):
        load_items(str(path), format="csv-ish")


def test_fields_rename_as_in_training() -> None:
    items = load_items(str(shared_data("eval/belle_eval_set_zh.jsonl")), "qa", {"answer": "std_answer"}, limit=3)
    first = json.loads(shared_data("eval/belle_eval_set_zh.jsonl").read_text().splitlines()[0])
    assert items[0].prompt[-1]["content"] == first["question"] and items[0].reference == first["std_answer"]


@pytest.mark.parametrize(
    ("relative", "records", "with_follow_ups"),
    [
        ("eval/gsm8k_test.jsonl", 1319, 0),
        ("eval/mt_bench_questions.jsonl", 80, 80),
        ("eval/alpaca_eval_805.jsonl", 805, 0),
    ],
)
def test_real_eval_sets_load_with_unique_ids(relative: str, records: int, with_follow_ups: int) -> None:
    items = load_items(str(shared_data(relative)))
    assert len(items) == records == len({item.id for item in items})
    assert sum(bool(item.follow_ups) for item in items) == with_follow_ups


def test_a_recipe_gives_the_same_held_out_records_as_training(tmp_path: Path) -> None:
    records = [{"instruction": f"Say {n}", "input": "", "output": str(n)} for n in range(20)]
    train = write_jsonl(tmp_path / "train.jsonl", records)
    extra = write_jsonl(tmp_path / "general.jsonl", [{"instruction": "Capital of France?", "output": "Paris"}])
    options = {"train": str(train), "val_fraction": 0.2, "seed": 5, "system_prompt": "Be brief."}
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "data": {
                    "class_path": "lightning_ft.data.InstructionData",
                    "init_args": {**options, "val_extra": {"general": str(extra)}},
                }
            }
        )
    )
    val, general = eval_sets([str(recipe)])
    _, held_out, numbers = InstructionData(**options)._raw_splits()["val"]
    assert val.name == "val" and [item.reference for item in val.items] == held_out["output"]
    assert [item.source for item in val.items] == [f"{train}:{n + 1}" for n in numbers]  # record n is on line n + 1
    assert val.items[0].prompt[0] == {"role": "system", "content": "Be brief."}
    assert general.name == "general" and general.items[0].reference == "Paris"
