"""`FineTuneModule`: what every training algorithm shares (model spec, model loading, optimiser, checkpoints)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from torch.optim import Optimizer
from torchmetrics import Metric
from transformers import get_scheduler

from lightning_ft.algorithms.ewc import EWC, trainable_parameters
from lightning_ft.algorithms.faults import (
    NON_FINITE_ADVICE,
    NonFiniteAction,
    drop_gradients,
    gradients_are_finite,
    non_finite_message,
)
from lightning_ft.callbacks.memory import OutOfMemoryAdvice
from lightning_ft.callbacks.resume import ResumeDataPosition
from lightning_ft.compat import attached_trainer, collect_rng_states, set_rng_states
from lightning_ft.errors import UsageError
from lightning_ft.host_memory import fix_mmap_threshold
from lightning_ft.model.compile import compile_decoder_layers
from lightning_ft.model.export import save_export
from lightning_ft.model.freeze import FreezePolicy
from lightning_ft.model.generation_defaults import GenerationDefaults
from lightning_ft.model.precision import slow_bf16_warning
from lightning_ft.model.sharding import shardable_spec, sharded_param_dtype
from lightning_ft.model.spec import ModelSpec
from lightning_ft.model.trainable import AdapterConfig, build_trainable_model, count_parameters
from lightning_ft.options import check_option

ScheduleName = Literal["cosine", "linear", "constant"]


class FineTuneModule(L.LightningModule):
    """Base of the algorithms: loads the model in `configure_model`, builds optimiser and schedule, keeps checkpoints
    to the trainable weights.

    Args:
        model: The model to fine-tune (path or hub id, GGUF file, dtype, attention, quantization, chat template).
        peft: An adapter: a ``peft`` config (LoRA, DoRA, IA3, prefix/prompt tuning, LLaMA-Adapter, ...) or a
            `BottleneckConfig`. ``None`` trains the full model (or what ``freeze`` leaves trainable).
        freeze: Freeze-tuning: which decoder layers / modules of the full model train.
        gradient_checkpointing: Recompute activations in backward to save memory.
        compile: ``torch.compile`` the decoder layers: ``true``, or a dict of `torch.compile` options
            (default ``{"dynamic": true}``). Needs a C++ compiler on CPU; the first steps are slow while it compiles.
        optimizer: Optimiser class and arguments; weight decay skips biases and norm weights.
        lr_scheduler: Learning-rate schedule after warmup.
        warmup_steps: Linear warmup length in optimiser steps (or use ``warmup_ratio``).
        warmup_ratio: Warmup as a fraction of all optimiser steps.
        on_non_finite: When a step's gradients hold NaN or inf: ``stop`` the run with an error naming the step, or
            ``skip`` the step (no weight or optimiser-state change; counted in ``train/skipped_steps``). Runs with
            fp16's gradient scaler leave this to the scaler, which skips overflowing steps itself.
        ewc: Elastic weight consolidation against forgetting: a pull of each trainable weight back to its value at
            the start of training, weighted by its Fisher information on replay data of the earlier task (`EWC`);
            logs ``train/ewc_penalty``. Not under FSDP or DeepSpeed.
    """

    def __init__(
        self,
        model: ModelSpec,
        peft: AdapterConfig | None = None,
        freeze: FreezePolicy | None = None,
        gradient_checkpointing: bool = False,
        compile: bool | dict[str, Any] = False,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: ScheduleName = "cosine",
        warmup_steps: int = 0,
        warmup_ratio: float = 0.0,
        on_non_finite: NonFiniteAction = "stop",
        ewc: EWC | None = None,
    ) -> None:
        super().__init__()
        check_option("on_non_finite", on_non_finite, NonFiniteAction)
        if warmup_steps and warmup_ratio:
            raise UsageError(
                "model.warmup_steps and model.warmup_ratio are both set: set warmup_steps or warmup_ratio, not both"
            )
        self.model_spec = model
        self.peft = peft
        self.freeze = freeze
        self.gradient_checkpointing = gradient_checkpointing
        self.compile_options = compile
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.warmup_steps = warmup_steps
        self.warmup_ratio = warmup_ratio
        self.on_non_finite = on_non_finite
        self.ewc = ewc
        self.skipped_steps = 0
        self._last_loss: torch.Tensor | None = None
        self.tokenizer = model.load_tokenizer()
        self.model: nn.Module | None = None
        self.flops_per_batch: int | None = None
        # Checkpoints hold only trainable weights; `on_load_checkpoint` checks that all of them are there.
        self.strict_loading = False

    def configure_model(self) -> None:
        if self.model is not None:
            return
        if attached_trainer(self) is not None:
            self.model_spec = self.spec_for_strategy(self.model_spec)
        self.model = self.build_model()
        self.model.train()  # from_pretrained returns eval mode; dropout must be live while training
        if self.compile_options:
            options = self.compile_options if isinstance(self.compile_options, dict) else {}
            compiled = compile_decoder_layers(self.model, options)
            rank_zero_info(f"torch.compile: {compiled} decoder layers")
        trainable, total = count_parameters(self.model)
        rank_zero_info(f"Trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.3f}%)")

    def spec_for_strategy(self, spec: ModelSpec) -> ModelSpec:
        """Under FSDP or ZeRO-3, 4-bit weights are stored in the dtype the strategy computes in (QLoRA sharding)."""
        param_dtype = sharded_param_dtype(self.trainer.strategy, str(self.trainer.precision))
        shardable = spec if param_dtype is None else shardable_spec(spec, param_dtype)
        if shardable is not spec:
            rank_zero_info(f"Sharded QLoRA: 4-bit weights stored in, and other weights loaded as, {shardable.dtype}")
        return shardable

    def build_model(self) -> nn.Module:
        """The model to train: the spec's causal LM with the adapter or freeze policy applied. Algorithms that need
        another head (reward models) override this."""
        return build_trainable_model(self.model_spec, self.peft, self.freeze, self.gradient_checkpointing)

    def export(self, directory: str | Path, generation: GenerationDefaults | None = None) -> Path:
        """Write what was trained (adapter or full model) with the tokenizer as a Hugging Face directory, with
        ``generation`` as the defaults its ``generation_config.json`` records (default: the base model's)."""
        return save_export(self.model, self.tokenizer, self.model_spec, directory, generation=generation)

    def on_fit_start(self) -> None:
        if self.device.type == "cpu":
            fix_mmap_threshold()  # freed activations go back to the system instead of fragmenting the heap
        dtype = next(self.model.parameters()).dtype
        message = slow_bf16_warning(self.device.type, self.trainer.precision, dtype)
        if message:
            rank_zero_warn(message)
        if self.ewc is not None:
            self.ewc.start(self)

    def on_before_backward(self, loss: torch.Tensor) -> None:
        self._last_loss = loss.detach()

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        """Add EWC's penalty gradient (once per optimiser step: subclasses call this after rescaling their own
        gradients, before clipping), then stop or skip a step whose gradients are not finite (after backward and any
        all-reduce, so every rank decides alike)."""
        if self.ewc is not None:
            parameters = trainable_parameters(self.model)
            self.log("train/ewc_penalty", self.ewc.penalty(parameters), on_step=True)
            self.ewc.add_gradient(parameters)
        if getattr(self.trainer.precision_plugin, "scaler", None) is not None or gradients_are_finite(optimizer):
            return
        message = non_finite_message(self.global_step, self.current_epoch, self._last_loss)
        if self.on_non_finite == "stop":
            raise FloatingPointError(f"{message}. {NON_FINITE_ADVICE}")
        rank_zero_warn(f"{message}: step skipped (model.on_non_finite: skip)")
        drop_gradients(optimizer)
        self.skipped_steps += 1
        self.log("train/skipped_steps", float(self.skipped_steps))

    def configure_callbacks(self) -> list[L.Callback]:
        return [OutOfMemoryAdvice(), ResumeDataPosition()]

    def configure_optimizers(self) -> dict[str, Any]:
        decay, no_decay = [], []
        for parameter in self.parameters():  # the model, and any head an algorithm adds (PPO's value head)
            if parameter.requires_grad:
                (decay if parameter.ndim >= 2 else no_decay).append(parameter)
        optimizer = self.optimizer([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}])
        total_steps = int(self.trainer.estimated_stepping_batches)  # batches, capped by max_steps
        if self.optimizer_steps_per_batch > 1:  # manual optimisation stepping several times per batch
            total_steps *= self.optimizer_steps_per_batch
            if self.trainer.max_steps != -1:
                total_steps = min(total_steps, self.trainer.max_steps)
        warmup = self.warmup_steps or int(self.warmup_ratio * total_steps)
        scheduler = get_scheduler(self.lr_scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    @property
    def optimizer_steps_per_batch(self) -> int:
        """Optimiser (and schedule) steps per training batch: 1, except for algorithms that step several times."""
        return 1

    def validation_set_name(self, dataloader_idx: int) -> str:
        """The prefix a validation loader's metrics are logged under: the data module's `val_set_names` (``val``,
        then ``val_<name>`` for its ``val_extra`` sets); without them ``val``, then ``val_<index>``."""
        datamodule = getattr(attached_trainer(self), "datamodule", None)
        names = getattr(datamodule, "val_set_names", None)
        if names and dataloader_idx < len(names):
            return names[dataloader_idx]
        return "val" if dataloader_idx == 0 else f"val_{dataloader_idx}"

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        trainable = self._trainable_state_keys()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
        checkpoint["rng_states"] = rng_states()  # dropout, NEFTune noise and sampling resume exactly
        if self.ewc is not None and self.ewc.anchors is not None:
            checkpoint["ewc"] = self.ewc.state_dict()  # a resumed run keeps the original anchors

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "rng_states" in checkpoint:
            set_rng_states(checkpoint["rng_states"])  # numpy takes its key as a list too
        if self.ewc is not None and "ewc" in checkpoint:
            self.ewc.load_state_dict(checkpoint["ewc"])  # before `on_fit_start`, which then keeps them
        offload = getattr(getattr(attached_trainer(self), "strategy", None), "cpu_offload", None)
        if "state_dict" not in checkpoint and offload is not None and offload.offload_params:
            raise UsageError(
                "Resuming under FSDP's CPU offload (cpu_offload: true, configs/strategies/fsdp_offload.yaml) does "
                "not restore the weights yet (a known bug): the run would start over from the base model"
            )
        if self.model is None or "state_dict" not in checkpoint:  # FSDP's strategy loads the weights itself
            return
        missing = self._trainable_state_keys() - set(checkpoint["state_dict"])
        if missing:
            raise UsageError(
                f"The checkpoint lacks {len(missing)} trainable weights of this model, e.g. {sorted(missing)[:3]}: it "
                "was saved from another model or adapter; resume with the model and peft options of the run that "
                "wrote it"
            )

    def _trainable_state_keys(self) -> set[str]:
        """The trainable parameters' names as state dicts spell them: without the wrapper prefixes of FSDP and
        activation checkpointing, which `named_parameters` keeps and their state dicts drop."""
        names = set()
        for name, parameter in self.named_parameters():
            if parameter.requires_grad:
                for prefix in WRAPPER_PREFIXES:
                    name = name.replace(prefix, "")
                names.add(name)
        return names


WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.")


def rng_states() -> dict[str, Any]:
    """Lightning's RNG states (torch, CUDA, numpy, python) in types a ``weights_only`` checkpoint load accepts."""
    states = collect_rng_states()
    kind, key, position, has_gauss, cached_gaussian = states["numpy"]
    states["numpy"] = (kind, [int(word) for word in key], int(position), int(has_gauss), float(cached_gaussian))
    return states


def reset_metrics(*metrics: Metric) -> None:
    """Reset torchmetrics states as normal tensors even inside ``Trainer.validate``'s inference mode, so a later
    ``fit`` (which validates under ``no_grad``) can still update them in place."""
    with torch.inference_mode(False):
        for metric in metrics:
            metric.reset()
