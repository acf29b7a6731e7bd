"""`lightning-ft tune`: an Optuna study whose trials are `fit` runs.

Each trial is its own `lightning-ft fit` process (the recipe, the user's overrides, then the trial's values), so a
trial that runs out of memory or crashes fails alone, strategies that launch processes (DDP) work as in `fit`, and the
trial's directory holds what any run leaves: its config, logs, checkpoints and export. The study lives in a database,
so a study that was stopped resumes where it stopped (a trial cut short is run again with the same values) and several
processes or Slurm array tasks work on one study at once. ``--trials N`` is the study's size, not this process's
share: every worker stops once the study holds N trials that ran to an end (complete, pruned or failed)."""

from __future__ import annotations

import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from lightning_ft.tune.space import SearchSpace
from lightning_ft.tune.storage import open_storage
from lightning_ft.tune.trial import TRIAL_ENVIRONMENT, TrialHandle, TrialOutcome

EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\w*: \S")
FAILURES_BEFORE_GIVING_UP = 3  # in a row, while no trial of the study has ever completed: the recipe itself is wrong


class TrialFailed(Exception):
    """A trial that ended without a metric; the reason is stored with the trial."""


@dataclass(frozen=True)
class StudyPlan:
    space: SearchSpace
    fit_arguments: list[str]  # --config files and overrides, as `fit` takes them
    trials: int
    storage: str
    study: str
    directory: Path
    timeout_s: float | None = None
    worker: int = 0


def open_study(plan: StudyPlan, heartbeat: bool = True) -> optuna.Study:
    return optuna.create_study(
        study_name=plan.study,
        storage=open_storage(plan.storage, heartbeat=heartbeat),
        sampler=plan.space.build_sampler(plan.worker),
        pruner=plan.space.build_pruner(),
        direction=plan.space.direction,
        load_if_exists=True,
    )


def run_study(plan: StudyPlan, report: Callable[[str], None] = print) -> optuna.Study:
    """Runs trials until the study holds ``plan.trials`` of them (or ``timeout_s`` passes), and returns the study."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # each trial's outcome is reported below, in one line
    study = open_study(plan)
    _check_same_search(study, plan)
    target = min(plan.trials, plan.space.grid_size or plan.trials)
    started, failures_in_a_row = time.monotonic(), 0
    while True:
        requeue_interrupted(study, report)
        if counted_trials(study, include_waiting=False) >= target:
            break
        if plan.timeout_s is not None and time.monotonic() - started > plan.timeout_s:
            report(f"Stopping: --timeout {plan.timeout_s:g} s reached")
            break
        objective = TrialObjective(plan, target)
        study.optimize(objective, n_trials=1, catch=(TrialFailed,))
        trial = next(t for t in study.get_trials(deepcopy=False) if t.number == objective.number)
        if trial.user_attrs.get("surplus"):
            continue
        report(describe(trial, plan.space.metric))
        ran_to_an_end = any(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.get_trials())
        failures_in_a_row = 0 if trial.state != TrialState.FAIL else failures_in_a_row + 1
        if failures_in_a_row >= FAILURES_BEFORE_GIVING_UP and not ran_to_an_end:
            reason = trial.user_attrs.get("fail_reason", "")
            raise SystemExit(f"lightning-ft tune: {failures_in_a_row} trials failed in a row, none ran: {reason}")
    return study


class TrialObjective:
    """One trial: draw the values, run `fit` with them in the trial's directory, return the metric."""

    def __init__(self, plan: StudyPlan, target: int) -> None:
        self.plan, self.target = plan, target
        self.number: int | None = None

    def __call__(self, trial: optuna.Trial) -> float:
        self.number = trial.number
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        if self._is_surplus(trial):
            trial.set_user_attr("surplus", True)
            raise TrialFailed(f"not run: the study already holds {self.target} trials")
        values = self.plan.space.suggest(trial)
        directory = self.plan.directory / f"trial-{trial.number:04d}"
        directory.mkdir(parents=True, exist_ok=True)
        trial.set_user_attr("directory", str(directory))
        outcome = self._fit(trial, values, directory)
        if outcome.log_dir:
            trial.set_user_attr("log_dir", outcome.log_dir)
        if outcome.value is None:
            logged = ", ".join(outcome.logged_metrics)
            self._fail(trial, f"{self.plan.space.metric} was never logged (logged: {logged})")
        if outcome.pruned_at is not None:
            raise optuna.TrialPruned(f"pruned at step {outcome.pruned_at}")
        assert outcome.value is not None
        if outcome.value != outcome.value or abs(outcome.value) == float("inf"):
            self._fail(trial, f"{self.plan.space.metric} is {outcome.value}")
        return outcome.value

    def _is_surplus(self, trial: optuna.Trial) -> bool:
        """Whether other workers started the study's last trials while this one was asking for a new one."""
        if "retry_of" in trial.user_attrs:
            return False
        earlier = [t for t in trial.study.get_trials(deepcopy=False) if t.number < trial.number]
        return sum(counts(t) and t.state != TrialState.WAITING for t in earlier) >= self.target

    def _fit(self, trial: optuna.Trial, values: dict[str, Any], directory: Path) -> TrialOutcome:
        result = directory / "outcome.json"
        result.unlink(missing_ok=True)
        handle = TrialHandle(
            storage=self.plan.storage,
            study=self.plan.study,
            trial_id=trial._trial_id,
            number=trial.number,
            metric=self.plan.space.metric,
            pruner=self.plan.space.pruner,
            result=str(result),
        )
        command = [sys.executable, "-m", "lightning_ft.cli", "fit", *self.plan.fit_arguments]
        command += [f"--{key}={yaml_value(value)}" for key, value in values.items()]
        command += [f"--trainer.default_root_dir={directory}"]
        environment = {**os.environ, TRIAL_ENVIRONMENT: handle.to_environment()}
        log = directory / "fit.log"
        with log.open("w") as output:
            process = subprocess.run(
                command, stdout=output, stderr=subprocess.STDOUT, env=environment, preexec_fn=_die_with_parent
            )
        if process.returncode != 0 or not result.exists():
            self._fail(trial, f"fit exited with status {process.returncode}: {last_error_line(log)} (log: {log})")
        return TrialOutcome.read(result)

    @staticmethod
    def _fail(trial: optuna.Trial, reason: str) -> None:
        trial.set_user_attr("fail_reason", reason)
        raise TrialFailed(reason)


