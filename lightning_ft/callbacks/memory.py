"""`OutOfMemoryAdvice`: when a run dies of running out of memory, name the settings that lower memory."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

# Every `key: value` and --config here is an override `lightning-ft fit` accepts (tests/test_suggested_overrides.py).
MEMORY_ADVICE = (
    "Out of memory. Settings that lower memory, roughly in order of cost: a smaller micro-batch with more "
    "accumulation for the same global batch (`data.batch_size: 1`, `trainer.accumulate_grad_batches: 8`), shorter "
    "sequences (`data.max_length: 1024`), `model.gradient_checkpointing: true`, bf16 "
    "(`trainer.precision: bf16-true` with `model.model.dtype: bfloat16`), LoRA instead of full fine-tuning "
    "(--config configs/sft/lora.yaml), QLoRA (--config configs/sft/qlora.yaml), and sharding or offload: add "
    "--config configs/strategies/fsdp.yaml, --config configs/strategies/fsdp_offload.yaml or "
    "--config configs/strategies/deepspeed_zero3_offload.yaml."
)


class OutOfMemoryAdvice(L.Callback):
    """When a run dies of running out of memory, say which settings lower memory."""

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, torch.OutOfMemoryError):
            rank_zero_warn(MEMORY_ADVICE)
