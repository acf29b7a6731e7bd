"""Logger fragments (configs/loggers/*.yaml) added as a second config to a fit of the tiny model: MLflow (SQLite
store), W&B (offline) and CSV leave the metrics and, through `TrackingReport`, the resolved config, the dataset report
and the export path where their own clients read them."""

from __future__ import annotations

import csv
import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lightning_ft.cli import main
from tests.conftest import require
from tests.helpers import CONFIGS, write_jsonl

WORDS = ["hello", "world", "paris", "tea", "sun", "pond"]
# Seven records; record 3 is far longer than --data.max_length 64 and dropped: 6 kept, 3 steps of 2 (no packing).
RECORDS = [{"instruction": f"Say {word}.", "output": f"{word} {word}"} for word in WORDS]
RECORDS.insert(3, {"instruction": "long " * 300, "output": "x"})


def dataset_report(tmp_path: Path) -> dict:
    """What the run logs about its data: record 3 (0-based) is on line 4 of train.jsonl."""
    train = {"records": 7, "kept": 6, "dropped": 1, "statuses": {"ok": 6, "dropped_too_long": 1}}
    return {"train": {**train, "dropped_records": {"dropped_too_long": [f"{tmp_path / 'train.jsonl'}:4"]}}}


RUN_DIR = Path("runs") / "lightning_logs" / "version_0"  # default_root_dir runs (TensorBoard beside a tracker; CSV's)


@pytest.fixture
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fragments write relative to the working directory (runs/, mlflow.db, mlruns/)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LIGHTNING_FT_TRIAL", raising=False)
    return tmp_path


def fit(tmp_path: Path, model_dir: Path, fragment: str, *extra: str) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", RECORDS)
    main(
        [
            "fit",
            "--config",
            str(CONFIGS / "sft" / "lora.yaml"),
            "--config",
            str(CONFIGS / "loggers" / fragment),
            "--model.model.path",
            str(model_dir),
            "--data.train",
            str(train),
            "--data.val_fraction",
            "0",
            "--data.batch_size",
            "2",
            "--data.packing",
            "false",
            "--data.max_length",
            "64",
            "--data.overlong",
            "drop",
            "--trainer.accumulate_grad_batches",
            "1",
            "--trainer.max_steps",
            "3",
            "--trainer.log_every_n_steps",
            "1",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.enable_checkpointing",
            "false",
            "--trainer.default_root_dir",
            "runs",
            *extra,
        ]
    )


def assert_names_the_run(config_text: str, model_dir: Path, tmp_path: Path) -> None:
    config = yaml.safe_load(config_text)
    assert config["model"]["init_args"]["model"]["init_args"]["path"] == str(model_dir)
    assert config["data"]["init_args"]["train"] == str(tmp_path / "train.jsonl")
    assert config["trainer"]["max_steps"] == 3


def export_path(tmp_path: Path) -> str:
    path = (tmp_path / RUN_DIR / "hf" / "final").resolve()
    assert (path / "adapter_model.safetensors").is_file()
    return str(path)


def test_every_tracker_has_a_fragment():
    assert {path.stem for path in (CONFIGS / "loggers").glob("*.yaml")} == {"mlflow", "wandb", "csv"}


