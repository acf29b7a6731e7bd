"""Every override an error or warning message suggests parses: each backticked `key: value` and each
``--config configs/...`` in lightning_ft's source is fed to `lightning-ft fit --print_config` on a recipe."""

from __future__ import annotations

import re

import pytest

from lightning_ft.cli import main
from tests.conftest import ROOT

SETTING = re.compile(r"`([a-z_]+(?:\.[a-z_]+)+): ([^`\s]+)`")
CONFIG = re.compile(r"--config (configs/[\w/]+\.yaml)")
SOURCES = sorted((ROOT / "lightning_ft").rglob("*.py"))


def suggestions(pattern: re.Pattern) -> list[tuple]:
    found = {match for path in SOURCES for match in pattern.findall(path.read_text())}
    return sorted(found)


def test_the_messages_suggest_overrides():
    """The scan finds what the messages say (so an empty scan cannot pass the tests below)."""
    settings = dict(suggestions(SETTING))
    assert settings["model.on_non_finite"] == "skip"
    assert settings["data.batch_size"] == "1" and settings["data.packing"] == "false"
    assert "configs/strategies/fsdp_offload.yaml" in {path for path in suggestions(CONFIG)}


def print_config(arguments: list[str], capsys: pytest.CaptureFixture) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(ROOT / "configs" / "sft" / "lora.yaml"), *arguments, "--print_config"])
    assert exit_.value.code in (0, None), capsys.readouterr().err[-2000:]
    return capsys.readouterr().out


@pytest.mark.parametrize(("key", "value"), suggestions(SETTING))
def test_a_suggested_setting_parses(key, value, capsys):
    printed = print_config([f"--{key}", value], capsys)
    assert f"{key.rsplit('.', 1)[-1]}: {value}" in printed or value in printed


@pytest.mark.parametrize("config", suggestions(CONFIG))
def test_a_suggested_recipe_or_fragment_parses(config, capsys):
    assert (ROOT / config).exists()
    print_config(["--config", str(ROOT / config)], capsys)
