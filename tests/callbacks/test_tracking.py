"""`TrackingReport` on its own: the Optuna trial's tags and the dataset counts reach every MLflow and W&B logger and no
other logger; the trial variable and the dataset report parse exactly. tests/test_loggers.py runs it in real fits."""

from __future__ import annotations

import json
from types import SimpleNamespace

import lightning as L
import pytest
from lightning.pytorch.demos.boring_classes import BoringDataModule, BoringModel
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, WandbLogger

from lightning_ft.callbacks import TrackingReport
from lightning_ft.callbacks.tracking import dataset_report, optuna_trial, safe_key
from tests.conftest import require

TRIAL = {"study": "lr-search", "number": 3, "storage": "sqlite:///study.db"}  # tune's variable holds more keys


def test_trial_tags_and_dataset_counts_reach_every_tracker_and_no_other_logger(tmp_path, monkeypatch):
    mlflow = require("mlflow", "MLflow runs are read back here (in the `track` extra: pip install -e '.[track]')")
    wandb = require("wandb", "a W&B run is written here (in the `track` extra: pip install -e '.[track]')")
    monkeypatch.setenv("LIGHTNING_FT_TRIAL", json.dumps(TRIAL))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for variable, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(tmp_path)}.items():
        monkeypatch.setenv(variable, value)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    loggers = [
        CSVLogger(tmp_path / "csv"),
        MLFlowLogger(tracking_uri=store, artifact_location=(tmp_path / "artifacts").as_uri()),
        WandbLogger(save_dir=tmp_path, offline=True),
    ]
    trainer = L.Trainer(
        logger=loggers,
        callbacks=[TrackingReport()],
        max_steps=1,
        limit_val_batches=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    datamodule = BoringDataModule()  # with a data module's report, as `TokenizedData` keeps it
    datamodule.stats, datamodule.dropped = {"train": {"records": 64, "ok": 64}}, {"train": {}}
    try:
        trainer.fit(BoringModel(), datamodule=datamodule)
        run = loggers[2].experiment
        assert {key: run.summary[key] for key in ("optuna_study", "optuna_trial")} == {
            "optuna_study": "lr-search",
            "optuna_trial": "3",
        }
        assert run.config["data"] == {"train": {"records": 64, "kept": 64, "dropped": 0}}
    finally:
        wandb.finish()
        wandb.teardown()  # W&B's service process would outlive the test with its settings (WANDB_DIR) for later runs
        mlflow.set_tracking_uri(None)

    client = mlflow.tracking.MlflowClient(store)
    run = client.get_run(loggers[1].run_id)
    assert {key: value for key, value in run.data.tags.items() if not key.startswith("mlflow.")} == {
        "optuna_study": "lr-search",
        "optuna_trial": "3",
    }
    assert run.data.params == {"data/train/records": "64", "data/train/kept": "64", "data/train/dropped": "0"}
    artifacts = client.list_artifacts(run.info.run_id, "lightning_ft")
    assert [artifact.path for artifact in artifacts] == ["lightning_ft/dataset_report.json"]  # no LightningCLI config
    csv_run = tmp_path / "csv" / "lightning_logs" / "version_0"
    assert not list(csv_run.iterdir())  # no hparams.yaml: the counts went to the trackers only


def test_the_trial_variable_parses_exactly(monkeypatch):
    monkeypatch.delenv("LIGHTNING_FT_TRIAL", raising=False)
    assert optuna_trial() == {}
    monkeypatch.setenv("LIGHTNING_FT_TRIAL", json.dumps(TRIAL))
    assert optuna_trial() == {"optuna_study": "lr-search", "optuna_trial": "3"}
    monkeypatch.setenv("LIGHTNING_FT_TRIAL", '{"study": "lr-search"}')
    message = 'LIGHTNING_FT_TRIAL must be a JSON object with "study" and "number", got \'{"study": "lr-search"}\''
    with pytest.raises(ValueError) as error:
        optuna_trial()
    assert str(error.value) == message


def test_dataset_report_counts_every_split_of_a_mix():
    """train of a.jsonl: 5 records, 1 too long and 1 without trainable tokens dropped, 1 truncated: 3 kept."""
    datamodule = SimpleNamespace(
        stats={
            "train:data/a.jsonl": {
                "records": 5,
                "ok": 2,
                "truncated": 1,
                "dropped_too_long": 1,
                "dropped_no_trainable": 1,
            },
            "val": {"records": 2, "ok": 2},
        },
        dropped_places={
            "train:data/a.jsonl": {"dropped_too_long": ["data/a.jsonl:5"], "dropped_no_trainable": ["data/a.jsonl:1"]},
            "val": {},
        },
    )
    assert dataset_report(datamodule) == {
        "train:data/a.jsonl": {
            "records": 5,
            "kept": 3,
            "dropped": 2,
            "statuses": {"ok": 2, "truncated": 1, "dropped_too_long": 1, "dropped_no_trainable": 1},
            "dropped_records": {"dropped_too_long": ["data/a.jsonl:5"], "dropped_no_trainable": ["data/a.jsonl:1"]},
        },
        "val": {"records": 2, "kept": 2, "dropped": 0, "statuses": {"ok": 2}, "dropped_records": {}},
    }
    assert dataset_report(None) == {}
    assert safe_key("train:data/my+mix (v2).jsonl") == "train:data/my_mix _v2_.jsonl"
