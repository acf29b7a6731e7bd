"""`RewardModel`: a scalar reward head on a causal LM or an encoder, trained on preference pairs (Bradley-Terry)."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import torch
from peft import PeftConfig, PeftModel, TaskType
from torch import nn
from transformers import AutoModelForSequenceClassification

from lightning_ft.algorithms.base import FineTuneModule
from lightning_ft.compat import attached_trainer
from lightning_ft.errors import UsageError
from lightning_ft.losses.preference import bradley_terry_loss
from lightning_ft.model.export import save_export
from lightning_ft.model.generation_defaults import GenerationDefaults
from lightning_ft.model.heads import unwrap
from lightning_ft.model.spec import ModelSpec
from lightning_ft.model.trainable import build_trainable_model

Batch = dict[str, torch.Tensor]
HEAD_NAMES = ("score", "classifier")  # the one-output head of decoder and of encoder sequence classifiers


class RewardModel(FineTuneModule):
    """Learns ``r(prompt, response)`` from `PreferenceData` pairs with the Bradley-Terry loss
    ``-log σ(r_chosen - r_rejected - margin) + c (r_chosen + r_rejected)²``.

    The model is ``AutoModelForSequenceClassification`` with one output on the given backbone: a causal LM (the reward
    is read at the last non-padding token) or a BERT-style encoder (its pooled first token; give the data
    ``add_special_tokens: true``). Full fine-tuning, freeze-tuning or PEFT (the new head always trains). Chosen and
    rejected go through the model in one forward. The export is a plain sequence classifier (adapters merged), loadable
    with ``AutoModelForSequenceClassification.from_pretrained``; ``lightning-ft score`` scores pairs with it.

    Validation logs ``val/loss``, ``val/accuracy`` and ``val/margin``, means over the set's pairs, and the same under
    ``val_<name>/`` for each extra validation set of the data module (``val_extra``).

    Args:
        model: The backbone.
        center_rewards_coefficient: ``c``: keeps rewards centred at zero (0 turns it off).
        **kwargs: `FineTuneModule` arguments (peft, freeze, optimizer, schedule, ...).
    """

    def __init__(self, model: ModelSpec, center_rewards_coefficient: float = 0.0, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.center_rewards_coefficient = center_rewards_coefficient

    def build_model(self) -> nn.Module:
        adapter = self.peft
        if isinstance(adapter, PeftConfig) and adapter.task_type != TaskType.SEQ_CLS:
            adapter = dataclasses.replace(adapter, task_type=TaskType.SEQ_CLS)  # the new head then trains and saves
        model = build_trainable_model(
            self.model_spec,
            adapter,
            self.freeze,
            self.gradient_checkpointing,
            auto_class=AutoModelForSequenceClassification,
            num_labels=1,
            ignore_mismatched_sizes=True,  # a classifier with another number of labels gets a fresh one-output head
        )
        base = unwrap(model)
        base.config.pad_token_id = self.tokenizer.pad_token_id  # decoders find the last token from it
        if not isinstance(model, PeftModel):
            reward_head(base).requires_grad_(True)
        return model

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        losses, chosen, rejected = self.pair_losses(batch)
        loss = losses.mean()
        pairs = chosen.shape[0]
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=pairs)
        self.log("train/accuracy", (chosen > rejected).float().mean(), batch_size=pairs)
        self.log("train/margin", (chosen - rejected).mean(), batch_size=pairs)
        return loss

    def validation_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Logs the set's mean loss, accuracy and margin over its pairs (batch means weighted by their pairs)."""
        losses, chosen, rejected = self.pair_losses(batch)
        name = self.validation_set_name(dataloader_idx)
        metrics = {
            "loss": losses.mean(),
            "accuracy": (chosen > rejected).float().mean(),
            "margin": (chosen - rejected).mean(),
        }
        for metric, value in metrics.items():
            self.log(
                f"{name}/{metric}",
                value,
                prog_bar=name == "val" and metric != "margin",
                batch_size=chosen.shape[0],
                sync_dist=True,
                add_dataloader_idx=False,
            )

    def pair_losses(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(losses, chosen_rewards, rejected_rewards)``, each ``(pairs,)``, of a side-by-side batch."""
        if "sequence_ids" in batch:
            raise UsageError("A reward model scores one sequence per row: set `data.packing: false`.")
        rewards = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        chosen, rejected = rewards.squeeze(-1).float().chunk(2)
        margin = batch.get("margin")
        losses = bradley_terry_loss(
            chosen, rejected, None if margin is None else margin.float(), self.center_rewards_coefficient
        )
        return losses, chosen.detach(), rejected.detach()

    def export(self, directory: str | Path, generation: GenerationDefaults | None = None) -> Path:
        """A standalone sequence classifier: adapters are merged into a copy, so training can go on. It generates
        nothing, so ``generation`` must be ``None``."""
        model = self.model
        if isinstance(model, PeftModel):
            model = copy.deepcopy(model).merge_and_unload()
        datamodule = getattr(attached_trainer(self), "datamodule", None)
        details = {"task": "reward"}
        if datamodule is not None and hasattr(datamodule, "add_special_tokens"):
            details.update(add_special_tokens=datamodule.add_special_tokens, max_length=datamodule.max_length)
        return save_export(model, self.tokenizer, self.model_spec, directory, details, generation)


def reward_head(model: nn.Module) -> nn.Module:
    for name in HEAD_NAMES:
        head = getattr(model, name, None)
        if isinstance(head, nn.Module):
            return head
    raise AttributeError(f"{type(model).__name__} has no reward head (looked for {', '.join(HEAD_NAMES)})")
