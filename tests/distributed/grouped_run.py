"""A 2-process DDP SFT run with length-grouped batches and Lightning's default distributed sampling, for
tests/distributed/test_ddp.py: `python grouped_run.py MODEL_DIR TRAIN_JSONL OUT`. Each rank writes the dataset indices
of the examples in each batch it trained on, and every example's length, to OUT.rank{r}."""

from __future__ import annotations

import sys

import lightning as L
import torch

from lightning_ft.algorithms import SFT
from lightning_ft.data import InstructionData
from lightning_ft.model.spec import ModelSpec


class BatchIndices(L.Callback):
    """The dataset indices of the examples in each training batch, found from their tokens."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        examples = trainer.datamodule.datasets["train"]["input_ids"]
        self.index_of = {tuple(ids): index for index, ids in enumerate(examples)}

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        rows = zip(batch["input_ids"], batch["attention_mask"].bool(), strict=True)
        self.batches.append([self.index_of[tuple(ids[mask].tolist())] for ids, mask in rows])


def main(model_dir: str, train: str, out: str) -> None:
    L.seed_everything(0)
    module = SFT(ModelSpec(path=model_dir))
    data = InstructionData(
        train, tokenizer=module.tokenizer, batch_size=2, max_length=64, packing=False, group_by_length=True
    )
    recorder = BatchIndices()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=1,
        callbacks=[recorder],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=data)
    torch.save(
        {"batches": recorder.batches, "lengths": [len(ids) for ids in recorder.index_of]},
        f"{out}.rank{trainer.global_rank}",
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
