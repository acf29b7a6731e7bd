"""One SFT run on the tiny Llama for tests/distributed/test_ddp.py: `python ddp_run.py MODEL_DIR OUT DEVICES`.

The global batch is the same 4 conversations per step whatever DEVICES is (4 per process alone, 2 per process on 2,
dealt out by rank without shuffling, since Lightning's automatic distributed sampler always shuffles training data):
with token-normalised losses, 1 and 2 processes must follow the same trajectory. Rank 0 writes the per-step losses
and the final trainable weights to OUT; checkpoints and Hugging Face exports are written beside it under run-DEVICES."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from lightning_ft.algorithms import SFT
from lightning_ft.callbacks import AtomicModelCheckpoint, HuggingFaceExport
from lightning_ft.data.collate import PadCollator
from lightning_ft.model.spec import ModelSpec
from tests.conftest import build_tiny_tokenizer
from tests.helpers import LossRecorder, tokenized_examples

GLOBAL_BATCH = 4
STEPS = 3


class RankShards(L.LightningDataModule):
    """Step k's global batch is examples 4k..4k+3 on any number of processes; rank r takes every world-size-th."""

    def train_dataloader(self) -> DataLoader:
        tokenizer = build_tiny_tokenizer()
        examples = (tokenized_examples(tokenizer) * 4)[: GLOBAL_BATCH * STEPS]
        world, rank = self.trainer.world_size, self.trainer.global_rank
        return DataLoader(
            examples[rank::world],
            batch_size=GLOBAL_BATCH // world,
            shuffle=False,
            collate_fn=PadCollator(tokenizer.pad_token_id),
        )


def main(model_dir: str, out: str, devices: int) -> None:
    L.seed_everything(0)
    module = SFT(
        ModelSpec(path=model_dir),
        optimizer=lambda params: torch.optim.SGD(params, lr=0.5),  # linear in the gradients: weights compare tightly
        lr_scheduler="constant",
    )
    recorder = LossRecorder()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_steps=STEPS,
        # checkpoints and exports at every other step: every collective in them must be reached by all ranks
        callbacks=[recorder, AtomicModelCheckpoint(every_n_train_steps=2, save_last=True), HuggingFaceExport()],
        default_root_dir=str(Path(out).parent / f"run-{devices}"),
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    trainer.fit(module, datamodule=RankShards())
    if trainer.is_global_zero:
        weights = {name: p.detach().clone() for name, p in module.model.named_parameters()}
        torch.save({"losses": recorder.losses, "weights": weights}, out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
