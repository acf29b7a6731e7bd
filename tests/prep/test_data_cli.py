"""`lightning-ft data COMMAND`: positional arguments in order or by name, a list positional taking the rest, flags as
users type them, help, and unknown commands listing the valid ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightning_ft.cli import DATA_COMMANDS, data_arguments, main
from lightning_ft.prep.leak import leak_check
from tests.helpers import write_jsonl


def test_arguments_positional_named_and_listed() -> None:
    assert data_arguments(leak_check, ["t.jsonl", "a.jsonl", "b.jsonl", "--n", "8"]) == [
        "t.jsonl",
        json.dumps(["a.jsonl", "b.jsonl"]),
        "--n",
        "8",
    ]
    assert data_arguments(DATA_COMMANDS["convert"], ["in.jsonl", "--to", "messages", "out.jsonl"]) == [
        "in.jsonl",
        "out.jsonl",
        "messages",
    ]
    assert data_arguments(DATA_COMMANDS["split"], ["in.jsonl", "out", "--group-by", "tree_id"]) == [
        "in.jsonl",
        "out",
        "--group_by",
        "tree_id",
    ]
    assert data_arguments(DATA_COMMANDS["stats"], ["x.jsonl", "--help"]) == ["--help"]


def test_leak_check_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    question = "What are the names of some famous actors that started their careers on Broadway?"
    train = write_jsonl(tmp_path / "train.jsonl", [{"instruction": question, "output": "Hugh Jackman."}])
    first = write_jsonl(tmp_path / "eval1.jsonl", [{"question": question}, {"question": "Unrelated question here?"}])
    second = write_jsonl(tmp_path / "eval2.jsonl", [{"question": "Nothing in common with the training set at all."}])
    main(["data", "leak-check", str(train), str(first), str(second), "--report", str(tmp_path / "leak.json")])
    report = json.loads((tmp_path / "leak.json").read_text())
    assert [entry["contaminated"] for entry in report["evals"].values()] == [1, 0]
    assert "eval1.jsonl: 1 of 2 items contaminated" in capsys.readouterr().out


def test_unknown_command_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        main(["data", "dedup", "x.jsonl"])
    assert exit.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("lightning-ft data: error: unknown command 'dedup'; commands: stats, clean, split,")