def counts(trial: FrozenTrial) -> bool:
    """Whether a trial counts towards the study's size: not one cut short (it is run again) nor a surplus one."""
    return not (trial.state == TrialState.FAIL and (trial.user_attrs.get("interrupted") or _unexplained(trial)))


def _unexplained(trial: FrozenTrial) -> bool:
    # Failed without a reason: its worker stopped (Ctrl-C, a lost node) or it was surplus.
    return "fail_reason" not in trial.user_attrs or bool(trial.user_attrs.get("surplus"))


def counted_trials(study: optuna.Study, include_waiting: bool = True) -> int:
    return sum(
        counts(trial) and (include_waiting or trial.state != TrialState.WAITING)
        for trial in study.get_trials(deepcopy=False)
    )


def requeue_interrupted(study: optuna.Study, report: Callable[[str], None] = print) -> None:
    """Marks the running trials of dead workers on this machine as failed, then queues every trial cut short (by
    this, Ctrl-C, or an expired heartbeat on another node) to run again with the same values, once."""
    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = trial.user_attrs.get("pid")
        if trial.user_attrs.get("host") == host and isinstance(pid, int) and not _alive(pid):
            study._storage.set_trial_user_attr(trial._trial_id, "interrupted", f"its worker (pid {pid}) stopped")
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    trials = study.get_trials(deepcopy=False)
    retried = {trial.user_attrs.get("retry_of") for trial in trials}
    for trial in trials:
        if trial.state == TrialState.FAIL and not counts(trial) and not trial.user_attrs.get("surplus"):
            if trial.number not in retried and trial.params:
                study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
                report(f"Trial {trial.number} was cut short: it runs again with the same values")


def _check_same_search(study: optuna.Study, plan: StudyPlan) -> None:
    """A study resumed with another search space or metric would mix incomparable trials."""
    recorded = study.user_attrs.get("search")
    current = {"metric": plan.space.metric, "parameters": sorted(plan.space.distributions)}
    if recorded is None:
        study.set_user_attr("search", current)
    elif recorded != current:
        raise SystemExit(
            f"lightning-ft tune: study {plan.study!r} in {plan.storage} searched {recorded}, not {current}: "
            "give another --study name"
        )


def describe(trial: FrozenTrial, metric: str) -> str:
    seconds = trial.duration.total_seconds() if trial.duration else 0.0
    values = ", ".join(f"{key.rsplit('.', 1)[-1]}={format_value(value)}" for key, value in trial.params.items())
    if trial.state == TrialState.COMPLETE:
        outcome = f"{metric} {trial.value:.6g}"
    elif trial.state == TrialState.PRUNED:
        last = trial.intermediate_values[trial.last_step] if trial.last_step is not None else None
        outcome = f"pruned at step {trial.last_step}" + (f" ({metric} {last:.6g})" if last is not None else "")
    else:
        outcome = f"failed: {trial.user_attrs.get('fail_reason') or trial.user_attrs.get('interrupted', 'stopped')}"
    return f"Trial {trial.number} ({values}): {outcome} [{seconds:.0f} s]"


def format_value(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def yaml_value(value: Any) -> str:
    """A value as the CLI parses it back: YAML flow style, floats with a decimal point (``1.0e-05``, not ``1e-05``,
    which YAML reads as a string)."""
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()


def last_error_line(log: Path) -> str:
    """The line of a failed run's log that says why: a usage error's ``error:`` line, else the first exception line
    of the traceback (the root cause, which Python prints first in a chain), else the last line."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    usage = [line for line in lines if line.startswith("error:") or ": error:" in line]
    exceptions = [line for line in lines if EXCEPTION_LINE.match(line)]
    reason = (usage or exceptions or lines or ["no output"])[0 if usage or exceptions else -1]
    return reason[:500]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _die_with_parent() -> None:
    """In the trial's process: end it when the tune process dies, even by SIGKILL (Linux; elsewhere a no-op)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass
