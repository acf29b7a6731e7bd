"""`DPO`: preference optimisation from pairs (DPO, cDPO, robust, hinge, IPO, SimPO, ORPO) or unpaired examples (KTO)."""

from __future__ import annotations

import inspect
import json
from typing import Any

import torch
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn

from lightning_ft.algorithms.reference import (
    ReferencedPolicy,
    load_frozen_reference,
    needs_frozen_copy,
    reference_policy,
)
from lightning_ft.algorithms.shared_prompt import can_share_prompt, shared_prompt_sequence_logps
from lightning_ft.losses.logps import packed_sequence_logps, sequence_logps
from lightning_ft.losses.preference import PreferenceLossType, kto_loss, loss_options, preference_loss
from lightning_ft.model.fingerprint import weights_fingerprint
from lightning_ft.model.forward import sequence_hidden_states
from lightning_ft.model.heads import output_projection
from lightning_ft.model.spec import ModelSpec

Batch = dict[str, torch.Tensor]


class DPO(ReferencedPolicy):
    """Preference optimisation on `PreferenceData` batches.

    Chosen and rejected responses go through the model in one forward (the batch holds them side by side). The
    reference model, for the losses that have one, is the base with the adapter disabled when training an adapter
    (no second copy in memory), a frozen copy of the base otherwise, or, with ``precompute_reference_logps``, neither:
    its log-probs are computed once before training and cached with the tokenized data, for every later epoch and run.

    Validation logs ``val/loss``, ``val/rewards/...`` and ``val/logps/...`` (means over the set's pairs or examples),
    and the same under ``val_<name>/`` for each extra validation set of the data module (``val_extra``).

    Loss normalisation: each micro-batch's loss is the mean over its pairs (examples for KTO), and Lightning averages
    micro-batches under gradient accumulation and devices, so every pair weighs the same when micro-batches are full.

    Args:
        model: The model to align.
        loss_type: ``sigmoid`` (DPO; cDPO with ``label_smoothing``), ``ipo``, ``hinge``, ``robust``, the
            reference-free ``simpo`` and ``orpo``, or ``kto`` (unpaired data: `PreferenceData` with ``format: kto``).
        beta: Inverse temperature of the implicit reward (IPO's τ, ORPO's λ, SimPO's β). The default suits the DPO
            family; SimPO wants about 2 (its paper uses 2.0-2.5, as ``configs/dpo/simpo.yaml`` does).
        label_smoothing: Assumed rate of flipped preferences (``sigmoid`` = cDPO, ``robust``, ``simpo``).
        gamma_beta_ratio: SimPO's target margin over β.
        rpo_alpha: Weight of the chosen responses' mean token NLL added to the loss (RPO); ``orpo`` uses 1 unless set.
        desirable_weight: KTO's weight of desirable examples.
        undesirable_weight: KTO's weight of undesirable examples.
        precompute_reference_logps: Score the data with the reference once, before training, and cache the result
            beside the tokenized data, instead of running the reference in every step.
        unpadded_pairs: Where pairs run as one row each (SDPA or eager attention), run each pair's row on its own
            at its length, a forward per pair, instead of the batch's rows padded to the longest: no work on padding.
            ``None``: on the CPU, where a batch's rows gain no speed from running together (on ``dpo_en_demo``,
            batches of 4 pairs are a quarter padding); a GPU keeps the padded batch.
        **kwargs: `ReferencedPolicy` / `FineTuneModule` arguments: ``disable_dropout`` (default on, so log-prob
            ratios start at 0), peft, freeze, optimizer, schedule, ...
    """

    def __init__(
        self,
        model: ModelSpec,
        loss_type: PreferenceLossType = "sigmoid",
        beta: float = 0.1,
        label_smoothing: float = 0.0,
        gamma_beta_ratio: float = 0.5,
        rpo_alpha: float | None = None,
        desirable_weight: float = 1.0,
        undesirable_weight: float = 1.0,
        precompute_reference_logps: bool = False,
        unpadded_pairs: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        self.paired_loss = preference_loss(loss_type)
        self.loss_type = loss_type
        self.beta = beta
        self.rpo_alpha = rpo_alpha
        self.desirable_weight = desirable_weight
        self.undesirable_weight = undesirable_weight
        self.precompute_reference_logps = precompute_reference_logps
        self.unpadded_pairs = unpadded_pairs
        # split -> (reference log-probs (records, 2), the dataset they were read from); not a buffer: kept in float32
        self.reference_logps_table: dict[str, tuple[torch.Tensor, Any]] = {}
        self.loss_options = self._loss_options(label_smoothing=label_smoothing, gamma_beta_ratio=gamma_beta_ratio)

    @property
    def needs_reference(self) -> bool:
        return self.paired_loss is None or self.paired_loss.needs_reference

    @property
    def live_reference(self) -> bool:
        return self.needs_reference and not self.precompute_reference_logps

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self._load_reference_logps()

    def on_validation_start(self) -> None:
        self._load_reference_logps()  # `validate` alone has no fit start

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._step(batch, self.validation_set_name(dataloader_idx))

    def _step(self, batch: Batch, stage: str) -> torch.Tensor:
        """One batch's loss, logged under ``stage``: ``train``, or the validation set's name (the data split)."""
        if self.loss_type == "kto":
            return self._unpaired_step(batch, stage)
        return self._paired_step(batch, stage)

    def _paired_step(self, batch: Batch, stage: str) -> torch.Tensor:
        logps, num_tokens = self._sequence_logps(self.model, batch)
        policy = logps / num_tokens if self.paired_loss.average_logps else logps
        policy_chosen, policy_rejected = policy.chunk(2)
        inputs = [policy_chosen, policy_rejected]
        if self.paired_loss.needs_reference:
            reference = self._reference_logps(batch, ("chosen_", "rejected_"), stage)
            inputs += (reference / num_tokens if self.paired_loss.average_logps else reference).chunk(2)
        losses, chosen_rewards, rejected_rewards = self.paired_loss.function(*inputs, **self.loss_options)
        loss = losses.mean()
        nll_weight = self.paired_loss.nll_weight if self.rpo_alpha is None else self.rpo_alpha
        metrics = {
            "rewards/chosen": chosen_rewards.mean(),
            "rewards/rejected": rejected_rewards.mean(),
            "rewards/accuracy": (chosen_rewards > rejected_rewards).float().mean(),
            "rewards/margin": (chosen_rewards - rejected_rewards).mean(),
            "logps/chosen": policy_chosen.detach().mean(),
            "logps/rejected": policy_rejected.detach().mean(),
        }
        if nll_weight:
            chosen_logps, chosen_tokens = logps.chunk(2)[0], num_tokens.chunk(2)[0]
            nll = -chosen_logps.sum() / chosen_tokens.sum().clamp(min=1)
            loss = loss + nll_weight * nll
            metrics["nll"] = nll.detach()
        self._log(stage, loss, metrics, batch_size=policy_chosen.shape[0])
        return loss

    def _unpaired_step(self, batch: Batch, stage: str) -> torch.Tensor:
        completions, kl_pairs = split_sides(batch)
        policy, _ = self._sequence_logps(self.model, completions)
        with torch.no_grad():
            policy_kl, _ = self._sequence_logps(self.model, kl_pairs)
        reference, reference_kl = self._reference_logps(batch, ("", "kl_"), stage).chunk(2)
        kl = self.trainer.strategy.reduce((policy_kl - reference_kl).mean(), reduce_op="mean")
        desirable = batch["desirable"].bool()
        losses, rewards = kto_loss(
            policy, reference, desirable, kl, self.beta, self.desirable_weight, self.undesirable_weight
        )
        loss = losses.mean()
        metrics = {"kl": kl.detach(), "logps/completion": policy.detach().mean()}
        counts = {}
        for kind, mask in (("desirable", desirable), ("undesirable", ~desirable)):
            # Every batch logs both, weighted by its own count: the epoch value is the mean over the examples of the
            # kind, and under DDP every device enters the same collectives when it is synced. A batch without one
            # logs 0 with weight 0 (NaN in a training step, whose value is logged as it is).
            count = int(mask.sum())
            counts[f"rewards/{kind}"] = count
            empty = float("nan") if stage == "train" else 0.0
            metrics[f"rewards/{kind}"] = rewards[mask].mean() if count else rewards.new_tensor(empty)
        self._log(stage, loss, metrics, batch_size=policy.shape[0], counts=counts)
        return loss

    def _log(
        self,
        stage: str,
        loss: torch.Tensor,
        metrics: dict[str, torch.Tensor],
        batch_size: int,
        counts: dict[str, int] | None = None,
    ) -> None:
        """Log the loss and ``metrics``, each weighted by ``batch_size`` in epoch means, or by its entry in
        ``counts``."""
        counts = counts or {}
        on_step = stage == "train"
        self.log(
            f"{stage}/loss",
            loss.detach(),
            prog_bar=True,
            on_step=on_step,
            on_epoch=not on_step,
            batch_size=batch_size,
            sync_dist=not on_step,
            add_dataloader_idx=False,
        )
        for name, value in metrics.items():
            self.log(
                f"{stage}/{name}",
                value,
                on_step=on_step,
                on_epoch=not on_step,
                batch_size=counts.get(name, batch_size),
                sync_dist=not on_step,
                add_dataloader_idx=False,
            )

    def _sequence_logps(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(2B,)`` summed log-probs of each sequence's labelled tokens and their counts (padded or packed).

        Padded pairs run each prompt once for both sides (`shared_prompt_sequence_logps`) where the model allows.
        """
        if "sequence_ids" not in batch and self.loss_type != "kto" and can_share_prompt(model):
            each_pair = (
                self.unpadded_pairs if self.unpadded_pairs is not None else batch["input_ids"].device.type == "cpu"
            )
            return shared_prompt_sequence_logps(model, output_projection(model), batch, each_pair)
        hidden = sequence_hidden_states(model, batch)
        if "sequence_ids" not in batch:
            return sequence_logps(hidden, output_projection(model), batch["labels"])
        sequence_ids = batch["sequence_ids"]  # packed rows are never padded: the ids run 0 .. 2B - 1
        num_sequences = int(sequence_ids.max()) + 1
        return packed_sequence_logps(hidden, output_projection(model), batch["labels"], sequence_ids, num_sequences)

    def _reference_logps(self, batch: Batch, sides: tuple[str, str], split: str = "val") -> torch.Tensor:
        """``(2B,)`` summed reference log-probs of both sides: the precomputed float32 values of the batch's records
        in ``split``, or the reference model run now."""
        if self.precompute_reference_logps:
            table, _ = self.reference_logps_table[split]
            values = table[batch["record"]]  # (B, 2): never in the batch, which precisions cast to bf16 / fp16
            if values.isnan().any():
                missing = batch["record"][values.isnan().any(dim=1)].tolist()
                raise RuntimeError(f"No precomputed reference log-probs for records {missing}")
            return torch.cat([values[:, 0], values[:, 1]])
        with torch.no_grad(), reference_policy(self.model, self.reference_model) as reference:
            return self._sequence_logps(reference, batch)[0]

    def _load_reference_logps(self) -> None:
        """Score the data with the reference once (or read the scores that `PreferenceData` cached under the same
        reference weights and data) and keep them as float32 tables ``split -> (records, 2)``, looked up by record.

        Scored under the training precision (a full fine-tune's temporary frozen copy converted to it, the forward in
        its autocast context), so the values equal those a live reference gives. Runs at fit start and at the start
        of a validation that has none, whatever the order of runs or when the loaders were built.
        """
        if not (self.needs_reference and self.precompute_reference_logps):
            return
        datamodule = self.trainer.datamodule
        if not hasattr(datamodule, "add_reference_logps"):
            raise TypeError(
                "precompute_reference_logps needs a data module with `add_reference_logps` (PreferenceData), "
                f"got {type(datamodule).__name__}"
            )
        fitting = self.trainer.state.fn == TrainerFn.FITTING
        splits = [split for split in datamodule.datasets if fitting or split != "train"]
        if all(
            self.reference_logps_table.get(split, (None, None))[1] is datamodule.datasets[split] for split in splits
        ):
            return
        sides = ("", "kl_") if self.loss_type == "kto" else ("chosen_", "rejected_")
        columns = [f"reference_{side}logps" for side in sides]
        spec = self.model_spec
        key = json.dumps(
            {"reference": spec.to_dict(), "quantization": repr(spec.quantization), "weights": weights_fingerprint(spec)}
        )
        precision = self.trainer.precision_plugin
        temporary: list[nn.Module] = []  # a frozen copy for full fine-tuning, loaded on the first batch only

        def score(batch: Batch) -> dict[str, torch.Tensor]:
            batch = {name: value.to(self.device) for name, value in batch.items()}
            if needs_frozen_copy(self.model) and not temporary:
                copy = load_frozen_reference(spec, self.disable_dropout)
                temporary.append(precision.convert_module(copy).to(self.device))
            was_training = self.model.training
            self.model.eval()
            reference_model = temporary[0] if temporary else None
            with torch.no_grad(), precision.forward_context(), reference_policy(self.model, reference_model) as model:
                logps = self._sequence_logps(model, batch)[0].float().cpu()
            self.model.train(was_training)
            return dict(zip(columns, logps.chunk(2), strict=True))

        # Every rank computes under sharded strategies (the forward needs them all); otherwise rank 0 computes and
        # the others read datasets' cache.
        sharded = isinstance(self.trainer.strategy, (FSDPStrategy, DeepSpeedStrategy))
        if sharded or self.trainer.is_global_zero:
            datamodule.add_reference_logps(score, key, splits)
        self.trainer.strategy.barrier()
        if not (sharded or self.trainer.is_global_zero):
            datamodule.add_reference_logps(score, key, splits)
        temporary.clear()
        for split in splits:
            dataset = datamodule.datasets[split]
            self.reference_logps_table[split] = (reference_table(dataset, columns).to(self.device), dataset)

    def _loss_options(self, **options: float) -> dict[str, float]:
        """``beta`` plus the options the chosen loss function takes (an option set for a loss without it is an
        error, not silently ignored)."""
        function = kto_loss if self.paired_loss is None else self.paired_loss.function
        defaults = inspect.signature(DPO.__init__).parameters
        declared = {name: (value, defaults[name].default) for name, value in options.items()}
        chosen = loss_options(function, self.loss_type, **declared)
        return {"beta": self.beta, **chosen} if self.paired_loss is not None else chosen


def reference_table(dataset: Any, columns: list[str]) -> torch.Tensor:
    """``(records, 2)`` float32: the two ``columns`` of each row at its ``record`` number, NaN for records absent."""
    records = torch.tensor(dataset["record"])
    table = torch.full((int(records.max()) + 1, 2), torch.nan, dtype=torch.float32)
    table[records] = torch.stack([torch.tensor(dataset[column], dtype=torch.float32) for column in columns], dim=1)
    return table


def split_sides(batch: Batch) -> tuple[Batch, Batch]:
    """The first and second halves of a side-by-side batch (sequence tensors only)."""
    rows = batch["input_ids"].shape[0] // 2
    first, second = {}, {}
    for name in ("input_ids", "attention_mask", "labels"):
        first[name], second[name] = batch[name][:rows], batch[name][rows:]
    return first, second
