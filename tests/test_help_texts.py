"""The --help texts shipped in lightning_ft/help/: current with the sources, equal to what the parsers print, used
without importing torch, shown with a note and refreshed in the background under other library versions, and not
used at all when built from other sources."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_ft import help_texts, launcher
from lightning_ft.help_texts import HELP_DIR, STAMP_FILE, build_help, commands_with_help, help_name, stamp

REBUILD = "python tools/build_help.py"


def shipped(command: list[str]) -> str:
    return (HELP_DIR / f"{help_name(command)}.txt").read_text()


def test_every_command_has_a_text_built_from_these_sources():
    built_for = json.loads((HELP_DIR / STAMP_FILE).read_text())
    assert built_for["sources"] == stamp()["sources"], f"the shipped help is stale: {REBUILD}"
    expected = {f"{help_name(command)}.txt" for command in commands_with_help()}
    assert {path.name for path in HELP_DIR.glob("*.txt")} == expected, REBUILD
    assert len(expected) == len(launcher.COMMANDS) + 7  # and the seven data tools


@pytest.mark.parametrize("command", [["fit"], ["data", "clean"]])
def test_a_shipped_text_is_what_the_parser_prints(command, tmp_path):
    found = help_texts.shipped_help(command)
    assert found is not None, REBUILD
    if found.differences:
        pytest.skip(f"the texts were built for other library versions: {found.differences}")
    assert build_help(command, tmp_path) == found.text


def test_the_first_help_after_an_install_imports_no_torch(tmp_path):
    code = (
        "import sys\nfrom lightning_ft.launcher import main\nmain(['fit', '--help'])\n"
        "assert 'torch' not in sys.modules and 'lightning' not in sys.modules, 'the help was built'"
    )
    environment = {**os.environ, "LIGHTNING_FT_CACHE": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == shipped(["fit"])
    assert result.stderr == ""


def copy_of_the_help(tmp_path: Path, change) -> Path:
    directory = tmp_path / "help"
    shutil.copytree(HELP_DIR, directory)
    built_for = json.loads((directory / STAMP_FILE).read_text())
    change(built_for)
    (directory / STAMP_FILE).write_text(json.dumps(built_for))
    return directory


def test_other_library_versions_show_the_text_with_a_note_and_refresh_it(tmp_path, monkeypatch, capsys):
    directory = copy_of_the_help(tmp_path, lambda built_for: built_for["libraries"].update(lightning="0.0.1"))
    monkeypatch.setattr(help_texts, "HELP_DIR", directory)
    monkeypatch.setenv("LIGHTNING_FT_CACHE", str(tmp_path / "cache"))
    refreshed = []
    monkeypatch.setattr(launcher, "refresh_help", refreshed.append)
    launcher.main(["chat", "--help"])
    output = capsys.readouterr()
    assert output.out == shipped(["chat"])
    installed = help_texts.installed_version("lightning")
    assert output.err == (
        f"lightning-ft: this help was built for lightning 0.0.1 (installed: {installed}); "
        "the exact one is being built for the next call\n"
    )
    assert refreshed == [["chat"]]


def test_the_background_refresh_caches_the_parsers_text(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNING_FT_CACHE", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "80")
    process = launcher.refresh_help(["export"])
    assert process.wait(timeout=120) == 0
    assert (launcher.help_cache_dir() / "export.txt").read_text() == build_help(["export"], tmp_path / "fresh")


def test_a_text_built_from_other_sources_is_not_used(tmp_path, monkeypatch, capsys):
    directory = copy_of_the_help(tmp_path, lambda built_for: built_for.update(sources="0" * 64))
    (directory / "export.txt").write_text("a text for other sources\n")
    monkeypatch.setattr(help_texts, "HELP_DIR", directory)
    monkeypatch.setenv("LIGHTNING_FT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(launcher, "refresh_help", lambda command: pytest.fail("refreshed"))
    launcher.main(["export", "--help"])
    assert capsys.readouterr().out.startswith("usage: lightning-ft export")
    assert (launcher.help_cache_dir() / "export.txt").is_file()  # built from the parser, then cached
