"""``lightning-ft tune --config RECIPE.yaml --space SPACE.yaml --trials 20 [--storage URL] [--study NAME]``: every
other argument (``--config`` files, overrides) goes to each trial's `fit` unchanged, before the trial's values."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from lightning_ft.tune.report import finish_report
from lightning_ft.tune.space import SpaceError, read_space
from lightning_ft.tune.storage import sqlite_url
from lightning_ft.tune.study import StudyPlan, run_study

EPILOG = (
    "Every other argument (--config files, overrides such as --data.train FILE) is passed to each trial's `fit`, "
    "before the trial's values. SPACE.yaml maps config keys in the CLI's dotted form to ranges "
    "({log_uniform: [1.0e-5, 1.0e-3]}, {uniform: [a, b]}, {int: [a, b, step]}, {log_int: [a, b]}, "
    "{float: [a, b, step]}, {choice: [...]}) and may set metric (default val/loss), direction (minimize), sampler "
    "(tpe, random, qmc, grid), pruner (median, percentile, hyperband, successive_halving, threshold, none) and seed."
)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-ft tune",
        description="Search hyperparameters with Optuna: each trial is a `fit` run, pruned at validation when it "
        "falls behind; the study lives in a database, resumes where it stopped and takes several workers at once.",
        epilog=EPILOG,
        allow_abbrev=False,
    )
    parser.add_argument("--space", required=True, help="The search space YAML.")
    parser.add_argument("--trials", type=int, default=20, help="Size of the study, all workers together (20).")
    parser.add_argument("--study", help="Study name (default: the space file's name).")
    parser.add_argument("--directory", help="Where trials, the table, plot and best.yaml go (tune/STUDY).")
    parser.add_argument(
        "--storage", help="Optuna RDB URL or journal:PATH (sqlite:///DIRECTORY/study.db); journal: on NFS."
    )
    parser.add_argument("--timeout", type=float, help="Start no new trial after this many seconds.")
    parser.add_argument(
        "--worker",
        type=int,
        default=int(os.environ.get("SLURM_ARRAY_TASK_ID", 0)),
        help="This worker's index: with a seed in the space, it draws with seed + index ($SLURM_ARRAY_TASK_ID).",
    )
    return parser


def main(argv: list[str]) -> dict:
    options, fit_arguments = parser().parse_known_args(argv)
    if options.trials < 1:
        raise SystemExit(f"lightning-ft tune: --trials must be at least 1, got {options.trials}")
    if options.timeout is not None and options.timeout <= 0:
        raise SystemExit(f"lightning-ft tune: --timeout must be positive, got {options.timeout}")
    if "--config" not in fit_arguments and not any(argument.startswith("--config=") for argument in fit_arguments):
        raise SystemExit("lightning-ft tune: give the recipe with --config RECIPE.yaml")
    try:
        space = read_space(options.space)
    except SpaceError as error:
        raise SystemExit(f"lightning-ft tune: {error}") from None
    study = options.study or Path(options.space).stem
    directory = Path(options.directory or Path("tune") / study).resolve()
    plan = StudyPlan(
        space=space,
        fit_arguments=fit_arguments,
        trials=options.trials,
        storage=options.storage or sqlite_url(directory / "study.db"),
        study=study,
        directory=directory,
        timeout_s=options.timeout,
        worker=options.worker,
    )
    print(f"Study {study!r} in {plan.storage}: {plan.trials} trials of {space.metric} ({space.direction})")
    finished = run_study(plan)
    summary = finish_report(finished, space.metric, directory)
    print(json.dumps(summary))
    return summary
