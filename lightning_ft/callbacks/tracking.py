"""`TrackingReport`: the run's resolved config, dataset report, Optuna trial and export path in MLflow and W&B."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import Logger, MLFlowLogger, WandbLogger

from lightning_ft.callbacks.export import HuggingFaceExport
from lightning_ft.errors import UsageError

TRIAL_VARIABLE = "LIGHTNING_FT_TRIAL"  # {"study": NAME, "number": N}, set by `lightning-ft tune` for each trial
ARTIFACT_FOLDER = "lightning_ft"  # W&B keeps its own config.yaml in a run's files


class TrackingReport(Callback):
    """Records what a run was, in every MLflow and W&B logger of the trainer (other loggers are left alone).

    When fit starts: the resolved config (what LightningCLI saves as ``config.yaml``) as the file
    ``lightning_ft/config.yaml``; the dataset report as ``data/<split>/{records,kept,dropped}`` params (W&B: config
    entries) and ``lightning_ft/dataset_report.json``, which adds every status count and the dropped records' numbers;
    with ``LIGHTNING_FT_TRIAL`` set, the tags ``optuna_study`` and ``optuna_trial``. When fit ends: the tag
    ``export_path``, the absolute path of the last Hugging Face export. MLflow gets params, tags and artifacts; W&B
    gets config entries, summary values and files in the run's directory.
    """

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trackers = tracked_runs(trainer)
        if not trackers:
            return
        config = resolved_config(trainer)
        report = dataset_report(trainer.datamodule)
        trial = optuna_trial()
        counts = {
            "data": {
                safe_key(split): {key: entry[key] for key in ("records", "kept", "dropped")}
                for split, entry in report.items()
            }
        }
        for logger, run in trackers:
            if config is not None:
                run.save_file("config.yaml", config)
            if report:
                logger.log_hyperparams(counts)
                run.save_file("dataset_report.json", json.dumps(report, indent=2))
            if trial:
                run.set_tags(trial)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        export = next((callback for callback in trainer.callbacks if isinstance(callback, HuggingFaceExport)), None)
        if export is None or export.last_export is None:
            return
        for _, run in tracked_runs(trainer):
            run.set_tags({"export_path": str(Path(export.last_export).resolve())})


class MLflowRun:
    """An MLflow run: files become artifacts, tags stay tags."""

    def __init__(self, logger: MLFlowLogger) -> None:
        self.client, self.run_id = logger.experiment, logger.run_id

    def save_file(self, name: str, text: str) -> None:
        self.client.log_text(self.run_id, text, f"{ARTIFACT_FOLDER}/{name}")

    def set_tags(self, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)


class WandbRun:
    """A W&B run: files go into the run's directory, tags become summary values (W&B tags are bare labels)."""

    def __init__(self, logger: WandbLogger) -> None:
        self.run = logger.experiment

    def save_file(self, name: str, text: str) -> None:
        path = Path(self.run.dir) / ARTIFACT_FOLDER / name  # files in the run's directory are synced with the run
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def set_tags(self, tags: dict[str, str]) -> None:
        self.run.summary.update(tags)


def tracked_runs(trainer: L.Trainer) -> list[tuple[Logger, MLflowRun | WandbRun]]:
    """The trainer's MLflow and W&B loggers with their runs, on the global-zero process (none elsewhere)."""
    if not trainer.is_global_zero:
        return []
    runs: list[tuple[Logger, MLflowRun | WandbRun]] = []
    for logger in trainer.loggers:
        if isinstance(logger, MLFlowLogger):
            runs.append((logger, MLflowRun(logger)))
        elif isinstance(logger, WandbLogger):
            runs.append((logger, WandbRun(logger)))
    return runs


def resolved_config(trainer: L.Trainer) -> str | None:
    """The YAML LightningCLI's `SaveConfigCallback` writes as ``config.yaml``; None outside LightningCLI."""
    saver = next((callback for callback in trainer.callbacks if isinstance(callback, SaveConfigCallback)), None)
    return None if saver is None else saver.parser.dump(saver.config, skip_none=False)


def dataset_report(datamodule: L.LightningDataModule | None) -> dict[str, dict[str, Any]]:
    """``split -> {records, kept, dropped, statuses, dropped_records}`` from a `TokenizedData`'s ``stats`` and
    ``dropped_places`` (``dropped_records``: status -> where each dropped record is, ``file:line`` or ``file record
    N``); empty for other data modules."""
    stats: dict[str, dict[str, int]] = getattr(datamodule, "stats", {})
    dropped: dict[str, dict[str, list[str]]] = getattr(datamodule, "dropped_places", {})
    report = {}
    for split, counts in stats.items():
        numbers = dropped.get(split, {})
        removed = sum(len(records) for records in numbers.values())
        report[split] = {
            "records": counts["records"],
            "kept": counts["records"] - removed,
            "dropped": removed,
            "statuses": {status: count for status, count in counts.items() if status != "records"},
            "dropped_records": numbers,
        }
    return report


def optuna_trial() -> dict[str, str]:
    """``{optuna_study, optuna_trial}`` from ``LIGHTNING_FT_TRIAL``; empty when it is not set."""
    value = os.environ.get(TRIAL_VARIABLE)
    if not value:
        return {}
    try:
        trial = json.loads(value)
        return {"optuna_study": str(trial["study"]), "optuna_trial": str(int(trial["number"]))}
    except (ValueError, KeyError, TypeError) as error:
        raise UsageError(f'{TRIAL_VARIABLE} must be a JSON object with "study" and "number", got {value!r}') from error


def safe_key(split: str) -> str:
    """A split name as a param name MLflow accepts (a mix's splits are named ``train:<path>``)."""
    return re.sub(r"[^\w./ :-]", "_", split)
