"""The search space file of `lightning-ft tune`: config keys in the CLI's dotted form with their ranges, the metric to
optimise, and the sampler and pruner. Every problem names the file and the key, and lists what is valid.

```yaml
metric: val/loss            # any logged metric (default val/loss)
direction: minimize         # or maximize
sampler: tpe                # tpe | random | grid | qmc, or {tpe: {n_startup_trials: 5}}
pruner: median              # median | percentile | hyperband | successive_halving | threshold | none, or {name: {...}}
seed: 0                     # the sampler's seed (default: none, so that several workers draw different trials)
model.optimizer.init_args.lr: {log_uniform: [1.0e-5, 1.0e-3]}
model.peft.init_args.r: {choice: [8, 16, 64]}
trainer.max_steps: {int: [50, 400, 50]}
```
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import optuna
import yaml

from lightning_ft.errors import UsageError

SETTINGS = ("metric", "direction", "sampler", "pruner", "seed")
RANGE_FORMS = {
    "uniform": "[low, high]",
    "log_uniform": "[low, high]",
    "float": "[low, high, step]",
    "int": "[low, high] or [low, high, step]",
    "log_int": "[low, high]",
    "choice": "[value, value, ...]",
}
SAMPLERS = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "qmc": optuna.samplers.QMCSampler,
    "grid": optuna.samplers.GridSampler,
}
PRUNERS = {
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "threshold": optuna.pruners.ThresholdPruner,
    "none": optuna.pruners.NopPruner,
}
Direction = Literal["minimize", "maximize"]


class SpaceError(UsageError):
    """A search space file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class SearchSpace:
    """What to search (``distributions``: config key -> Optuna distribution) and how."""

    distributions: dict[str, optuna.distributions.BaseDistribution]
    metric: str = "val/loss"
    direction: Direction = "minimize"
    sampler: tuple[str, dict[str, Any]] = ("tpe", {})
    pruner: tuple[str, dict[str, Any]] = ("median", {})
    seed: int | None = None
    source: str = "<space>"
    grid: dict[str, list[Any]] = field(default_factory=dict)

    def suggest(self, trial: optuna.trial.BaseTrial) -> dict[str, Any]:
        """One value for every key, drawn through ``trial`` (so the sampler sees the distributions)."""
        return {key: _suggest(trial, key, distribution) for key, distribution in self.distributions.items()}

    def build_sampler(self, worker: int = 0) -> optuna.samplers.BaseSampler:
        """The sampler; with a seed, worker ``k`` of a study run by several processes draws with ``seed + k``."""
        name, options = self.sampler
        seed = None if self.seed is None else self.seed + worker
        if name == "grid":
            return optuna.samplers.GridSampler(self.grid, seed=seed, **options)
        return _construct(SAMPLERS[name], options, f"{self.source}: sampler {name}", seed=seed)

    def build_pruner(self) -> optuna.pruners.BasePruner:
        return build_pruner(*self.pruner, where=f"{self.source}: pruner")

    @property
    def grid_size(self) -> int | None:
        return math.prod(len(values) for values in self.grid.values()) if self.sampler[0] == "grid" else None


def build_pruner(name: str, options: dict[str, Any], where: str = "pruner") -> optuna.pruners.BasePruner:
    return _construct(PRUNERS[name], options, f"{where} {name}")


def read_space(path: str | Path) -> SearchSpace:
    source = str(path)
    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpaceError(f"{source}: no such search space file") from None
    except UnicodeDecodeError as error:
        raise SpaceError(f"{source}: not UTF-8 text (byte offset {error.start})") from None
    except yaml.YAMLError as error:
        raise SpaceError(f"{source}: not valid YAML ({' '.join(str(error).split())})") from None
    if not isinstance(loaded, dict):
        raise SpaceError(f"{source}: expected a mapping of config keys to ranges, got {type(loaded).__name__}")
    return parse_space(loaded, source)


def parse_space(loaded: dict[str, Any], source: str = "<space>") -> SearchSpace:
    ranges = {str(key): value for key, value in loaded.items() if key not in SETTINGS}
    if not ranges:
        raise SpaceError(f"{source}: no parameters to search (keys like model.optimizer.init_args.lr)")
    distributions = {key: _distribution(key, value, source) for key, value in ranges.items()}
    direction = loaded.get("direction", "minimize")
    if direction not in ("minimize", "maximize"):
        raise SpaceError(f"{source}: direction must be minimize or maximize, got {direction!r}")
    metric = loaded.get("metric", "val/loss")
    if not isinstance(metric, str) or not metric:
        raise SpaceError(f"{source}: metric must be the name of a logged metric, e.g. val/loss")
    seed = loaded.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise SpaceError(f"{source}: seed must be an integer, got {seed!r}")
    sampler = _named_choice(loaded.get("sampler", "tpe"), SAMPLERS, "sampler", source)
    pruner = _named_choice(loaded.get("pruner", "median"), PRUNERS, "pruner", source)
    grid = {}
    if sampler[0] == "grid":
        grid = {key: _grid_values(key, distribution, source) for key, distribution in distributions.items()}
    space = SearchSpace(distributions, metric, direction, sampler, pruner, seed, source, grid)
    space.build_sampler()  # options the sampler or pruner does not take fail here, before any trial
    space.build_pruner()
    return space


