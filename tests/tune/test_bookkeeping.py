"""How a study counts and recovers its trials, on a real SQLite study with hand-made trials: a trial whose worker on
this machine died is marked interrupted and queued again with its values, once; surplus and interrupted trials do
not count towards the study's size; a failed run's log gives its reason in one line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from tests.conftest import require

optuna = require("optuna", "lightning-ft tune needs the tune extra")

from optuna.trial import TrialState  # noqa: E402

from lightning_ft.tune.storage import open_storage, sqlite_url  # noqa: E402
from lightning_ft.tune.study import counted_trials, last_error_line, requeue_interrupted  # noqa: E402

LR = optuna.distributions.FloatDistribution(1e-5, 1e-2, log=True)


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def add(study: optuna.Study, state: TrialState, lr: float, **user_attrs) -> None:
    value = 1.0 if state == TrialState.COMPLETE else None
    trial = optuna.create_trial(
        state=state, value=value, params={"lr": lr}, distributions={"lr": LR}, user_attrs=user_attrs
    )
    if state == TrialState.PRUNED:
        trial = optuna.create_trial(
            state=state,
            params={"lr": lr},
            distributions={"lr": LR},
            user_attrs=user_attrs,
            intermediate_values={2: 9.0},
        )
    study.add_trial(trial)


def test_a_dead_workers_trial_is_queued_again_once_and_counts_only_once(tmp_path):
    storage = open_storage(sqlite_url(tmp_path / "study.db"))
    study = optuna.create_study(study_name="s", storage=storage)
    host = socket.gethostname()
    add(study, TrialState.COMPLETE, 1e-4, host=host, pid=dead_pid())
    add(study, TrialState.PRUNED, 1e-2)
    add(study, TrialState.FAIL, 2e-3, fail_reason="fit exited with status 1: ValueError: r must be positive")
    add(study, TrialState.RUNNING, 3e-4, host=host, pid=dead_pid())  # its worker was killed
    add(study, TrialState.RUNNING, 5e-4, host=host, pid=os.getpid())  # a live worker's
    add(study, TrialState.RUNNING, 7e-4, host="another-node", pid=1)  # left to its heartbeat
    add(study, TrialState.FAIL, 8e-4, surplus=True, fail_reason="not run: the study already holds 4 trials")
    add(study, TrialState.FAIL, 9e-4)  # Ctrl-C: failed by Optuna, no reason
    assert counted_trials(study) == 6  # complete, pruned, failed with a reason, three running (as far as it knows)
    reports = []
    requeue_interrupted(study, reports.append)
    trials = study.get_trials()
    assert [trial.state for trial in trials[:8]] == [
        TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.FAIL,
        TrialState.RUNNING, TrialState.RUNNING, TrialState.FAIL, TrialState.FAIL,
    ]  # fmt: skip
    assert trials[3].user_attrs["interrupted"] == f"its worker (pid {trials[3].user_attrs['pid']}) stopped"
    queued = trials[8:]
    assert [(trial.state, trial.user_attrs, trial.system_attrs["fixed_params"]) for trial in queued] == [
        (TrialState.WAITING, {"retry_of": 3}, {"lr": 3e-4}),
        (TrialState.WAITING, {"retry_of": 7}, {"lr": 9e-4}),
    ]
    assert reports == [
        "Trial 3 was cut short: it runs again with the same values",
        "Trial 7 was cut short: it runs again with the same values",
    ]
    # complete, pruned, failed with a reason, two running, two queued; not the interrupted nor the surplus ones
    assert counted_trials(study) == 7 and counted_trials(study, include_waiting=False) == 5
    requeue_interrupted(study, reports.append)
    assert len(study.get_trials()) == 10 and len(reports) == 2  # queued once only


def test_a_failed_runs_reason_is_the_root_cause_or_the_usage_error(tmp_path):
    log = tmp_path / "fit.log"
    log.write_text(
        'Seed set to 0\nTraceback (most recent call last):\n  File "x.py", line 1\n'
        "ValueError: Give either `val` (a file) or `val_fraction`, not both.\n\n"
        "The above exception was the direct cause of the following exception:\n\nTraceback (most recent call last):\n"
        "ValueError: Does not validate against any of the Union subtypes\nSubtypes: [...]\n})))\n"
    )
    assert last_error_line(log) == "ValueError: Give either `val` (a file) or `val_fraction`, not both."
    log.write_text("usage: lightning-ft [-h] ...\nerror: Parser key \"model\": unknown key 'lrr'\n")
    assert last_error_line(log) == "error: Parser key \"model\": unknown key 'lrr'"
    log.write_text("Killed\n")
    assert last_error_line(log) == "Killed"
    log.write_text("")
    assert last_error_line(log) == "no output"


def test_workers_opening_a_new_database_together_all_get_it(tmp_path):
    """Six workers open one new SQLite study database at the same moment (a SLURM array starting): without the retry
    all but one failed with 'table studies already exists' or a duplicate schema version row."""
    import threading

    url = sqlite_url(tmp_path / "study.db")
    start = threading.Barrier(6)
    opened, failures = [], []

    def worker() -> None:
        start.wait()
        try:
            storage = open_storage(url, heartbeat=False)
            opened.append(optuna.create_study(storage=storage, study_name="s", load_if_exists=True).study_name)
        except Exception as error:  # noqa: BLE001 - collected for the assertion
            failures.append(error)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == [] and opened == ["s"] * 6
    assert [study.study_name for study in optuna.get_all_study_summaries(open_storage(url))] == ["s"]
