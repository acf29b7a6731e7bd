"""The `lightning-ft` entry point: --help and --version without torch, one line per user error with its exit status,
tracebacks with --debug, help answered from its cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_ft import __version__, launcher
from lightning_ft.cli import EXTRA_COMMANDS, FineTuneCLI
from lightning_ft.errors import DataError, UsageError

CONFIG = Path(__file__).parents[1] / "configs" / "sft" / "lora.yaml"


def in_fresh_python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300
    )


def test_the_overview_lists_every_command_the_cli_runs():
    commands = {*FineTuneCLI.subcommands(), *EXTRA_COMMANDS, "data", "tune"}
    assert set(launcher.COMMANDS) == commands
    lines = launcher.OVERVIEW.splitlines()
    assert lines[0] == "usage: lightning-ft [--version] [--debug] [--no-cache] COMMAND [options]"
    assert [line.split()[0] for line in lines if line.startswith("  ")] == list(launcher.COMMANDS)


def test_test_and_predict_are_not_offered():
    assert set(FineTuneCLI.subcommands()) == {"fit", "validate"}


@pytest.mark.parametrize("arguments", [["--help"], ["--version"], ["fit", "--version"], []])
def test_help_and_version_answer_without_importing_torch(arguments):
    code = (
        "import sys\nfrom lightning_ft.launcher import main\n"
        f"main({arguments!r})\nassert 'torch' not in sys.modules and 'lightning' not in sys.modules"
    )
    result = in_fresh_python(code)
    assert result.returncode == 0, result.stderr
    expected = f"lightning-ft {__version__}" if "--version" in arguments else launcher.OVERVIEW
    assert result.stdout.strip() == expected


def test_an_unknown_command_is_one_line_with_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_:
        launcher.main(["fitt", "--config", "x.yaml"])
    assert exit_.value.code == 2
    commands = ", ".join(launcher.COMMANDS)
    assert capsys.readouterr().err == f"lightning-ft: error: unknown command 'fitt'; commands: {commands}\n"


def test_a_commands_help_comes_from_its_cache_once_built(tmp_path):
    env = {"LIGHTNING_FT_CACHE": str(tmp_path)}
    first = subprocess.run(
        [sys.executable, "-m", "lightning_ft", "export", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, **env, "LIGHTNING_FT_BUILD_HELP": "1"},  # not the shipped text
    )
    assert first.returncode == 0, first.stderr
    assert "--adapter" in first.stdout and "--gguf" in first.stdout
    (cached,) = tmp_path.glob("help/*/export.txt")
    assert cached.read_text() == first.stdout
    code = (
        "import sys\nfrom lightning_ft.launcher import main\nmain(['export', '--help'])\n"
        "assert 'torch' not in sys.modules, 'the cached help was rebuilt'"
    )
    second = in_fresh_python(code, env)
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout


def fit(arguments: list[str], tiny_model_dir: Path, tmp_path: Path) -> list[str]:
    return [
        "fit", "--config", str(CONFIG), "--model.model.path", str(tiny_model_dir),
        "--data.max_length", "64", "--trainer.max_steps", "2", "--trainer.default_root_dir", str(tmp_path / "run"),
        "--trainer.enable_progress_bar", "false", *arguments,
    ]  # fmt: skip


def records(path: Path, count: int = 12) -> Path:
    rows = [{"instruction": f"Say hello {i} times.", "output": "hello " * (i % 5 + 1)} for i in range(count)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def error_of(arguments: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """The exit status and the last line on stderr (the one the user reads)."""
    with pytest.raises(SystemExit) as exit_:
        launcher.main(arguments)
    return exit_.value.code, capsys.readouterr().err.strip().splitlines()[-1]


def test_a_missing_local_model_says_so(tiny_model_dir, tmp_path, capsys):
    arguments = fit(["--data.train", str(records(tmp_path / "train.jsonl"))], tiny_model_dir, tmp_path)
    arguments[arguments.index(str(tiny_model_dir))] = "/data/modls/x"
    assert error_of(arguments, capsys) == (
        2,
        "lightning-ft fit: error: model /data/modls/x: no such file or directory; give a local model directory "
        "(or a .gguf file) or a Hugging Face hub id such as HuggingFaceTB/SmolLM2-135M-Instruct",
    )


def test_a_data_error_is_one_line_with_exit_status_1(tiny_model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(records(tmp_path / "train.jsonl").read_text() + "{not json\n")
    status, line = error_of(fit(["--data.train", str(bad)], tiny_model_dir, tmp_path), capsys)
    assert status == 1
    assert line.startswith(f"lightning-ft fit: error: {bad}:13: malformed JSON")


def test_debug_shows_the_whole_exception(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNING_FT_DEBUG", "0")  # restored after the test: --debug sets it to 1
    arguments = fit(["--data.train", str(records(tmp_path / "train.jsonl"))], tiny_model_dir, tmp_path)
    with pytest.raises(Exception) as raised:  # noqa: PT011 - jsonargparse wraps it in its own ValueError
        launcher.main(["--debug", *[value.replace(str(tiny_model_dir), "/data/modls/x") for value in arguments]])
    assert launcher.user_error(raised.value).__class__ is UsageError


def test_a_wrong_option_type_names_the_key(tiny_model_dir, tmp_path, capsys):
    train = str(records(tmp_path / "train.jsonl"))
    assert error_of(fit(["--data.train", train, "--data.batch_size", "abc"], tiny_model_dir, tmp_path), capsys) == (
        2,
        "lightning-ft fit: error: data.batch_size: expected int, got 'abc' (options: lightning-ft fit --help)",
    )


def test_an_unknown_option_lists_the_valid_ones(tiny_model_dir, tmp_path, capsys):
    train = str(records(tmp_path / "train.jsonl"))
    status, line = error_of(fit(["--data.train", train, "--data.bogus", "3"], tiny_model_dir, tmp_path), capsys)
    assert status == 2
    prefix = "lightning-ft fit: error: data.bogus: no such option of InstructionData; its options: train, format, "
    assert line.startswith(prefix) and ", max_length, " in line and line.endswith("(options: lightning-ft fit --help)")


def test_zero_steps_is_refused_before_training(tiny_model_dir, tmp_path, capsys):
    train = str(records(tmp_path / "train.jsonl"))
    assert error_of(fit(["--data.train", train, "--trainer.max_steps", "0"], tiny_model_dir, tmp_path), capsys) == (
        2,
        "lightning-ft fit: error: trainer.max_steps is 0: nothing would be trained; give a positive value (or -1: no "
        "limit)",
    )
    assert not (tmp_path / "run").exists()


def test_an_extra_commands_usage_error_is_one_line(tmp_path, capsys):
    status, line = error_of(
        ["export", "--adapter", str(tmp_path), "--output", str(tmp_path / "o"), "--bogus", "1"], capsys
    )
    assert status == 2
    assert line == "lightning-ft export: error: unrecognized arguments: --bogus 1 (options: lightning-ft export --help)"


def test_user_error_finds_the_cause_in_a_chain():
    cause = DataError("train.jsonl:3: field 'output' is null")
    try:
        try:
            raise cause
        except DataError as error:
            raise ValueError("Does not validate against any of the Union subtypes") from error
    except ValueError as wrapped:
        assert launcher.user_error(wrapped) is cause
    assert launcher.user_error(RuntimeError("a bug")) is None


def test_commands_other_than_training_load_no_lightning():
    """chat, export, serve, merge start without Lightning's import (seconds of it); score, eval and data import it
    when they run, through the data modules they use."""
    result = in_fresh_python("import sys\nimport lightning_ft.commands\nassert 'lightning' not in sys.modules")
    assert result.returncode == 0, result.stderr