@pytest.fixture
def mlflow_client(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    mlflow = require("mlflow", "the MLflow fragment is run here (in the `track` extra: pip install -e '.[track]')")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield mlflow.tracking.MlflowClient
    mlflow.set_tracking_uri(None)  # MLFlowLogger sets the process-wide URI (and MLFLOW_TRACKING_URI)


def test_mlflow_run_has_params_metrics_config_dataset_report_and_export(mlflow_client, tiny_model_dir, in_tmp_path):
    tmp_path = in_tmp_path
    store = f"sqlite:///{tmp_path / 'tracking.db'}"
    fit(tmp_path, tiny_model_dir, "mlflow.yaml", "--trainer.logger.init_args.tracking_uri", store)
    assert not (tmp_path / "mlflow.db").exists()  # the override reached the MLflow logger, the fragment's last

    client = mlflow_client(store)
    (run,) = client.search_runs([client.get_experiment_by_name("lightning-ft").experiment_id])
    run_id = run.info.run_id
    assert run.info.status == "FINISHED"
    assert run.data.params == {"data/train/records": "7", "data/train/kept": "6", "data/train/dropped": "1"}
    assert [metric.step for metric in client.get_metric_history(run_id, "train/loss")] == [0, 1, 2]
    assert run.data.tags["export_path"] == export_path(tmp_path)
    assert "optuna_study" not in run.data.tags

    artifacts = client.download_artifacts(run_id, "lightning_ft", str(tmp_path / "downloaded"))
    assert sorted(path.name for path in Path(artifacts).iterdir()) == ["config.yaml", "dataset_report.json"]
    config = (Path(artifacts) / "config.yaml").read_text()
    assert config == (tmp_path / RUN_DIR / "config.yaml").read_text()  # what LightningCLI saved in the run dir
    assert_names_the_run(config, tiny_model_dir, tmp_path)
    assert json.loads((Path(artifacts) / "dataset_report.json").read_text()) == dataset_report(tmp_path)


def wandb_records(path: Path) -> Iterator[Any]:
    """The records of an offline run's ``run-<id>.wandb``: a 7-byte header (``:W&B``, magic, version), then LevelDB's
    log format: 32 KiB blocks of chunks with a 7-byte header (CRC, little-endian length, type: 1 full, 2 first,
    3 middle, 4 last), each record a ``wandb.proto`` `Record`. W&B 0.31 ships no Python reader for it."""
    proto = require("wandb.proto.wandb_internal_pb2", "W&B's record format is read here")
    block, header = 32768, 7
    data, position, chunk = path.read_bytes(), header, b""
    while position + header <= len(data):
        if block - position % block < header:  # a block's tail too short for a chunk header is padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + header])
        chunk += data[position + header : position + header + length]
        position += header + length
        if kind in (1, 4):
            record = proto.Record()
            record.ParseFromString(chunk)
            yield record
            chunk = b""


def items(update: Any) -> dict[str, Any]:
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in update}


def updates(records: list[Any], kind: str) -> dict[str, Any]:
    """Every ``config`` or ``summary`` record's updates in order, the latest value of each key."""
    return {
        key: value
        for record in records
        if record.HasField(kind)
        for key, value in items(getattr(record, kind).update).items()
    }


@pytest.fixture
def wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    wandb = require("wandb", "the W&B fragment is run here (in the `track` extra: pip install -e '.[track]')")
    for variable, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}.items():
        monkeypatch.setenv(variable, value)
    for variable in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(variable, str(tmp_path / "wandb-home"))
    wandb.teardown()  # a service process left by an earlier run in this process would write its files elsewhere
    yield wandb
    wandb.finish()  # the logger leaves its run open; a later run in this process would attach to it


def written(directory: Path, pattern: str, limit_s: float = 120) -> list[Path]:
    """The files matching ``pattern`` once W&B's service process has written them (it may finish after teardown
    returns on a loaded machine)."""
    deadline = time.monotonic() + limit_s
    while not (found := sorted(directory.glob(pattern))) and time.monotonic() < deadline:
        time.sleep(0.5)
    return found


def test_wandb_offline_run_has_metrics_config_dataset_report_and_export(wandb, tiny_model_dir, in_tmp_path):
    tmp_path = in_tmp_path
    fit(tmp_path, tiny_model_dir, "wandb.yaml")
    wandb.finish()
    wandb.teardown()  # the transaction log is written by W&B's service process, complete once it has stopped

    (run_dir,) = (tmp_path / "runs" / "wandb").glob("offline-run-*")
    (log,) = written(run_dir, "run-*.wandb")
    records = list(wandb_records(log))
    kinds = [record.WhichOneof("record_type") for record in records]
    assert kinds[0] == "header" and kinds[-1] == "exit"
    history = [items(record.history.item) for record in records if record.HasField("history")]
    assert [row["trainer/global_step"] for row in history if "train/loss" in row] == [0, 1, 2]
    assert updates(records, "config")["data"] == {"train": {"records": 7, "kept": 6, "dropped": 1}}
    assert updates(records, "summary")["export_path"] == export_path(tmp_path)

    files = run_dir / "files" / "lightning_ft"
    assert sorted(path.name for path in files.iterdir()) == ["config.yaml", "dataset_report.json"]
    assert_names_the_run((files / "config.yaml").read_text(), tiny_model_dir, tmp_path)
    assert json.loads((files / "dataset_report.json").read_text()) == dataset_report(tmp_path)


def test_csv_fragment_writes_metrics_beside_config_and_export(tiny_model_dir, in_tmp_path):
    tmp_path = in_tmp_path
    fit(tmp_path, tiny_model_dir, "csv.yaml")
    run_dir = tmp_path / RUN_DIR
    with (run_dir / "metrics.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [int(row["step"]) for row in rows if row["train/loss"]] == [0, 1, 2]
    assert_names_the_run((run_dir / "config.yaml").read_text(), tiny_model_dir, tmp_path)
    export_path(tmp_path)
    assert not list(run_dir.glob("events.out.tfevents*"))  # CSV instead of TensorBoard
