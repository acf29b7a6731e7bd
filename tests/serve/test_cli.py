"""`lightning-ft serve` turns its flags into a `ServeConfig`: repeated ``--adapter NAME=DIR``, the API key read
from the named environment variable, 127.0.0.1 by default."""

from __future__ import annotations

import pytest

from lightning_ft import cli
from lightning_ft.serve import ServeConfig, server


def test_flags_become_the_config(monkeypatch):
    configs: list[ServeConfig] = []
    monkeypatch.setattr(server, "run_server", configs.append)
    monkeypatch.setenv("MY_KEY", "secret")
    cli.main(["serve", "--model", "base", "--adapter", "a=/x/a", "--adapter", "b=/x/b=c", "--api_key_env", "MY_KEY"])
    assert configs == [ServeConfig(model="base", adapters={"a": "/x/a", "b": "/x/b=c"}, api_key="secret")]
    assert (configs[0].host, configs[0].port) == ("127.0.0.1", 8000)


def test_without_the_key_variable_there_is_no_key(monkeypatch):
    configs: list[ServeConfig] = []
    monkeypatch.setattr(server, "run_server", configs.append)
    monkeypatch.delenv("LIGHTNING_FT_API_KEY", raising=False)
    cli.main(["serve", "--model", "base", "--port", "9000"])
    assert configs == [ServeConfig(model="base", port=9000)]


def test_an_adapter_without_a_name_is_refused(monkeypatch):
    monkeypatch.setattr(server, "run_server", lambda config: None)
    with pytest.raises(ValueError, match="NAME=EXPORT_DIR"):
        cli.main(["serve", "--model", "base", "--adapter", "/x/a"])
