"""Token throughput: Lightning's `ThroughputMonitor` counting real (non-pad) tokens, and a progress bar showing it."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar, ThroughputMonitor

from lightning_ft.compat import throughputs


def batch_size(batch: dict[str, Any]) -> int:
    return int(batch["input_ids"].shape[0])


def real_tokens(batch: dict[str, Any]) -> int:
    return int(batch["attention_mask"].sum())


class TokenThroughputMonitor(ThroughputMonitor):
    """`ThroughputMonitor` over real tokens; logs ``train|device/items_per_sec`` (tokens/s) to the logger.

    Args:
        window_size: Micro-batches over which rates are averaged.
    """

    def __init__(self, window_size: int = 10) -> None:
        super().__init__(batch_size_fn=batch_size, length_fn=real_tokens, window_size=window_size)
        self.tokens_per_sec: float | None = None

    def _compute(self, trainer: L.Trainer, iter_num: int | None = None) -> None:
        super()._compute(trainer, iter_num)
        stage = trainer.state.stage
        if stage is not None and stage in throughputs(self):
            rate = throughputs(self)[stage].compute().get("device/items_per_sec")
            if rate is not None:
                self.tokens_per_sec = float(rate)


class TokenRateProgressBar(RichProgressBar):
    """Rich progress bar that also shows the tokens/s measured by `TokenThroughputMonitor`."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        for callback in trainer.callbacks:
            if isinstance(callback, TokenThroughputMonitor) and callback.tokens_per_sec is not None:
                metrics["tok/s"] = f"{callback.tokens_per_sec:.0f}"
        return metrics
