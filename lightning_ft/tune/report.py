"""What a study leaves behind: the table of trials (printed and ``trials.csv``), parameter importances, the
optimisation history as a PNG, and the best trial's complete config as a YAML that `fit` runs as is."""

from __future__ import annotations

import csv
import io
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.table import Table

from lightning_ft.tune.study import counts, format_value

CONFIG_NAME = "config.yaml"  # what LightningCLI saves in a run's log directory


def study_rows(study: optuna.Study, metric: str) -> list[dict[str, Any]]:
    """One row per trial that counts towards the study, in trial order."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        if not counts(trial) or trial.state == TrialState.WAITING:
            continue
        value = trial.value if trial.state == TrialState.COMPLETE else _last_value(trial)
        rows.append(
            {
                "trial": trial.number,
                "state": trial.state.name.lower(),
                metric: value,
                **trial.params,
                "seconds": round(trial.duration.total_seconds(), 1) if trial.duration else None,
                "note": _note(trial),
            }
        )
    return rows


def _last_value(trial: FrozenTrial) -> float | None:
    return trial.intermediate_values[trial.last_step] if trial.last_step is not None else None


def _note(trial: FrozenTrial) -> str:
    if trial.state == TrialState.PRUNED:
        return f"pruned at step {trial.last_step}"
    if trial.state == TrialState.FAIL:
        return str(trial.user_attrs.get("fail_reason", ""))
    if "retry_of" in trial.user_attrs:
        return f"rerun of trial {trial.user_attrs['retry_of']}"
    return ""


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(buffer.getvalue().encode(), path)


def print_table(rows: list[dict[str, Any]], metric: str, best: int | None, console: Console) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    table = Table(title=f"Trials ({metric})")
    for column in columns:
        table.add_column(column.rsplit(".", 1)[-1] if "." in column else column)
    for row in rows:
        cells = ["" if row.get(column) is None else format_value(row.get(column)) for column in columns]
        table.add_row(*cells, style="bold" if row["trial"] == best else None)
    console.print(table)


def importances(study: optuna.Study) -> dict[str, float] | str:
    """fANOVA importance of each parameter over the completed trials, or why there is none."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return f"importances need 2 completed trials, the study has {len(complete)}"
    try:
        return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError) as error:
        return f"importances: {error}"


def plot_history(study: optuna.Study, path: Path) -> Path | str:
    """The optimisation history (each trial's value and the best so far) as a PNG, or why there is none."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return "no completed trial to plot"
    try:
        import matplotlib

        matplotlib.use("Agg")
        from optuna.visualization.matplotlib import plot_optimization_history
    except ImportError as error:
        return f'no plot: {error.name} is not installed (pip install "lightning-ft[tune]")'
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        axes = plot_optimization_history(study)
    buffer = io.BytesIO()
    axes.figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    matplotlib.pyplot.close(axes.figure)
    write_atomically(buffer.getvalue(), path)
    return path


def write_best_config(study: optuna.Study, metric: str, path: Path) -> Path | str:
    """The best trial's config as `fit` saved it, its run directory moved to ``<study dir>/best``."""
    try:
        best = study.best_trial
    except ValueError:
        return "no completed trial yet"
    log_dir = best.user_attrs.get("log_dir")
    source = Path(log_dir) / CONFIG_NAME if log_dir else None
    if source is None or not source.exists():
        return f"trial {best.number}'s config is missing ({source})"
    config = yaml.safe_load(source.read_text())
    config.setdefault("trainer", {})["default_root_dir"] = str(path.parent / "best")
    header = (
        f"# Best trial {best.number} of study {study.study_name}: {metric} {best.value:.6g} "
        f"({study.direction.name.lower()}).\n# {_values_line(best)}\n# Run: lightning-ft fit --config {path}\n"
    )
    write_atomically((header + yaml.safe_dump(config, sort_keys=False)).encode(), path)
    return path


def _values_line(trial: FrozenTrial) -> str:
    return ", ".join(f"{key}: {value}" for key, value in trial.params.items())


def write_atomically(content: bytes, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(content)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def finish_report(study: optuna.Study, metric: str, directory: Path, console: Console | None = None) -> dict[str, Any]:
    """Prints the table and importances, writes trials.csv, history.png and best.yaml; returns the summary."""
    console = console or Console()
    rows = study_rows(study, metric)
    complete = [row for row in rows if row["state"] == "complete" and not _nan(row[metric])]
    best = study.best_trial.number if complete else None
    print_table(rows, metric, best, console)
    write_csv(rows, directory / "trials.csv")
    weights = importances(study)
    if isinstance(weights, dict):
        console.print("Parameter importances: " + ", ".join(f"{key} {value:.2f}" for key, value in weights.items()))
    else:
        console.print(weights)
    plot = plot_history(study, directory / "history.png")
    best_config = write_best_config(study, metric, directory / "best.yaml")
    summary = {
        "study": study.study_name,
        "trials": len(rows),
        **{state: sum(row["state"] == state for row in rows) for state in ("complete", "pruned", "fail")},
        "best_trial": best,
        "best_value": study.best_value if best is not None else None,
        "best_config": str(best_config) if isinstance(best_config, Path) else None,
        "history_plot": str(plot) if isinstance(plot, Path) else None,
        "trials_csv": str(directory / "trials.csv"),
    }
    for note in (plot, best_config):
        if isinstance(note, str):
            console.print(note)
    return summary


def _nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)