def _distribution(key: str, value: Any, source: str) -> optuna.distributions.BaseDistribution:
    where = f"{source}: {key}"
    if not isinstance(value, dict) or len(value) != 1:
        raise SpaceError(f"{where}: give one range as {{form: values}}; forms: {_forms()}")
    ((form, bounds),) = value.items()
    if form not in RANGE_FORMS:
        raise SpaceError(f"{where}: unknown range {form!r}; forms: {_forms()}")
    if not isinstance(bounds, list) or not bounds:
        raise SpaceError(f"{where}: {form} takes {RANGE_FORMS[form]}, got {bounds!r}")
    if form == "choice":
        if any(isinstance(item, dict | list) for item in bounds):
            raise SpaceError(f"{where}: choice values must be numbers, strings, booleans or null")
        return optuna.distributions.CategoricalDistribution(bounds)
    numbers = [item for item in bounds if isinstance(item, int | float) and not isinstance(item, bool)]
    lengths = {"int": (2, 3), "float": (3,)}.get(form, (2,))
    if len(numbers) != len(bounds) or len(bounds) not in lengths:
        raise SpaceError(f"{where}: {form} takes {RANGE_FORMS[form]} (numbers), got {bounds!r}")
    low, high = bounds[0], bounds[1]
    if not low <= high:
        raise SpaceError(f"{where}: low {low} is above high {high}")
    if form.startswith("log") and low <= 0:
        raise SpaceError(f"{where}: {form} needs low > 0, got {low}")
    if form in ("int", "log_int"):
        if not all(isinstance(item, int) for item in bounds):
            raise SpaceError(f"{where}: {form} takes integers, got {bounds!r}")
        step = bounds[2] if len(bounds) == 3 else 1
        if step <= 0:
            raise SpaceError(f"{where}: step must be positive, got {step}")
        return optuna.distributions.IntDistribution(low, high, log=form == "log_int", step=step)
    step = float(bounds[2]) if form == "float" else None
    if step is not None and step <= 0:
        raise SpaceError(f"{where}: step must be positive, got {step}")
    return optuna.distributions.FloatDistribution(float(low), float(high), log=form == "log_uniform", step=step)


def _suggest(trial: optuna.trial.BaseTrial, key: str, distribution: optuna.distributions.BaseDistribution) -> Any:
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return trial.suggest_categorical(key, distribution.choices)
    if isinstance(distribution, optuna.distributions.IntDistribution):
        return trial.suggest_int(key, distribution.low, distribution.high, step=distribution.step, log=distribution.log)
    assert isinstance(distribution, optuna.distributions.FloatDistribution)
    low, high, step, log = distribution.low, distribution.high, distribution.step, distribution.log
    return trial.suggest_float(key, low, high, step=step, log=log)


def _grid_values(key: str, distribution: optuna.distributions.BaseDistribution, source: str) -> list[Any]:
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return list(distribution.choices)
    if isinstance(distribution, optuna.distributions.IntDistribution) and not distribution.log:
        return list(range(distribution.low, distribution.high + 1, distribution.step))
    if isinstance(distribution, optuna.distributions.FloatDistribution) and distribution.step is not None:
        count = round((distribution.high - distribution.low) / distribution.step)
        return [distribution.low + index * distribution.step for index in range(count + 1)]
    raise SpaceError(f"{source}: {key}: the grid sampler takes choice, int or float-with-step ranges only")


def _named_choice(value: Any, valid: dict[str, Any], what: str, source: str) -> tuple[str, dict[str, Any]]:
    name, options = value, {}
    if isinstance(value, dict) and len(value) == 1:
        ((name, options),) = value.items()
        options = options or {}
    if not isinstance(name, str) or name not in valid or not isinstance(options, dict):
        raise SpaceError(f"{source}: unknown {what} {value!r}; valid: {', '.join(valid)} (or {{name: {{options}}}})")
    return name, options


def _construct(cls: type, options: dict[str, Any], where: str, **fixed: Any) -> Any:
    if "seed" in fixed and "seed" not in _parameters(cls):
        fixed.pop("seed")
    try:
        return cls(**options, **fixed)
    except (TypeError, ValueError) as error:
        raise SpaceError(f"{where}: {error}; options: {', '.join(sorted(_parameters(cls)))}") from None


def _parameters(cls: type) -> set[str]:
    return set(inspect.signature(cls).parameters) - {"self"}


def _forms() -> str:
    return ", ".join(f"{form} {shape}" for form, shape in RANGE_FORMS.items())
