"""`EWC`: elastic weight consolidation against catastrophic forgetting, for every algorithm (`FineTuneModule`'s
``ewc`` argument).

At the start of the first fit the trainable parameters' values become the anchors and the diagonal Fisher
information of those parameters is estimated on replay data of the earlier task (or loaded from a file). Every
optimiser step then adds the gradient of the penalty (`lightning_ft.losses.ewc`) to the parameters' gradients, which
is the same as adding the penalty to the loss of the step.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy, ModelParallelStrategy, Strategy
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from lightning_ft.errors import UsageError
from lightning_ft.losses.ewc import ewc_gradient, ewc_penalty
from lightning_ft.losses.sft import IGNORE_INDEX, cross_entropy
from lightning_ft.model.forward import sequence_hidden_states
from lightning_ft.model.heads import output_projection, unwrap

if TYPE_CHECKING:
    from lightning_ft.algorithms.base import FineTuneModule

Tensors = Mapping[str, torch.Tensor]
SHARDING_STRATEGIES = (FSDPStrategy, DeepSpeedStrategy, ModelParallelStrategy)


def diagonal_fisher(
    parameters: Tensors, example_losses: Iterable[Callable[[], torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """The empirical diagonal Fisher information ``F = 1/N sum_n (d loss_n / d theta)^2``.

    Each example's gradient is taken on its own (`torch.autograd.grad`, one graph alive at a time), so F is the mean
    of squared per-example gradients, not the square of a batch gradient. No ``.grad`` is touched.

    Args:
        parameters: ``name -> (*shape)`` tensors that require grad.
        example_losses: One callable per example, returning that example's scalar loss (its negative
            log-likelihood); N is their number.

    Returns:
        ``name -> (*shape)`` float32 F; zeros for the parameters no loss depends on.
    """
    names = list(parameters)
    tensors = [parameters[name] for name in names]
    squared_sums = [torch.zeros_like(tensor, dtype=torch.float32) for tensor in tensors]
    count = 0
    for example_loss in example_losses:
        loss = example_loss()
        if loss.requires_grad:
            gradients = torch.autograd.grad(loss, tensors, allow_unused=True)
            for total, gradient in zip(squared_sums, gradients, strict=True):
                if gradient is not None:
                    total.add_(gradient.float().square())
        count += 1
    if count == 0:
        raise ValueError("diagonal_fisher needs at least one example loss")
    return {name: total / count for name, total in zip(names, squared_sums, strict=True)}


class EWC:
    """Elastic weight consolidation (Kirkpatrick et al. 2017): keeps the weights that mattered for an earlier task
    near their values before this fine-tuning, each in proportion to its diagonal Fisher information.

    The anchors are the trainable parameters at the start of the first fit: the base weights when fine-tuning the
    full model, the adapter's initialisation when training an adapter (the penalty then constrains the adapter's
    deviation from its initialisation). The Fisher is the mean squared gradient of one replay example's mean token
    NLL at a time, model in eval mode (no dropout). Anchors and Fisher are saved in checkpoints, so a resumed run keeps
    the original ones. Not under FSDP or DeepSpeed (their parameters are sharded).

    Args:
        replay: Data of the task not to forget (any of our SFT or text data modules), e.g. `ChatData` on general
            conversations, best with ``packing: false``: an example is one row of its batches (a packed row is one
            example). Its tokenizer defaults to the model's.
        strength: lambda, the weight of the penalty ``strength / 2 * sum F (theta - theta*)^2``. The sum runs over
            every trainable entry (millions), so useful values of the normalised Fisher are small: on SmolLM2-135M
            with LoRA r = 16 (tools/forgetting_study.py), 0.01 trades a little domain loss for general loss and 100
            holds the adapter at its start.
        num_examples: Replay examples (rows with trained tokens) the Fisher averages, dealt out between devices.
        fisher_file: A file caching the Fisher: loaded when it exists (the trainable parameters must match), else
            written after estimating it.
        normalize: Divide the Fisher by its mean entry (raw LLM values are about 1e-8), so ``strength`` weighs a
            parameter of average importance.
    """

    def __init__(
        self,
        replay: L.LightningDataModule,
        strength: float = 0.01,
        num_examples: int = 64,
        fisher_file: str | None = None,
        normalize: bool = True,
    ) -> None:
        if strength < 0:
            raise UsageError(f"model.ewc.strength must be 0 or more, got {strength}")
        if num_examples < 1:
            raise UsageError(f"model.ewc.num_examples must be at least 1, got {num_examples}")
        self.replay = replay
        self.strength = strength
        self.num_examples = num_examples
        self.fisher_file = fisher_file
        self.normalize = normalize
        self.anchors: dict[str, torch.Tensor] | None = None  # name -> theta*, in the parameter's dtype
        self.fisher: dict[str, torch.Tensor] | None = None  # name -> F, float32
        self.fisher_examples = 0

    def start(self, module: FineTuneModule) -> None:
        """At fit start: refuse sharded strategies; take the anchors unless a checkpoint (or an earlier fit) set
        them; estimate or load the Fisher unless a checkpoint restored it."""
        check_unsharded(module.trainer.strategy)
        parameters = trainable_parameters(module.model)
        if self.anchors is None:
            self.anchors = {name: parameter.detach().clone() for name, parameter in parameters.items()}
        check_same_parameters(shapes(self.anchors), parameters, "the checkpoint's EWC anchors", RESUME_ADVICE)
        if self.fisher is None:
            self.fisher = self._load_or_estimate(module, parameters)
        check_same_parameters(shapes(self.fisher), parameters, "the checkpoint's EWC Fisher", RESUME_ADVICE)
        self.anchors = {name: self.anchors[name].to(p.device, p.dtype) for name, p in parameters.items()}
        self.fisher = {name: self.fisher[name].to(p.device, torch.float32) for name, p in parameters.items()}

    def penalty(self, parameters: Tensors) -> torch.Tensor:
        """The penalty at the parameters' current values: a float32 scalar, no graph."""
        with torch.no_grad():
            return ewc_penalty(parameters, self.anchors, self.fisher, self.strength)

    def add_gradient(self, parameters: Tensors) -> None:
        """Add the penalty's gradient to each parameter's ``.grad`` (set it where there is none)."""
        for name, gradient in ewc_gradient(parameters, self.anchors, self.fisher, self.strength).items():
            parameter = parameters[name]
            if parameter.grad is None:
                parameter.grad = gradient
            else:
                parameter.grad.add_(gradient.to(parameter.grad.dtype))

    def state_dict(self) -> dict[str, Any]:
        return {"anchors": self.anchors, "fisher": self.fisher, "num_examples": self.fisher_examples}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.anchors = dict(state["anchors"])
        self.fisher = dict(state["fisher"])
        self.fisher_examples = int(state["num_examples"])

    def _load_or_estimate(self, module: FineTuneModule, parameters: Tensors) -> dict[str, torch.Tensor]:
        path = Path(self.fisher_file) if self.fisher_file else None
        if path is not None and module.trainer.strategy.broadcast(path.exists()):
            return self._load_fisher_file(path, parameters)
        fisher = self._estimate(module, parameters)
        if path is not None and module.trainer.is_global_zero:
            payload = {
                "fisher": {name: value.cpu() for name, value in fisher.items()},
                "parameters": shapes(parameters),
                "num_examples": self.fisher_examples,
                "normalized": self.normalize,
            }
            save_atomically(payload, path)
            rank_zero_info(f"EWC: saved the Fisher information to {path}")
        return fisher

    def _load_fisher_file(self, path: Path, parameters: Tensors) -> dict[str, torch.Tensor]:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        advice = "delete it (or set another ewc.fisher_file) to estimate the Fisher of this model and adapter"
        check_same_parameters(saved["parameters"], parameters, f"Fisher file {path}", advice)
        fisher, self.fisher_examples = saved["fisher"], saved["num_examples"]
        if saved["normalized"] and not self.normalize:
            raise UsageError(
                f"Fisher file {path} holds a normalised Fisher: set model.ewc.normalize: true, or {advice}"
            )
        if self.normalize and not saved["normalized"]:
            fisher, _ = normalized(fisher)
        rank_zero_info(f"EWC: Fisher information of {self.fisher_examples} replay examples loaded from {path}")
        return fisher

    def _estimate(self, module: FineTuneModule, parameters: Tensors) -> dict[str, torch.Tensor]:
        """The Fisher over `num_examples` replay rows, dealt out between the devices; every device ends with it."""
        model, trainer = module.model, module.trainer
        if unwrap(model).get_output_embeddings() is None:
            raise UsageError(
                f"EWC estimates the Fisher from token log-likelihoods, but {type(unwrap(model)).__name__} has no "
                "language-model head (a reward model): remove model.ewc"
            )
        self._prepare_replay(module)
        rows = replay_rows(self.replay.train_dataloader(), self.num_examples, trainer.global_rank, trainer.world_size)
        example_losses = (partial(row_nll, model, move_data_to_device(row, module.device)) for row in rows)
        with eval_mode(model), trainer.precision_plugin.forward_context():
            fisher = diagonal_fisher(parameters, example_losses) if rows else zeros_like_all(parameters)
        fisher, self.fisher_examples = average_over_devices(trainer.strategy, fisher, len(rows))
        if self.fisher_examples == 0:
            raise UsageError(
                f"EWC: the replay data ({type(self.replay).__name__}) has no rows with trained tokens: give "
                "model.ewc.replay records the model is trained on (assistant turns, or text)"
            )
        fisher, raw_mean = normalized(fisher) if self.normalize else (fisher, mean_entry(fisher))
        rank_zero_info(
            f"EWC: Fisher information from {self.fisher_examples} replay examples, raw mean entry {raw_mean:.4g}"
            + (" (normalised to 1)" if self.normalize else "")
        )
        return fisher

    def _prepare_replay(self, module: FineTuneModule) -> None:
        """Give the replay data the model's tokenizer (unless it has one) and the trainer, then prepare (on one
        process per node, as Lightning does) and set it up."""
        replay, trainer = self.replay, module.trainer
        if getattr(replay, "tokenizer", None) is None:
            replay.tokenizer = module.tokenizer
        if replay.trainer is None:
            replay.trainer = trainer  # data modules that shard by rank (streaming text) read it
        if trainer.local_rank == 0 and (replay.prepare_data_per_node or trainer.node_rank == 0):
            replay.prepare_data()
        trainer.strategy.barrier("ewc_replay_prepare_data")
        replay.setup("fit")


