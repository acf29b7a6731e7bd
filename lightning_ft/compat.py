"""Every private Lightning API lightning_ft relies on, in one place.

`pyproject.toml` bounds ``lightning`` to the minor series the suite is tested on; within it, the call sites below go
through these functions, and the private methods our subclasses override are listed in `PRIVATE_OVERRIDES`, which a
test checks against the installed Lightning, so a release that moves any of them fails that test by name instead of
silently breaking resume or checkpoints.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states
from lightning.pytorch.callbacks import ModelCheckpoint, ThroughputMonitor
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.strategies import FSDPStrategy

# (class, private method our subclass overrides, what it is for)
PRIVATE_OVERRIDES: list[tuple[type, str, str]] = [
    (ModelCheckpoint, "_save_checkpoint", "AtomicModelCheckpoint writes under a staging name"),
    (FSDPStrategy, "_setup_model", "DecoderLayerFSDP sets its wrap policy from the loaded model"),
    (ThroughputMonitor, "_compute", "TokenThroughputMonitor keeps the last tokens/s for the progress bar"),
    (LightningCLI, "_instantiate_trainer", "FineTuneCLI drops its checkpoint callback when checkpointing is off"),
]


def cli_config_value(cli: LightningCLI, config: Any, key: str, default: Any = None) -> Any:
    """``key`` of a LightningCLI config (or instantiated config), inside the running subcommand when there is one."""
    return cli._get(config, key, default=default)


def attached_trainer(module: L.LightningModule) -> L.Trainer | None:
    """The trainer a module is attached to, or ``None`` (``module.trainer`` raises then)."""
    return module._trainer


def collect_rng_states() -> dict[str, Any]:
    """The torch, CUDA, numpy and python RNG states, as Lightning collects them."""
    return _collect_rng_states()


def set_rng_states(states: dict[str, Any]) -> None:
    _set_rng_states(states)


def mark_checkpoint_saved(callback: ModelCheckpoint, trainer: L.Trainer, filepath: str) -> None:
    """What `ModelCheckpoint._save_checkpoint` records after writing: the step (so a step is not saved twice) and the
    file (for ``save_last: link``)."""
    callback._last_global_step_saved = trainer.global_step
    callback._last_checkpoint_saved = filepath


def apply_pending_loader_states(trainer: L.Trainer) -> bool:
    """Load the data loader states a restored checkpoint holds into the training loader Lightning built before the
    restore, and restart its iterator; ``False`` when there is nothing pending (Lightning applied them itself)."""
    fit_loop = trainer.fit_loop
    pending = getattr(fit_loop, "_combined_loader_states_to_load", None)
    combined_loader = getattr(fit_loop, "_combined_loader", None)
    data_fetcher = getattr(fit_loop, "_data_fetcher", None)
    if not (pending and fit_loop.restarting and combined_loader is not None and data_fetcher is not None):
        return False
    combined_loader._load_state_dicts(pending)
    fit_loop._combined_loader_states_to_load = []
    iter(data_fetcher)  # a new iterator starts from the loaded position (the old one started from the beginning)
    return True


def fsdp_activation_checkpointing(strategy: FSDPStrategy) -> dict[str, Any]:
    """The activation-checkpointing arguments an `FSDPStrategy` was given (empty when none)."""
    return strategy._activation_checkpointing_kwargs


def set_fsdp_activation_checkpointing(strategy: FSDPStrategy, kwargs: dict[str, Any]) -> None:
    strategy._activation_checkpointing_kwargs = kwargs


def throughputs(monitor: ThroughputMonitor) -> dict[Any, Any]:
    """A `ThroughputMonitor`'s per-stage throughput trackers."""
    return monitor._throughputs
