"""`lightning-ft tune` end to end on the tiny model, each study its own process as users run it: trials pruned by the
pruner at validation, a study killed after two trials resumed without repeating them, two workers sharing one study,
a failing trial recorded with its reason while the study goes on, and the best config reproducing its trial's metric
with `fit`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, require
from tests.helpers import write_jsonl

optuna = require("optuna", "lightning-ft tune needs the tune extra")
require("optuna_integration", "lightning-ft tune needs the tune extra")

from lightning_ft.tune.report import study_rows  # noqa: E402
from lightning_ft.tune.storage import open_storage  # noqa: E402

WORDS = ["hello", "world", "autumn", "leaves", "quiet", "pond", "paris", "france", "metres", "haiku", "tea", "sun"]
STUDY_LIMIT_S = 900
# At lr 30+ Adam's first update sends the loss to ~165 and every later step's gradients are not finite, so they are
# skipped (--model.on_non_finite skip): at the first validation (step 2) such a run still scores about what the
# untrained model does (ln 400 = 5.99), while lr 1e-3 and 3e-3 have brought it to 5.93-5.96: the threshold between
# prunes exactly the bad rates there (seeded, CPU: the same values every run).
GOOD_LRS, BAD_LRS = [1.0e-3, 3.0e-3], [30.0, 50.0]
THRESHOLD = 5.97


def data(directory: Path) -> tuple[Path, Path]:
    records = [{"instruction": f"Say {w} {i} times.", "output": f"{w} " * (i % 4 + 1)} for i, w in enumerate(WORDS)]
    return write_jsonl(directory / "train.jsonl", records * 2), write_jsonl(directory / "val.jsonl", records[:6])


def fit_arguments(model_dir: Path, work: Path) -> list[str]:
    train, val = data(work)
    return [
        "--config", str(ROOT / "configs" / "sft" / "lora.yaml"),
        "--model.model.path", str(model_dir),
        "--data.train", str(train),
        "--data.val", str(val),
        "--data.val_fraction", "0",
        "--data.batch_size", "2",
        "--data.packing", "false",
        "--trainer.max_steps", "6",
        "--trainer.max_epochs", "10",
        "--trainer.val_check_interval", "2",
        "--trainer.check_val_every_n_epoch", "null",
        "--trainer.accumulate_grad_batches", "1",
        "--trainer.enable_progress_bar", "false",
        "--trainer.num_sanity_val_steps", "0",
        "--trainer.enable_checkpointing", "false",
        "--model.on_non_finite", "skip",
    ]  # fmt: skip


def write_space(path: Path, **ranges: list) -> Path:
    space = {"sampler": "grid", "pruner": {"threshold": {"upper": THRESHOLD}}}
    space.update({key: {"choice": values} for key, values in ranges.items()})
    path.write_text(yaml.safe_dump(space))
    return path


def tune_command(space: Path, work: Path, model_dir: Path, trials: int) -> list[str]:
    return [
        sys.executable, "-m", "lightning_ft.cli", "tune",
        "--space", str(space), "--trials", str(trials), "--study", "s", "--directory", str(work / "study"),
        *fit_arguments(model_dir, work),
    ]  # fmt: skip


def environment(work: Path) -> dict[str, str]:
    cache = str(work / "hf")
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_DATASETS_CACHE": cache, "TOKENIZERS_PARALLELISM": "false"}


def load(work: Path) -> optuna.Study:
    return optuna.load_study(study_name="s", storage=open_storage(f"sqlite:///{work / 'study' / 'study.db'}"))


def finished_so_far(work: Path) -> list[optuna.trial.FrozenTrial]:
    """The finished trials of a study being run, none before its worker has created the database and the study."""
    if not (work / "study" / "study.db").exists():
        return []
    try:
        return finished(load(work))
    except KeyError:  # the database file exists, the study row not yet
        return []


def run_tune(command: list[str], work: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(command, env=environment(work), capture_output=True, text=True, timeout=STUDY_LIMIT_S)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def finished(study: optuna.Study) -> list:
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return study.get_trials(deepcopy=False, states=states)


def lr(trial) -> float:
    return trial.params["model.optimizer.init_args.lr"]


@pytest.fixture(scope="module")
def resumed_study(tiny_model_dir, tmp_path_factory):
    """A 4-trial grid over two good and two bad learning rates, killed (process group, SIGKILL) once two trials
    have finished, then run again to the end."""
    work = tmp_path_factory.mktemp("tune-resume")
    space = write_space(work / "space.yaml", **{"model.optimizer.init_args.lr": GOOD_LRS + BAD_LRS})
    command = tune_command(space, work, tiny_model_dir, trials=4)
    log = (work / "killed.log").open("w")
    process = subprocess.Popen(command, env=environment(work), stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + STUDY_LIMIT_S
        while len(finished_so_far(work)) < 2:
            assert process.poll() is None, (work / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.5)
        before_kill = {trial.number: lr(trial) for trial in finished(load(work))}
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    resumed = run_tune(command, work)
    return work, before_kill, resumed


@pytest.mark.slow
def test_a_killed_study_resumes_and_bad_learning_rates_are_pruned(resumed_study):
    work, before_kill, resumed = resumed_study
    study = load(work)
    rows = study_rows(study, "val/loss")
    assert len(rows) == 4 and {row["model.optimizer.init_args.lr"] for row in rows} == set(GOOD_LRS + BAD_LRS)
    states = {row["model.optimizer.init_args.lr"]: row["state"] for row in rows}
    assert states == {1e-3: "complete", 3e-3: "complete", 30.0: "pruned", 50.0: "pruned"}
    pruned = [trial for trial in study.get_trials() if trial.state == optuna.trial.TrialState.PRUNED]
    assert all(trial.intermediate_values[2] > THRESHOLD for trial in pruned)  # at the first validation, step 2
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert all(trial.intermediate_values[2] < THRESHOLD for trial in complete)
    assert all(trial.last_step == 2 for trial in pruned)
    # The two trials finished before the kill were not run again: each learning rate ran to an end exactly once.
    assert sorted(lr(trial) for trial in finished(study)) == sorted(GOOD_LRS + BAD_LRS)
    assert all(f"Trial {number} " not in resumed.stdout for number in before_kill)
    for trial in study.get_trials():
        if trial.state == optuna.trial.TrialState.FAIL:  # the trial the kill cut short, run again with its values
            assert "interrupted" in trial.user_attrs
            assert any(other.user_attrs.get("retry_of") == trial.number for other in finished(study))
    directory = work / "study"
    assert (directory / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (directory / "trials.csv").read_text().splitlines()[0].startswith("trial,state,val/loss,")
    assert '"complete": 2, "pruned": 2, "fail": 0' in resumed.stdout


@pytest.mark.slow
def test_the_best_config_reproduces_the_best_trial_with_fit(resumed_study, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    work, _, _ = resumed_study
    study = load(work)
    best_config = work / "study" / "best.yaml"
    assert f"# Best trial {study.best_trial.number} of study s: val/loss" in best_config.read_text()
    config = yaml.safe_load(best_config.read_text())
    assert config["model"]["init_args"]["optimizer"]["init_args"]["lr"] == lr(study.best_trial)
    config["trainer"]["default_root_dir"] = str(tmp_path / "run")  # as written, it runs in <study>/best
    rerun = tmp_path / "best.yaml"
    rerun.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "lightning_ft.cli", "fit", "--config", str(rerun)],
        env=environment(work), capture_output=True, text=True, timeout=STUDY_LIMIT_S,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    events = EventAccumulator(str(tmp_path / "run" / "lightning_logs" / "version_0")).Reload()
    validations = events.Scalars("val/loss")
    assert len(validations) == 3  # after optimiser steps 2, 4 and 6
    last = max(validations, key=lambda event: event.step)
    assert abs(last.value - study.best_value) <= 1e-6


@pytest.mark.slow
def test_two_workers_share_a_study_and_a_failing_trial_is_recorded(tiny_model_dir, tmp_path):
    # LoRA rank 0 is refused by peft: half the grid fails, and the study goes on with the rest.
    space = write_space(
        tmp_path / "space.yaml", **{"model.optimizer.init_args.lr": GOOD_LRS, "model.peft.init_args.r": [0, 4]}
    )
    command = tune_command(space, tmp_path, tiny_model_dir, trials=4)
    logs = [(tmp_path / f"worker-{index}.log").open("w") for index in range(2)]
    workers = [
        subprocess.Popen(command, env=environment(tmp_path), stdout=log, stderr=subprocess.STDOUT) for log in logs
    ]
    for worker, log in zip(workers, logs, strict=True):
        assert worker.wait(timeout=STUDY_LIMIT_S) == 0, Path(log.name).read_text()[-3000:]
    study = load(tmp_path)
    rows = study_rows(study, "val/loss")
    values = {(row["model.optimizer.init_args.lr"], row["model.peft.init_args.r"]) for row in rows}
    assert len(rows) == 4 and values == {(a, r) for a in GOOD_LRS for r in (0, 4)}
    hosts = {trial.user_attrs["pid"] for trial in study.get_trials()}
    assert hosts == {worker.pid for worker in workers}  # both workers ran trials
    failed = [row for row in rows if row["state"] == "fail"]
    assert [row["model.peft.init_args.r"] for row in failed] == [0, 0]
    assert all("fit exited with status 1:" in row["note"] and "fit.log" in row["note"] for row in failed)
    assert all("r" in row["note"] for row in failed)
    assert sorted(row["state"] for row in rows) == ["complete", "complete", "fail", "fail"]
