"""MergeKit YAML errors: one line naming the key at fault; an unknown method lists the valid ones."""

from __future__ import annotations

import pytest

from lightning_ft.cli import main
from lightning_ft.merge import MergeConfigError, merge_method_names, read_merge_config
from tests.merge.conftest import write_config


def error_of(tmp_path, config) -> str:
    path = tmp_path / "merge.yaml"
    if isinstance(config, str):
        path.write_text(config)
    else:
        write_config(path, config)
    with pytest.raises(MergeConfigError) as raised:
        read_merge_config(path)
    message = str(raised.value)
    assert "\n" not in message
    return message


def test_a_bad_value_names_its_key(tmp_path):
    config = {"merge_method": "linear", "models": [{"model": "a"}, {"model": "b", "parameters": {"weight": {"x": 1}}}]}
    assert "models[1].parameters.weight" in error_of(tmp_path, config)


def test_a_missing_key_is_named(tmp_path):
    assert "merge_method: Field required" in error_of(tmp_path, {"models": [{"model": "a"}]})
    assert "models[0].model: Field required" in error_of(tmp_path, {"merge_method": "linear", "models": [{}]})


def test_an_unknown_key_is_named_with_the_valid_ones(tmp_path):
    message = error_of(tmp_path, {"merge_method": "linear", "modles": [{"model": "a"}]})
    assert "unknown key modles" in message and "models" in message and "base_model" in message
    message = error_of(tmp_path, {"merge_method": "linear", "models": [{"model": "a", "weight": 1}]})
    assert "unknown key models[0].weight" in message and "parameters" in message


def test_an_unknown_method_lists_the_valid_ones(tmp_path):
    message = error_of(tmp_path, {"merge_method": "tie", "models": [{"model": "a"}]})
    assert "unknown merge_method 'tie'" in message
    assert {"linear", "slerp", "task_arithmetic", "ties", "dare_ties", "dare_linear"} <= set(merge_method_names())
    assert ", ".join(merge_method_names()) in message


def test_yaml_syntax_and_mergekits_own_rules(tmp_path):
    assert "not valid YAML (line 3, column 1)" in error_of(tmp_path, "merge_method: linear\nmodels: [a\n")
    both = {"merge_method": "linear", "models": [{"model": "a"}], "slices": [{"sources": []}]}
    assert "Exactly one of 'models', 'slices', or 'modules'" in error_of(tmp_path, both)


def test_the_cli_stops_with_the_one_line(tmp_path):
    path = write_config(tmp_path / "merge.yaml", {"merge_method": "tie", "models": [{"model": "a"}]})
    with pytest.raises(SystemExit) as raised:
        main(["merge", str(path), str(tmp_path / "out")])
    assert str(raised.value).startswith("lightning-ft merge: ") and "valid merge methods: " in str(raised.value)
    assert not (tmp_path / "out").exists()
