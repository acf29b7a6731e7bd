"""The parts of a vision-language model (vision tower, projector, language model), found by name, and what trains
in each training stage: freezing, and PEFT configs aimed at the language model only."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from peft import PeftConfig
from torch import nn

from lightning_ft.errors import UsageError

VISION_TOWER_NAMES = ("vision_tower", "visual", "vision_model")
PROJECTOR_NAMES = ("multi_modal_projector", "mm_projector", "connector", "merger")
LANGUAGE_MODEL_NAMES = ("language_model",)


class VisionLanguageParts(NamedTuple):
    """Qualified module names of the three parts (``model.vision_tower``, ...)."""

    vision_tower: str
    projector: str
    language_model: str


def vision_language_parts(model: nn.Module) -> VisionLanguageParts:
    """Find the parts by their usual names (LLaVA, LLaVA-NeXT, Qwen2-VL, Idefics, ...): the shallowest module with
    one of the names in ``*_NAMES``.

    Raises:
        ValueError: A part is missing; the message lists the names looked for.
    """
    found = {}
    for part, names in (
        ("vision_tower", VISION_TOWER_NAMES),
        ("projector", PROJECTOR_NAMES),
        ("language_model", LANGUAGE_MODEL_NAMES),
    ):
        candidates = [name for name, _ in model.named_modules() if name.rsplit(".", 1)[-1] in names]
        if not candidates:
            raise UsageError(
                f"{type(model).__name__} has no {part.replace('_', ' ')} module: looked for submodules named "
                f"{', '.join(names)}"
            )
        found[part] = min(candidates, key=lambda name: name.count("."))
    return VisionLanguageParts(**found)


def set_trainable_parts(
    model: nn.Module, parts: VisionLanguageParts, vision_tower: bool, projector: bool, language_model: bool
) -> None:
    """Freeze or unfreeze each part wholly; the output head trains with the language model."""
    model.requires_grad_(False)
    chosen = {parts.vision_tower: vision_tower, parts.projector: projector, parts.language_model: language_model}
    for name, trains in chosen.items():
        model.get_submodule(name).requires_grad_(trains)
    head = model.get_output_embeddings()
    if head is not None and language_model:
        head.requires_grad_(True)


def language_model_peft_config(
    config: PeftConfig, model: nn.Module, parts: VisionLanguageParts, projector: bool, vision_tower: bool
) -> PeftConfig:
    """``config`` aimed at the language model's linear layers (and the vision tower's with ``vision_tower``), with
    the projector fully trained and saved beside the adapter (``modules_to_save``) when ``projector``.

    ``target_modules`` given as names (or ``all-linear``) becomes the list of those layers' qualified names, so a
    name shared with the vision tower (``q_proj``, ``fc1``) never reaches it unless asked; the output head is
    included when named (``lm_head``), as ``all-linear`` leaves it out. A regex is kept as given.
    """
    targets = getattr(config, "target_modules", None)
    changes: dict = {}
    if targets is not None and not (isinstance(targets, str) and targets != "all-linear"):
        roots = [parts.language_model] + ([parts.vision_tower] if vision_tower else [])
        wanted = None if targets == "all-linear" else set(targets)
        names = sorted(
            f"{root}.{name}"
            for root in roots
            for name, module in model.get_submodule(root).named_modules()
            if isinstance(module, nn.Linear) and (wanted is None or name.rsplit(".", 1)[-1] in wanted)
        )
        head = next(name for name, module in model.named_modules() if module is model.get_output_embeddings())
        if wanted is not None and head.rsplit(".", 1)[-1] in wanted:  # the output head, when named (``lm_head``)
            names.append(head)
        if not names:
            raise UsageError(f"model.peft.target_modules {targets!r} match no linear layer of the language model")
        changes["target_modules"] = names
    if projector and hasattr(config, "modules_to_save"):
        changes["modules_to_save"] = sorted({*(config.modules_to_save or []), parts.projector.rsplit(".", 1)[-1]})
    return dataclasses.replace(config, **changes) if changes else config
