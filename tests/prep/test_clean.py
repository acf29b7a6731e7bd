"""`clean` end to end on real Alpaca-GPT4 records: each quality rule drops exactly the records planted for it, an
instruction-only file keeps its records, the output keeps the input's layout and fields in the file type asked for
and trains, a malformed record is named by file, line and field, and two runs give the same bytes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lightning_ft.data.sources import DataError, load_records
from lightning_ft.prep.clean import clean
from tests.conftest import shared_data
from tests.helpers import read_jsonl, write_jsonl
from tests.prep.fitting import fit_on

FIELDS = ["instruction", "input", "output"]


@pytest.fixture(scope="module")
def real_records() -> list[dict[str, Any]]:
    """The first 20 records of Alpaca-GPT4 (no duplicates, no personal data among them)."""
    return read_jsonl(shared_data("sft_alpaca/alpaca_gpt4_en_demo.jsonl"))[:20]


def planted_quality(real_records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Real records 0-19, then one record per case (20-26)."""
    return real_records + [
        {"instruction": "Name a colour.", "input": "", "output": ""},  # 20: empty
        {"instruction": "Name a fruit.", "input": "", "output": " \n\t "},  # 21: only spaces
        {"instruction": "Say: good morning", "input": "", "output": "Say - GOOD morning!"},  # 22: the prompt again
        {"instruction": "Reply yes.", "input": "", "output": "Yes.\nyes.\n  YES."},  # 23: 2 of 3 lines repeat
        {"instruction": "Advertise.", "input": "", "output": "Buy now!\nBuy  now!\nBUY NOW!\nCall us."},  # 24: 2/4
        {"instruction": "Show a block.", "input": "", "output": "```\nx = 1\n```\n---\n---"},  # 25: 1 content line
        {"instruction": "Agree.", "input": "", "output": "OK"},  # 26: 2 characters
    ]


def test_quality_rules_drop_exactly_the_planted_records(real_records: list[dict[str, Any]], tmp_path: Path) -> None:
    """Record 24 repeats 2 of its 4 lines: 0.5, not above the limit 0.5, so it stays. Record 25's fences and rules
    are not content lines, so it has one line and nothing repeats. Record 26 has 2 non-space characters."""
    records = planted_quality(real_records)
    source = write_jsonl(tmp_path / "quality.jsonl", records)
    report = clean(str(source), str(tmp_path / "clean.jsonl"))
    where = [f"{source}:{line}" for line in range(1, len(records) + 1)]
    assert report["dropped"] == {
        "empty_response": {
            "count": 2,
            "records": [
                {"record": 20, "where": where[20], "response_chars": 0},
                {"record": 21, "where": where[21], "response_chars": 0},
            ],
        },
        "response_is_prompt": {"count": 1, "records": [{"record": 22, "where": where[22]}]},
        "repeated_lines": {
            "count": 1,
            "records": [{"record": 23, "where": where[23], "repeated_line_ratio": round(2 / 3, 4)}],
        },
        "exact_duplicate": {"count": 0, "records": []},
        "near_duplicate": {"count": 0, "records": []},
    }
    assert read_jsonl(tmp_path / "clean.jsonl") == records[:20] + records[24:]
    assert (report["records_in"], report["records_out"], report["skipped_rules"]) == (27, 23, {})

    stricter = clean(str(source), str(tmp_path / "strict.jsonl"), min_response_chars=3, max_repeated_line_ratio=0.4)
    assert [entry["record"] for entry in stricter["dropped"]["empty_response"]["records"]] == [20, 21, 26]
    assert [entry["record"] for entry in stricter["dropped"]["repeated_lines"]["records"]] == [23, 24]


def test_instruction_only_file_keeps_its_records(real_records: list[dict[str, Any]], tmp_path: Path) -> None:
    instructions = [{"instruction": record["instruction"], "input": record["input"]} for record in real_records]
    source = write_jsonl(tmp_path / "instructions.jsonl", instructions)
    report = clean(str(source), str(tmp_path / "clean.jsonl"))
    assert report["layout"] == "alpaca" and report["records_out"] == 20
    assert "empty_response" not in report["dropped"]
    assert report["skipped_rules"] == {
        "empty_response": "no record has a response (instructions only): its records are kept"
    }
    assert read_jsonl(tmp_path / "clean.jsonl") == instructions


