"""`lightning-ft data stats`: counts, lengths as training tokenizes them, truncation at given max_lengths,
duplicates, writing systems and the histogram."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightning_ft.cli import main
from lightning_ft.model.spec import ModelSpec
from lightning_ft.prep.stats import stats
from tests.conftest import shared_data
from tests.helpers import read_jsonl, write_jsonl

RECORDS = [
    {"instruction": "Say hello", "output": "hello world"},  # 4 words
    {"instruction": "SAY   hello!", "output": "Hello, world."},  # the first again, once normalised
    {"instruction": "Name three colours of the rainbow", "output": ""},  # 6 words, empty response
    {"instruction": "Write one sentence", "input": "about autumn", "output": "Leaves fall on a quiet pond."},  # 11
    {"instruction": "把这句话翻译成英文", "output": "好的"},  # 2 words, in Chinese
]


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))


def test_counts_lengths_duplicates_and_scripts(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "data.jsonl", RECORDS)
    summary = stats(str(source), max_length=[5, 10], near_duplicates=False, report=str(tmp_path / "r.json"))
    assert (summary["layout"], summary["records"]) == ("alpaca", 5)
    assert summary["empty"] == {"prompt": 0, "response": 1}
    assert summary["missing_fields"] == {"input": 4}
    assert summary["exact_duplicates"] == 1
    word_counts = [4, 4, 6, 11, 2]
    length = summary["length"]
    assert (length["unit"], length["min"], length["max"], length["mean"]) == ("words", 2, 11, sum(word_counts) / 5)
    assert length["p50"] == 4.0  # sorted 2 4 4 6 11
    assert length["truncated_at"] == {"5": 2, "10": 1}
    assert summary["scripts"] == {"Latin": 4, "CJK": 1}
    assert json.loads((tmp_path / "r.json").read_text())["length"] == length


def test_token_lengths_are_the_training_rendering(tmp_path: Path, tiny_model_dir: Path) -> None:
    source = write_jsonl(
        tmp_path / "chat.jsonl",
        [
            {"messages": [{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r["output"]}]}
            for r in RECORDS
        ],
    )
    summary = stats(
        str(source),
        tokenizer=str(tiny_model_dir),
        max_length=[30],
        near_duplicates=False,
        report=str(tmp_path / "r.json"),
        plot=str(tmp_path / "lengths.png"),
    )
    tokenizer = ModelSpec(path=str(tiny_model_dir)).load_tokenizer()
    expected = [
        len(tokenizer.apply_chat_template(r["messages"], tokenize=True, return_dict=True)["input_ids"])
        for r in read_jsonl(source)
    ]
    assert (summary["length"]["unit"], summary["length"]["min"], summary["length"]["max"]) == (
        "tokens",
        min(expected),
        max(expected),
    )
    assert summary["length"]["truncated_at"] == {"30": sum(n > 30 for n in expected)}
    assert summary["turns"] == {"min": 2, "mean": 2.0, "max": 2}
    assert (tmp_path / "lengths.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_real_tool_calling_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = shared_data("chat/glaive_toolcall_en_demo.jsonl")
    main(["data", "stats", str(source), "--near-duplicates", "false", "--report", str(tmp_path / "r.json")])
    summary = json.loads((tmp_path / "r.json").read_text())
    turns = [len(r["conversations"]) for r in read_jsonl(source)]
    assert summary["records"] == 300 and summary["turns"]["min"] == min(turns) and summary["turns"]["max"] == max(turns)
    assert "300 records (sharegpt)" in capsys.readouterr().out