RESUME_ADVICE = "resume with the model, adapter and freeze settings of the run that wrote the checkpoint"


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """``name -> parameter`` of the model's parameters that require grad, in the model's order."""
    return {name: parameter for name, parameter in model.named_parameters() if parameter.requires_grad}


def shapes(tensors: Tensors) -> dict[str, list[int]]:
    return {name: list(tensor.shape) for name, tensor in tensors.items()}


def check_same_parameters(expected: Mapping[str, Sequence[int]], parameters: Tensors, source: str, advice: str) -> None:
    """Refuse when ``source`` (names -> shapes) and the trainable ``parameters`` differ, naming the first
    parameter (in model order, then ``source``'s) that is missing on either side or has another shape."""
    found = shapes(parameters)
    for name in [*found, *(name for name in expected if name not in found)]:
        if name not in expected:
            problem = f"{name} is trainable but not in {source}"
        elif name not in found:
            problem = f"{name} is in {source} but not a trainable parameter"
        elif list(expected[name]) != found[name]:
            problem = f"{name} has shape {list(expected[name])} in {source} but {found[name]} in the model"
        else:
            continue
        raise UsageError(f"EWC: {source} does not match the trainable parameters: {problem}. Either {advice}.")


def check_unsharded(strategy: Strategy) -> None:
    if isinstance(strategy, SHARDING_STRATEGIES):
        raise UsageError(
            f"EWC needs whole parameters, but {type(strategy).__name__} shards them: train with ddp (or one "
            "device), or remove model.ewc"
        )


