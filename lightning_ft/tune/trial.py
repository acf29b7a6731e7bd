"""The `fit` side of a tuning trial. `lightning-ft tune` runs each trial as a plain `fit` process and hands it the
trial through the ``LIGHTNING_FT_TRIAL`` environment variable; `fit` then adds `TrialReporter`, which reports the
metric to the study at every validation, stops the run when the pruner says so, and leaves the outcome in a small JSON
file for the tune process."""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import optuna
from optuna_integration import PyTorchLightningPruningCallback

from lightning_ft.tune.space import build_pruner
from lightning_ft.tune.storage import open_storage

TRIAL_ENVIRONMENT = "LIGHTNING_FT_TRIAL"


@dataclass(frozen=True)
class TrialHandle:
    storage: str
    study: str
    trial_id: int
    number: int
    metric: str
    pruner: tuple[str, dict[str, Any]]
    result: str  # where the fit process writes its outcome

    def to_environment(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_environment(cls) -> TrialHandle | None:
        text = os.environ.get(TRIAL_ENVIRONMENT)
        if not text:
            return None
        fields = json.loads(text)
        return cls(**{**fields, "pruner": tuple(fields["pruner"])})

    def open_trial(self) -> optuna.trial.Trial:
        pruner = build_pruner(*self.pruner)
        study = optuna.load_study(study_name=self.study, storage=open_storage(self.storage, heartbeat=False))
        study.pruner = pruner
        return optuna.trial.Trial(study, self.trial_id)


@dataclass(frozen=True)
class TrialOutcome:
    value: float | None  # the metric's last value, None when it was never logged
    step: int
    pruned_at: int | None
    log_dir: str | None
    logged_metrics: list[str]

    @classmethod
    def read(cls, path: Path) -> TrialOutcome:
        return cls(**json.loads(path.read_text()))


class TrialReporter(PyTorchLightningPruningCallback):
    """Optuna's Lightning pruning callback, reporting at the optimiser step of each validation instead of the epoch
    (fine-tuning validates several times in one epoch, often in the only one, and Optuna keeps one report per step),
    and ending a pruned run like any early stop rather than raising out of `fit`."""

    def __init__(self, handle: TrialHandle) -> None:
        super().__init__(handle.open_trial(), monitor=handle.metric)
        self.handle = handle
        self.pruned_at: int | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        prune = False
        if value is not None and trainer.is_global_zero:
            step = trainer.global_step
            if step not in self._trial.storage.get_trial(self._trial._trial_id).intermediate_values:
                self._trial.report(float(value), step=step)
            prune = not math.isfinite(float(value)) or self._trial.should_prune()
        if trainer.strategy.broadcast(prune):
            trainer.should_stop = True
            self.pruned_at = trainer.global_step

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        value = trainer.callback_metrics.get(self.monitor)
        outcome = TrialOutcome(
            value=None if value is None else float(value),
            step=trainer.global_step,
            pruned_at=self.pruned_at,
            log_dir=trainer.log_dir,
            logged_metrics=sorted(trainer.callback_metrics),
        )
        write_json_atomically(asdict(outcome), Path(self.handle.result))


def write_json_atomically(payload: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w") as file:
            json.dump(payload, file)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def trial_callbacks() -> list[L.Callback]:
    """The callbacks `fit` adds when it runs as a tuning trial (none otherwise)."""
    handle = TrialHandle.from_environment()
    return [] if handle is None else [TrialReporter(handle)]
