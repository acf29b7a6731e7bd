"""The private Lightning APIs lightning_ft relies on exist, with the parameters our code uses, in the installed
Lightning: a release that moves one fails here by name (pyproject.toml bounds lightning to the tested minor series)."""

from __future__ import annotations

import inspect
import random

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, ThroughputMonitor
from lightning.pytorch.strategies import FSDPStrategy

from lightning_ft import compat
from lightning_ft.callbacks import AtomicModelCheckpoint, TokenThroughputMonitor
from lightning_ft.cli import FineTuneCLI
from lightning_ft.strategies import DecoderLayerFSDP

OURS = {
    ModelCheckpoint: AtomicModelCheckpoint,
    FSDPStrategy: DecoderLayerFSDP,
    ThroughputMonitor: TokenThroughputMonitor,
    L.pytorch.cli.LightningCLI: FineTuneCLI,
}


def test_every_private_method_we_override_exists_with_our_parameters():
    for base, name, _ in compat.PRIVATE_OVERRIDES:
        assert callable(getattr(base, name, None)), f"{base.__name__}.{name} is gone"
        ours = inspect.signature(getattr(OURS[base], name)).parameters
        theirs = inspect.signature(getattr(base, name)).parameters
        assert list(ours) == list(theirs), f"{base.__name__}.{name}: {list(theirs)} (ours {list(ours)})"


def test_rng_states_round_trip():
    states = compat.collect_rng_states()
    expected = (torch.rand(3), random.random())
    torch.rand(5), random.random()
    compat.set_rng_states(states)
    torch.testing.assert_close(torch.rand(3), expected[0])
    assert random.random() == expected[1]


def test_private_attributes_are_where_compat_reads_them():
    checkpoint = ModelCheckpoint()
    assert checkpoint._last_global_step_saved == 0 and checkpoint._last_checkpoint_saved == ""
    assert compat.fsdp_activation_checkpointing(FSDPStrategy()) == {}
    monitor = ThroughputMonitor(batch_size_fn=len)
    assert compat.throughputs(monitor) == {}
    assert compat.attached_trainer(L.LightningModule()) is None
    fit_loop = L.Trainer(accelerator="cpu", logger=False).fit_loop
    for name in ("_combined_loader_states_to_load", "_combined_loader", "_data_fetcher"):
        assert hasattr(fit_loop, name), name