def batch_rows(batch: Mapping[str, Any]) -> Iterator[dict[str, torch.Tensor]]:
    """The batch's rows, each as a batch of one row (its tensor columns)."""
    columns = {name: value for name, value in batch.items() if isinstance(value, torch.Tensor)}
    for index in range(batch["input_ids"].shape[0]):
        yield {name: value[index : index + 1] for name, value in columns.items()}


def replay_rows(
    loader: Iterable[Mapping[str, Any]], num_examples: int, rank: int = 0, world_size: int = 1
) -> list[dict[str, torch.Tensor]]:
    """This device's share of the first ``num_examples`` rows with trained tokens: rows ``rank``,
    ``rank + world_size``, ... of them, each as a one-row batch."""
    rows, seen = [], 0
    for batch in loader:
        for row in batch_rows(batch):
            if not has_trained_tokens(row["labels"]):
                continue
            if seen % world_size == rank:
                rows.append(row)
            seen += 1
            if seen == num_examples:
                return rows
    return rows


def has_trained_tokens(labels: torch.Tensor) -> bool:
    """Whether an unshifted ``(1, length)`` label row has a token with loss (position 0 is never predicted)."""
    return bool((labels[:, 1:] != IGNORE_INDEX).any())


def row_nll(model: nn.Module, row: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Mean token negative log-likelihood of a one-row batch's trained tokens."""
    hidden = sequence_hidden_states(model, row)
    loss_sum, num_tokens = cross_entropy(hidden, output_projection(model), row["labels"])
    return loss_sum / num_tokens


def average_over_devices(
    strategy: Strategy, fisher: dict[str, torch.Tensor], count: int
) -> tuple[dict[str, torch.Tensor], int]:
    """The Fisher over every device's examples (this device averaged ``count`` of them), and their total number;
    every device ends with the same Fisher, so the penalty's gradient keeps the replicas in step."""
    if getattr(strategy, "world_size", 1) == 1:
        return fisher, count
    local_count = torch.tensor(float(count), device=strategy.root_device)
    total = strategy.reduce(local_count, reduce_op="sum")
    averaged = {name: strategy.reduce(value * count, reduce_op="sum") / total for name, value in fisher.items()}
    return averaged, int(total)


def zeros_like_all(tensors: Tensors) -> dict[str, torch.Tensor]:
    return {name: torch.zeros_like(tensor, dtype=torch.float32) for name, tensor in tensors.items()}


def mean_entry(fisher: Tensors) -> float:
    entries = sum(value.numel() for value in fisher.values())
    return float(sum(value.double().sum() for value in fisher.values()) / max(entries, 1))


def normalized(fisher: Tensors) -> tuple[dict[str, torch.Tensor], float]:
    """The Fisher divided by its mean entry (so the mean becomes 1), and that mean."""
    mean = mean_entry(fisher)
    if mean <= 0:
        raise UsageError(
            "EWC: the Fisher is zero everywhere (no replay loss depends on the trainable parameters), so it cannot "
            "be normalised: check that the replay data trains tokens the model predicts, or set "
            "model.ewc.normalize: false"
        )
    return {name: value / mean for name, value in fisher.items()}, mean


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Every submodule of ``model`` in eval mode (no dropout) for the block, then back in the mode each was in."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, training in modes.items():
            module.training = training


def save_atomically(payload: Any, path: Path) -> None:
    """``torch.save`` into a temporary file beside ``path``, then rename it into place: readers never see a
    partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(payload, temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
