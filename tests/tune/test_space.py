"""The search space file: every range form becomes the Optuna distribution it names, grids enumerate their values,
and each kind of mistake is refused naming the file and key with what is valid."""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import require

optuna = require("optuna", "lightning-ft tune needs the tune extra")

from lightning_ft.tune.space import SpaceError, parse_space, read_space  # noqa: E402
from lightning_ft.tune.study import yaml_value  # noqa: E402

D = optuna.distributions


def test_each_range_form_is_the_distribution_it_names():
    space = parse_space(
        {
            "metric": "val/exact_match",
            "direction": "maximize",
            "seed": 3,
            "a.lr": {"log_uniform": [1.0e-5, 1.0e-3]},
            "a.dropout": {"uniform": [0.0, 0.2]},
            "a.warmup_ratio": {"float": [0.0, 0.1, 0.05]},
            "a.r": {"choice": [8, 16, 64]},
            "a.steps": {"int": [50, 400, 50]},
            "a.epochs": {"int": [1, 3]},
            "a.batch": {"log_int": [2, 32]},
        },
        "space.yaml",
    )
    assert space.metric == "val/exact_match" and space.direction == "maximize" and space.seed == 3
    assert space.distributions == {
        "a.lr": D.FloatDistribution(1e-5, 1e-3, log=True),
        "a.dropout": D.FloatDistribution(0.0, 0.2),
        "a.warmup_ratio": D.FloatDistribution(0.0, 0.1, step=0.05),
        "a.r": D.CategoricalDistribution([8, 16, 64]),
        "a.steps": D.IntDistribution(50, 400, step=50),
        "a.epochs": D.IntDistribution(1, 3),
        "a.batch": D.IntDistribution(2, 32, log=True),
    }
    assert isinstance(space.build_sampler(), optuna.samplers.TPESampler)
    assert isinstance(space.build_pruner(), optuna.pruners.MedianPruner)


def test_values_drawn_by_a_trial_respect_their_ranges():
    space = parse_space({"lr": {"log_uniform": [1.0e-5, 1.0e-3]}, "r": {"choice": [8, 16]}, "s": {"int": [2, 8, 2]}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        values = space.suggest(study.ask())
        assert 1e-5 <= values["lr"] <= 1e-3 and values["r"] in (8, 16) and values["s"] in (2, 4, 6, 8)


def test_a_grid_enumerates_every_combination_once():
    space = parse_space(
        {"sampler": "grid", "a": {"choice": ["x", "y"]}, "b": {"int": [1, 5, 2]}, "c": {"float": [0.0, 0.2, 0.1]}}
    )
    assert space.grid == {"a": ["x", "y"], "b": [1, 3, 5], "c": [0.0, 0.1, 0.2]}
    assert space.grid_size == 2 * 3 * 3
    study = optuna.create_study(sampler=space.build_sampler())
    seen = set()

    def objective(trial: optuna.Trial) -> float:
        seen.add(tuple(space.suggest(trial).values()))
        return 0.0

    study.optimize(objective, n_trials=space.grid_size)
    assert len(seen) == 18


def test_sampler_and_pruner_options_reach_optuna():
    space = parse_space(
        {"x": {"uniform": [0, 1]}, "sampler": {"random": {}}, "pruner": {"threshold": {"upper": 5.0}}, "seed": 1}
    )
    assert isinstance(space.build_sampler(), optuna.samplers.RandomSampler)
    pruner = space.build_pruner()
    assert isinstance(pruner, optuna.pruners.ThresholdPruner) and pruner._upper == 5.0
    worker_0, worker_1 = space.build_sampler(0), space.build_sampler(1)
    draws = [optuna.create_study(sampler=sampler).ask().suggest_float("x", 0, 1) for sampler in (worker_0, worker_1)]
    assert draws[0] != draws[1]  # workers of one seeded study draw with seed + worker index


@pytest.mark.parametrize(
    ("loaded", "message"),
    [
        ({"metric": "val/loss"}, "space.yaml: no parameters to search"),
        ({"a": {"lognormal": [1, 2]}}, "space.yaml: a: unknown range 'lognormal'; forms: uniform [low, high], "),
        ({"a": [1, 2]}, "space.yaml: a: give one range as {form: values}; forms: uniform"),
        ({"a": {"uniform": [2, 1]}}, "space.yaml: a: low 2 is above high 1"),
        ({"a": {"log_uniform": [0, 1]}}, "space.yaml: a: log_uniform needs low > 0, got 0"),
        ({"a": {"int": [1.5, 4]}}, "space.yaml: a: int takes integers, got [1.5, 4]"),
        ({"a": {"int": [1, 4, 0]}}, "space.yaml: a: step must be positive, got 0"),
        ({"a": {"uniform": ["x", 1]}}, "space.yaml: a: uniform takes [low, high] (numbers), got ['x', 1]"),
        ({"a": {"choice": [[1], 2]}}, "space.yaml: a: choice values must be numbers, strings, booleans or null"),
        ({"a": {"uniform": [0, 1]}, "direction": "up"}, "space.yaml: direction must be minimize or maximize, got 'up'"),
        ({"a": {"uniform": [0, 1]}, "sampler": "bayes"}, "space.yaml: unknown sampler 'bayes'; valid: tpe, random"),
        ({"a": {"uniform": [0, 1]}, "pruner": "early"}, "space.yaml: unknown pruner 'early'; valid: median, perc"),
        ({"a": {"uniform": [0, 1]}, "pruner": {"median": {"patience": 3}}}, "space.yaml: pruner median: "),
        ({"a": {"uniform": [0, 1]}, "pruner": "threshold"}, "space.yaml: pruner threshold: Either lower or upper"),
        ({"a": {"uniform": [0, 1]}, "sampler": "grid"}, "space.yaml: a: the grid sampler takes choice, int or"),
        ({"a": {"uniform": [0, 1]}, "seed": "one"}, "space.yaml: seed must be an integer, got 'one'"),
    ],
)
def test_mistakes_name_the_file_and_key_and_what_is_valid(loaded, message):
    with pytest.raises(SpaceError) as raised:
        parse_space(loaded, "space.yaml")
    assert str(raised.value).startswith(message)


def test_a_missing_or_broken_file_is_named(tmp_path):
    with pytest.raises(SpaceError, match=f"^{tmp_path / 'none.yaml'}: no such search space file$"):
        read_space(tmp_path / "none.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(SpaceError, match="list.yaml: expected a mapping of config keys to ranges, got list"):
        read_space(tmp_path / "list.yaml")


@pytest.mark.parametrize("value", [1e-5, 2.5e-4, 0.1, 3.0, 16, True, None, "cosine", [1, 2], 1e20])
def test_values_passed_to_fit_parse_back_as_themselves(value):
    assert yaml.safe_load(yaml_value(value)) == value
    assert type(yaml.safe_load(yaml_value(value))) is type(value)


def test_the_shipped_search_spaces_parse():
    from tests.helpers import CONFIGS

    spaces = sorted((CONFIGS / "tune").glob("*.yaml"))
    assert spaces
    for path in spaces:
        space = read_space(path)
        assert space.distributions and space.metric == "val/loss"
