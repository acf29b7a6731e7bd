"""`GenerationEval`: answer a fixed sample of held-out prompts at validation and log generation metrics (exact match,
ROUGE-L, ...) beside the validation loss, where `EarlyStopping` and `ModelCheckpoint` can monitor them."""

from __future__ import annotations

import random
from collections.abc import Sequence
from textwrap import indent
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_ft.data.sources import DataError
from lightning_ft.errors import UnsupportedError, UsageError
from lightning_ft.eval.items import EvalItem, ItemFormat, load_items
from lightning_ft.eval.metrics import GENERATION_METRICS
from lightning_ft.model.generation import generate_replies
from lightning_ft.model.heads import unwrap
from lightning_ft.options import check_keys, check_option, valid_values


class GenerationEval(L.Callback):
    """Greedy generation on a seeded sample of prompts with reference answers, scored at the end of validation.

    The sample is drawn once (``seed``), so every evaluation scores the same items. The module's ``model`` generates
    in eval mode under ``no_grad`` and the trainer's precision, with the module's ``tokenizer`` and chat template; the
    data module's ``system_prompt`` applies to prompts without a system turn. Each metric is logged as
    ``val/<metric>``, the mean over the sample, through ``pl_module.log`` (so monitors can use it); the first
    ``log_samples`` prompts, completions and references go to TensorBoard as text (tags ``val/sample_<i>``).
    Sanity-check validations are skipped.

    Distributed runs: every rank generates the whole sample (under FSDP or DeepSpeed ZeRO-3 every rank must take part
    in each forward anyway) and rank 0's scores are broadcast, so every rank logs the same values. Text models only:
    a vision-language module (one with a ``processor``) is refused.

    Args:
        data: Prompts with reference answers, in any format `lightning_ft.eval.items.load_items` reads (alpaca,
            dolly, messages, sharegpt, qa, ...). Default: the data module's ``val`` file, read with the data module's
            ``format`` and ``fields`` when ``format`` and ``fields`` here are left unset.
        format: Item format of the data; ``auto`` recognises it from each record's fields.
        fields: Rename the fields of ``format``, as in training (e.g. ``{"output": "answer"}``).
        num_samples: Items scored at each evaluation (all of them when the data has fewer).
        seed: Seed of the sample.
        max_new_tokens: Longest completion.
        batch_size: Prompts per generation batch.
        metrics: Metrics to log, from `lightning_ft.eval.metrics.GENERATION_METRICS`.
        log_samples: How many items' prompt, completion and reference to log as text.
        every_n_validations: Generate at every n-th validation only (generating is slower than a loss). Keep 1 when
            `EarlyStopping` monitors a generation metric: it counts every validation.
    """

    def __init__(
        self,
        data: str | None = None,
        format: ItemFormat = "auto",
        fields: dict[str, str] | None = None,
        num_samples: int = 16,
        seed: int = 0,
        max_new_tokens: int = 128,
        batch_size: int = 8,
        metrics: Sequence[str] = ("exact_match", "rouge_l"),
        log_samples: int = 3,
        every_n_validations: int = 1,
    ) -> None:
        check_option("format", format, ItemFormat)
        check_keys("generation metrics", metrics, GENERATION_METRICS)
        if not metrics:
            raise UsageError(f"GenerationEval needs at least one metric; valid: {', '.join(GENERATION_METRICS)}")
        for name, value, least in (
            ("num_samples", num_samples, 1),
            ("max_new_tokens", max_new_tokens, 1),
            ("batch_size", batch_size, 1),
            ("log_samples", log_samples, 0),
            ("every_n_validations", every_n_validations, 1),
        ):
            if value < least:
                raise UsageError(f"GenerationEval {name} must be at least {least}, got {value}")
        self.data = data
        self.format = format
        self.fields = fields
        self.num_samples = num_samples
        self.seed = seed
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.metrics = list(metrics)
        self.log_samples = log_samples
        self.every_n_validations = every_n_validations
        self.items: list[EvalItem] = []
        self.completions: list[str] = []
        self.validations = 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if getattr(pl_module, "processor", None) is not None:
            raise UnsupportedError(
                f"GenerationEval generates text only; {type(pl_module).__name__} is a vision-language module: remove "
                "GenerationEval from trainer.callbacks"
            )
        datamodule = getattr(trainer, "datamodule", None)
        source, format, fields = self.source(datamodule)
        system_prompt = getattr(datamodule, "system_prompt", None)
        items = load_items(source, format=format, fields=fields, system_prompt=system_prompt)
        self.items = self.sample(items, source)

    def source(self, datamodule: Any) -> tuple[str, ItemFormat, dict[str, str] | None]:
        """``(file, format, fields)`` to read: ``data``, else the data module's ``val`` file in its own format."""
        if self.data is not None:
            return self.data, self.format, self.fields
        source = getattr(datamodule, "val", None)
        if source is None:
            raise UsageError(
                "GenerationEval needs `data` (prompts with reference answers): the data module has no `val` file "
                "to default to (a val_fraction split is not a file)"
            )
        own_format = getattr(datamodule, "format", None)
        if self.format == "auto" and self.fields is None and own_format in valid_values(ItemFormat):
            return source, own_format, getattr(datamodule, "fields", None)
        return source, self.format, self.fields

    def sample(self, items: list[EvalItem], source: str) -> list[EvalItem]:
        """The seeded sample of the items that have a reference, in file order."""
        scorable = [item for item in items if item.reference is not None]
        if not scorable:
            raise DataError(f"{source}: no item has a reference answer to score against")
        picked = random.Random(self.seed).sample(range(len(scorable)), min(self.num_samples, len(scorable)))
        return [scorable[index] for index in sorted(picked)]

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.validations += 1
        if self.validations % self.every_n_validations:
            return
        self.completions = self.generate(trainer, pl_module)
        scores = self.score(self.completions)
        scores = trainer.strategy.broadcast(scores, src=0)
        for name, value in scores.items():
            pl_module.log(f"val/{name}", value, add_dataloader_idx=False)
        if trainer.is_global_zero:
            self.log_text(trainer)

    def generate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> list[str]:
        """Greedy completions of the sampled items' prompts by ``pl_module.model``, left in the mode it was in."""
        model = pl_module.model
        if not unwrap(model).can_generate():
            raise UnsupportedError(
                f"GenerationEval needs a generative model; {type(unwrap(model)).__name__} cannot generate: remove "
                "GenerationEval from trainer.callbacks"
            )
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), trainer.precision_plugin.forward_context():
                return generate_replies(
                    model,
                    pl_module.tokenizer,
                    [item.prompt for item in self.items],
                    max_new_tokens=self.max_new_tokens,
                    temperature=0.0,
                    seed=self.seed,
                    batch_size=self.batch_size,
                )
        finally:
            model.train(was_training)

    def score(self, completions: list[str]) -> dict[str, float]:
        """``metric -> mean score`` of ``completions`` against the sampled items' references."""
        return {
            name: sum(
                GENERATION_METRICS[name](completion, item.reference)
                for item, completion in zip(self.items, completions, strict=True)
            )
            / len(completions)
            for name in self.metrics
        }

    def log_text(self, trainer: L.Trainer) -> None:
        """The first ``log_samples`` items with their completions, as Markdown text to each TensorBoard logger."""
        shown = list(zip(self.items, self.completions, strict=True))[: self.log_samples]
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                for index, (item, completion) in enumerate(shown):
                    logger.experiment.add_text(
                        f"val/sample_{index}", sample_markdown(item, completion), trainer.global_step
                    )

    def state_dict(self) -> dict[str, Any]:
        return {"validations": self.validations}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.validations = state_dict.get("validations", 0)


def sample_markdown(item: EvalItem, completion: str) -> str:
    """An item's prompt turns, the completion and the reference as Markdown sections of literal (indented) text."""
    prompt = "\n".join(f"{message['role']}: {message['content']}" for message in item.prompt)
    sections = {"prompt": prompt, "completion": completion, "reference": item.reference or ""}
    body = "\n\n".join(f"**{title}**\n\n{indent(text or '(empty)', '    ')}" for title, text in sections.items())
    return f"**item** {item.id}\n\n{body}"
