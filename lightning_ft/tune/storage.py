"""Where a study lives: an Optuna RDB URL (``sqlite:///study.db``, ``postgresql://...``, ``mysql://...``) or a journal
file (``journal:PATH``, safe on NFS, where SQLite's locking is not). Several processes, on one machine or across a
cluster, work on one study through it."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy

from lightning_ft.errors import UsageError

JOURNAL_PREFIX = "journal:"
HEARTBEAT_INTERVAL_S = 60  # an RDB study notices a trial whose worker vanished (another node) after the grace period
GRACE_PERIOD_S = 300
SCHEMA_ATTEMPTS = 5  # opening a new database that other workers are creating at the same moment


def open_storage(url: str, heartbeat: bool = True) -> optuna.storages.BaseStorage:
    if url.startswith(JOURNAL_PREFIX):
        path = Path(url.removeprefix(JOURNAL_PREFIX)).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = optuna.storages.journal.JournalFileOpenLock(str(path))
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path), lock_obj=lock))
    if "://" not in url:
        raise UsageError(f"--storage {url!r}: give an Optuna RDB URL (sqlite:///study.db) or journal:PATH")
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
    # SQLite: several processes take turns writing; wait for the lock instead of failing at once.
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    timing = {"heartbeat_interval": HEARTBEAT_INTERVAL_S, "grace_period": GRACE_PERIOD_S} if heartbeat else {}
    for attempt in range(SCHEMA_ATTEMPTS - 1):
        try:
            return rdb_storage(url, engine, timing)
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError):
            # Workers started together on a new database all create its tables: all but one fail ("table studies
            # already exists", the schema version row inserted twice); once the schema is there, opening succeeds.
            time.sleep(0.2 * (attempt + 1))
    return rdb_storage(url, engine, timing)


def rdb_storage(url: str, engine: dict[str, Any] | None, timing: dict[str, int]) -> optuna.storages.RDBStorage:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: stable since Optuna 3
        return optuna.storages.RDBStorage(url, engine_kwargs=engine, **timing)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"
