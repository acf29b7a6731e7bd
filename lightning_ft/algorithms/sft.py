"""`SFT`: supervised fine-tuning with a token-normalised cross-entropy."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torchmetrics import MeanMetric

from lightning_ft.algorithms.base import FineTuneModule, reset_metrics
from lightning_ft.losses.sft import chunked_cross_entropy
from lightning_ft.model.attention import tokens_per_sequence
from lightning_ft.model.forward import sequence_hidden_states
from lightning_ft.model.heads import output_projection
from lightning_ft.model.neftune import neftune_noise
from lightning_ft.model.spec import ModelSpec

SFTLoss = Callable[
    [torch.Tensor, Callable[[torch.Tensor], torch.Tensor], torch.Tensor], tuple[torch.Tensor, torch.Tensor]
]


class SFT(FineTuneModule):
    """Supervised fine-tuning on the trainable (assistant) tokens.

    Loss normalisation: the loss of an optimiser step is the summed cross-entropy of its trained tokens divided by the
    number of trained tokens of the *whole step*: every micro-batch of gradient accumulation on every device. Each
    micro-batch backpropagates its token sum; just before the optimiser step (and before gradient clipping) the
    gradients are rescaled by ``accumulate_grad_batches * world_size / step_tokens``, undoing Lightning's division by
    the accumulation count and the strategy's averaging over devices. A step therefore equals one big batch with the
    same tokens, which a mean of per-micro-batch means is not.

    Validation logs ``val/loss`` and ``val/ppl`` (``exp`` of the loss), each a token-weighted mean over the whole
    set, and the same under ``val_<name>/`` for each extra validation set of the data module (``val_extra``).

    Args:
        model: The model to fine-tune.
        loss_fn: ``(hidden_states, output_projection, labels) -> (loss_sum, num_trainable_tokens)``. The default,
            `chunked_cross_entropy`, never builds full-vocabulary logits; `cross_entropy` is the plain reference.
        neftune_noise_alpha: NEFTune noise scale on input embeddings while training; ``None`` disables it.
        **kwargs: `FineTuneModule` arguments (peft, freeze, optimizer, schedule, ...).
    """

    def __init__(
        self,
        model: ModelSpec,
        loss_fn: SFTLoss = chunked_cross_entropy,
        neftune_noise_alpha: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        self.loss_fn = loss_fn
        self.neftune_noise_alpha = neftune_noise_alpha
        self.val_losses = nn.ModuleDict()  # validation set name (`validation_set_name`) -> token-weighted mean loss
        self._step_loss_sum = torch.zeros(())
        self._step_tokens = torch.zeros((), dtype=torch.long)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss_sum, num_tokens = self.loss_sum(batch)
        self._step_loss_sum = self._step_loss_sum.to(loss_sum.device) + loss_sum.detach()
        self._step_tokens = self._step_tokens.to(num_tokens.device) + num_tokens
        return loss_sum

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        reduce = self.trainer.strategy.reduce
        step_tokens = reduce(self._step_tokens.float(), reduce_op="sum")
        step_loss_sum = reduce(self._step_loss_sum, reduce_op="sum")
        # a number, not a tensor: gradients may live on another device than the counts (FSDP's CPU offload)
        scale = float(self.trainer.accumulate_grad_batches * self.trainer.world_size / step_tokens.clamp(min=1))
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                if parameter.grad is not None:
                    parameter.grad.mul_(scale)
        self.log("train/loss", step_loss_sum / step_tokens.clamp(min=1), prog_bar=True, on_step=True)
        self.log("train/trained_tokens", step_tokens, on_step=True)
        self._step_loss_sum = torch.zeros_like(self._step_loss_sum)
        self._step_tokens = torch.zeros_like(self._step_tokens)
        super().on_before_optimizer_step(optimizer)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        loss_sum, num_tokens = self.loss_sum(batch)
        name = self.validation_set_name(dataloader_idx)
        if name not in self.val_losses:
            with torch.inference_mode(False):  # `validate` runs in inference mode; a later `fit` updates in place
                self.val_losses[name] = MeanMetric().to(self.device)
        if num_tokens > 0:
            self.val_losses[name].update(loss_sum / num_tokens, weight=num_tokens)

    def on_validation_epoch_end(self) -> None:
        for name, metric in self.val_losses.items():
            if metric.update_count == 0:
                continue
            loss = metric.compute()
            self.log(f"{name}/loss", loss, prog_bar=name == "val", add_dataloader_idx=False)
            ppl = torch.exp(loss) if loss < 50 else torch.tensor(math.inf)
            self.log(f"{name}/ppl", ppl, add_dataloader_idx=False)
        reset_metrics(*self.val_losses.values())

    def extra_model_inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Batch entries the model takes besides tokens and masks (images, for vision-language models)."""
        return {}

    def loss_sum(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The summed loss of the batch's trained tokens and their number: ``(loss_sum, num_tokens)``, scalars."""
        inputs_embeds = None
        if self.training and self.neftune_noise_alpha:
            embeddings = self.model.get_input_embeddings()(batch["input_ids"])
            inputs_embeds = neftune_noise(embeddings, tokens_per_sequence(batch), self.neftune_noise_alpha)
        hidden = sequence_hidden_states(self.model, batch, inputs_embeds, **self.extra_model_inputs(batch))
        return self.loss_fn(hidden, output_projection(self.model), batch["labels"])