def test_preference_responses_are_measured_apart(tmp_path: Path) -> None:
    """Chosen and rejected share two of three lines by design: 2 of the 6 lines together (1/3) would pass the limit
    0.3, but neither side repeats a line of its own."""
    record = {"prompt": "Plan my day.", "chosen": "Wake up\nWork\nRest", "rejected": "Wake up\nWork\nParty"}
    source = write_jsonl(tmp_path / "pairs.jsonl", [record])
    report = clean(str(source), str(tmp_path / "clean.jsonl"), max_repeated_line_ratio=0.3)
    assert report["layout"] == "preference" and report["records_out"] == 1


def test_output_keeps_layout_and_fields_and_trains(
    real_records: list[dict[str, Any]], tmp_path: Path, tiny_model_dir: Path
) -> None:
    source = write_jsonl(tmp_path / "quality.jsonl", planted_quality(real_records))
    clean(str(source), str(tmp_path / "clean.jsonl"))
    lines = (tmp_path / "clean.jsonl").read_text(encoding="utf-8").splitlines()
    assert [list(json.loads(line)) for line in lines] == [FIELDS] * 23
    assert (
        fit_on(tmp_path / "clean.jsonl", "alpaca", tiny_model_dir, tmp_path / "run") / "adapter_model.safetensors"
    ).exists()


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_output_file_type_follows_the_suffix(real_records: list[dict[str, Any]], tmp_path: Path, suffix: str) -> None:
    source = write_jsonl(tmp_path / "quality.jsonl", planted_quality(real_records))
    report = clean(str(source), str(tmp_path / f"clean{suffix}"))
    written = load_records(str(tmp_path / f"clean{suffix}"))
    assert report["output"] == str(tmp_path / f"clean{suffix}") and written.column_names == FIELDS
    expected = real_records + planted_quality(real_records)[24:]
    assert [{key: value or "" for key, value in record.items()} for record in written] == expected


def test_malformed_record_names_file_line_and_field(real_records: list[dict[str, Any]], tmp_path: Path) -> None:
    records = real_records[:3] + [{"instruction": "Add 2 and 2.", "input": "", "output": 4}]
    source = write_jsonl(tmp_path / "bad.jsonl", records)
    with pytest.raises(DataError, match=f"^{source}:4: field 'output' must be a string, got int$"):
        clean(str(source), str(tmp_path / "clean.jsonl"))


def test_runs_are_deterministic(tmp_path: Path) -> None:
    """Twice on the first 200 records plus a copy of record 7, the second time in two processes: the same bytes."""
    records = read_jsonl(shared_data("sft_alpaca/alpaca_gpt4_en_demo.jsonl"))[:200]
    source = write_jsonl(tmp_path / "part.jsonl", records + [records[7]])
    first = clean(str(source), str(tmp_path / "first.jsonl"), report=str(tmp_path / "first.json"))
    second = clean(str(source), str(tmp_path / "second.jsonl"), num_proc=2, report=str(tmp_path / "second.json"))
    assert (tmp_path / "first.jsonl").read_bytes() == (tmp_path / "second.jsonl").read_bytes()
    assert {**first, "output": None} == {**second, "output": None}
    assert json.loads((tmp_path / "first.json").read_text()) == first
    assert first["dropped"]["exact_duplicate"]["count"] == 1


def test_report_default_path_and_settings(real_records: list[dict[str, Any]], tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "part.jsonl", real_records)
    report = clean(str(source), str(tmp_path / "clean.jsonl"), threshold=0.9, pii_kinds=["email"])
    assert json.loads((tmp_path / "clean.jsonl.report.json").read_text()) == report
    assert report["settings"] == {
        "exact_dedup": True,
        "near_dedup": True,
        "threshold": 0.9,
        "ngram": 5,
        "num_perm": 128,
        "min_response_chars": 1,
        "max_repeated_line_ratio": 0.5,
        "pii_kinds": ["email"],
        "layout": "auto",
        "seed": 0,
    }


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"threshold": 1.0}, "threshold must be in \\(0, 1\\), got 1.0"),
        ({"ngram": 0}, "ngram must be at least 1, got 0"),
        ({"max_repeated_line_ratio": 1.5}, "max_repeated_line_ratio must be in \\[0, 1\\], got 1.5"),
        ({"layout": "records"}, "Unknown layout 'records'; valid: auto, alpaca, dolly, messages, sharegpt, pref"),
    ],
)
def test_settings_are_checked(tmp_path: Path, setting: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        clean(str(tmp_path / "absent.jsonl"), str(tmp_path / "clean.jsonl"), **setting)
