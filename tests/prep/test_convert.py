"""`lightning-ft data convert`: layouts converted through the canonical conversation, round trips exact, records a
target cannot hold counted and named, and the outputs train."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightning_ft.cli import main
from lightning_ft.data.sources import DataError
from lightning_ft.prep.convert import convert
from tests.conftest import shared_data
from tests.helpers import read_jsonl, write_jsonl
from tests.prep.fitting import fit_on


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))


def test_instructions_to_chats_and_back(tmp_path: Path) -> None:
    records = [
        {"instruction": "Say hello.", "input": "", "output": "hello world"},
        {"instruction": "Translate.", "input": "Bonjour", "output": "Hello", "system": "Be brief."},
    ]
    source = write_jsonl(tmp_path / "alpaca.jsonl", records)
    convert(str(source), str(tmp_path / "chat.jsonl"), "sharegpt")
    assert read_jsonl(tmp_path / "chat.jsonl") == [
        {"conversations": [{"from": "human", "value": "Say hello."}, {"from": "gpt", "value": "hello world"}]},
        {
            "system": "Be brief.",
            "conversations": [{"from": "human", "value": "Translate.\n\nBonjour"}, {"from": "gpt", "value": "Hello"}],
        },
    ]
    convert(str(tmp_path / "chat.jsonl"), str(tmp_path / "back.jsonl"), "alpaca")
    back = read_jsonl(tmp_path / "back.jsonl")
    assert back[0] == records[0]
    assert back[1] == {"instruction": "Translate.\n\nBonjour", "input": "", "output": "Hello", "system": "Be brief."}


def test_tool_calls_survive_sharegpt_to_messages_and_back(tmp_path: Path) -> None:
    source = shared_data("chat/glaive_toolcall_en_demo.jsonl")
    summary = convert(str(source), str(tmp_path / "messages.jsonl"), "messages")
    assert summary["written"] == summary["records"] == 300 and summary["skipped"] == 0
    messages = read_jsonl(tmp_path / "messages.jsonl")
    first_call = next(m for m in messages[0]["messages"] if m.get("tool_calls"))
    assert first_call["tool_calls"][0]["function"]["name"] == "search_recipes"
    convert(str(tmp_path / "messages.jsonl"), str(tmp_path / "sharegpt.jsonl"), "sharegpt")
    original = [{k: v for k, v in r.items() if not (k == "tools" and v == "[]")} for r in read_jsonl(source)]
    assert read_jsonl(tmp_path / "sharegpt.jsonl") == original  # an empty tool list is not written back


def test_records_the_target_cannot_hold_are_counted_and_named(tmp_path: Path) -> None:
    source = shared_data("chat/oasst_en100_messages.jsonl")
    summary = convert(str(source), str(tmp_path / "alpaca.jsonl"), "alpaca")
    single = [
        r
        for r in read_jsonl(source)
        if [m["role"] for m in r["messages"] if m["role"] != "system"] == ["user", "assistant"]
    ]
    assert (summary["written"], summary["skipped"]) == (len(single), 100 - len(single)) == (20, 80)
    report = json.loads((tmp_path / "alpaca.jsonl.report.json").read_text())
    assert (
        report["skipped"][0]["where"].startswith(f"{source}:")
        and "turns user, assistant, user" in report["skipped"][0]["reason"]
    )


def test_preference_transcripts_become_pairs_that_train(tmp_path: Path, tiny_model_dir: Path) -> None:
    source = shared_data("preference/hh_rlhf_helpful_base_test.jsonl")
    summary = convert(str(source), str(tmp_path / "pairs.jsonl"), "preference")
    identical = sum(r["chosen"] == r["rejected"] for r in read_jsonl(source))
    assert (summary["written"], summary["skipped"]) == (2354 - identical, identical)
    pair = read_jsonl(tmp_path / "pairs.jsonl")[0]
    assert pair["prompt"][-1]["role"] == "user" and pair["chosen"][0]["role"] == "assistant"
    write_jsonl(tmp_path / "few.jsonl", read_jsonl(tmp_path / "pairs.jsonl")[:8])
    assert (
        fit_on(tmp_path / "few.jsonl", "preference", tiny_model_dir, tmp_path / "run") / "adapter_config.json"
    ).exists()


def test_converted_chats_train(tmp_path: Path, tiny_model_dir: Path) -> None:
    source = write_jsonl(tmp_path / "a.jsonl", [{"instruction": f"Say {w}.", "output": w} for w in ("hello", "world")])
    convert(str(source), str(tmp_path / "chat.jsonl"), "messages")
    assert (
        fit_on(tmp_path / "chat.jsonl", "messages", tiny_model_dir, tmp_path / "run") / "adapter_config.json"
    ).exists()


def test_command_line_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "Hi", "output": "Hello"}])
    main(["data", "convert", str(source), str(tmp_path / "out.parquet"), "--to", "messages"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["written"] == 1
    with pytest.raises(
        ValueError, match="Unknown target layout 'chatml'; valid: messages, sharegpt, alpaca, preference"
    ):
        convert(str(source), str(tmp_path / "x.jsonl"), "chatml")
    with pytest.raises(ValueError, match=r"CSV holds flat records only \(\['messages'\] are nested\)"):
        convert(str(source), str(tmp_path / "x.csv"), "messages")
    bad = write_jsonl(
        tmp_path / "bad.jsonl", [{"instruction": "Hi", "output": "Hello"}, {"instruction": "Hi", "output": 3}]
    )
    with pytest.raises(DataError, match=r"bad.jsonl:2: field 'output' must be a string"):
        convert(str(bad), str(tmp_path / "y.jsonl"), "messages")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit:
        main(["data"])
    assert exit.value.code == 2
    assert capsys.readouterr().err.startswith("lightning-ft data: error: commands: stats, clean, split, leak-check,")
    main(["data", "--help"])
    overview = capsys.readouterr().out.splitlines()
    assert overview[0] == "usage: lightning-ft data COMMAND [options]"
    tools = ["stats", "clean", "split", "leak-check", "convert", "generate", "augment"]
    assert [line.split()[0] for line in overview[3 : 3 + len(tools)]] == tools
    assert overview[3].split()[1:3] == ["Describe", "source;"]  # the docstring's first line, without rst markup
