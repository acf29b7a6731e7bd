"""`HuggingFaceExport`: a Hugging Face export under the run directory at every checkpoint and at the end of training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from lightning_ft.model.generation_defaults import GenerationDefaults


class HuggingFaceExport(Callback):
    """Writes the adapter (or full model) with its tokenizer and chat template to ``<log_dir>/<dirname>/``:
    ``step-N`` beside every checkpoint and ``final`` when training ends.

    Args:
        dirname: Folder under the run's log directory.
        on_checkpoint: Export whenever Lightning saves a checkpoint.
        at_end: Export when training ends.
        generation: Decoding defaults the export's ``generation_config.json`` records for transformers, vLLM and
            ``lightning-ft chat``, e.g. ``{temperature: 0.7, top_p: 0.9}``; ``None`` keeps the base model's. Either
            way it stops generation at the end-of-turn tokens.
    """

    def __init__(
        self,
        dirname: str = "hf",
        on_checkpoint: bool = True,
        at_end: bool = True,
        generation: GenerationDefaults | None = None,
    ) -> None:
        self.dirname = dirname
        self.on_checkpoint = on_checkpoint
        self.at_end = at_end
        self.generation = generation
        self.last_export: Path | None = None
        self._export_dir: Path | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Resolved now, on every rank together: `trainer.log_dir` broadcasts under DDP, and a checkpoint saved from
        # SLURM's SIGUSR1 handler (on whichever rank gets there first, while the other waits in a collective of the
        # training step) must not start another collective, or both ranks wait forever.
        self._export_dir = None
        self._export_dir = self.export_dir(trainer)

    def export_dir(self, trainer: L.Trainer) -> Path:
        if self._export_dir is not None:
            return self._export_dir
        return Path(trainer.log_dir or trainer.default_root_dir) / self.dirname

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if self.on_checkpoint:
            self._export(trainer, pl_module, f"step-{trainer.global_step}")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.at_end:
            path = self._export(trainer, pl_module, "final")
            if path is not None:
                rank_zero_info(f"Exported the fine-tuned model to {path}")

    def _export(self, trainer: L.Trainer, pl_module: L.LightningModule, name: str) -> Path | None:
        directory = self.export_dir(trainer) / name
        if not trainer.is_global_zero:
            return None
        self.last_export = pl_module.export(directory, generation=self.generation)
        return self.last_export
