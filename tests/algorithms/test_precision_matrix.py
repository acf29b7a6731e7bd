"""Every algorithm under every precision on CPU: two optimiser steps and a validation pass with finite metrics,
trainable weights that move and keep the dtype the precision implies. ``16-mixed`` runs with a real GradScaler on CPU
(Lightning would otherwise map it to bf16 there); the CUDA run of the same matrix is in tests/gpu/."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from tests.helpers import ALGORITHMS, PRECISIONS, build_algorithm, quiet_trainer


def trainer_for(precision: str, **kwargs) -> L.Trainer:
    if precision == "16-mixed":  # a real fp16 GradScaler on CPU
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
        kwargs["plugins"] = [MixedPrecision("16-mixed", "cpu", scaler)]
    else:
        kwargs["precision"] = precision
    return quiet_trainer(**{"num_sanity_val_steps": 0, "limit_val_batches": 1, **kwargs})


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_algorithm_trains_under_precision(tiny_model_dir, tmp_path, algorithm, precision):
    L.seed_everything(0)
    module, data = build_algorithm(algorithm, tiny_model_dir, tmp_path)
    module.configure_model()
    before = {name: p.detach().clone().float() for name, p in module.named_parameters() if p.requires_grad}
    trainer = trainer_for(precision, max_steps=2)
    trainer.fit(module, datamodule=data)
    metrics = trainer.callback_metrics
    assert any(name.startswith("val/") for name in metrics), sorted(metrics)
    assert all(torch.isfinite(value) for value in metrics.values()), metrics
    trainable = {name: p for name, p in module.named_parameters() if p.requires_grad}
    assert trainable.keys() == before.keys()
    expected_dtype = torch.bfloat16 if precision == "bf16-true" else torch.float32
    assert {p.dtype for p in trainable.values()} == {expected_dtype}
    moved = [name for name, p in trainable.items() if not torch.equal(p.detach().float(), before[name])]
    assert len(moved) > len(trainable) // 2, f"only {len(moved)} of {len(trainable)} trainable tensors moved"


@pytest.mark.parametrize("algorithm", ["grpo", "ppo"])
def test_online_rl_clips_unscaled_gradients_under_fp16(tiny_model_dir, tmp_path, algorithm):
    """Manual optimisation clips after the GradScaler unscales: with SGD and a tiny max norm, one step moves the
    trainable weights by exactly lr * max_grad_norm, as in fp32 (clipping the scaled gradients would move them
    2^8 times less)."""
    lr, max_norm = 0.1, 1e-3
    for precision in ("32-true", "16-mixed"):
        L.seed_everything(0)
        module, data = build_algorithm(algorithm, tiny_model_dir, tmp_path)
        module.optimizer = lambda params: torch.optim.SGD(params, lr=lr)
        module.max_grad_norm = max_norm
        module.configure_model()
        before = {name: p.detach().clone() for name, p in module.named_parameters() if p.requires_grad}
        trainer_for(precision, max_steps=1, limit_val_batches=0).fit(module, datamodule=data)
        step = torch.cat(
            [(p.detach() - before[name]).flatten() for name, p in module.named_parameters() if name in before]
        )
        assert step.norm().item() == pytest.approx(lr * max_norm, rel=1e-3), precision
