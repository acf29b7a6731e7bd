"""`VisionLanguageSFT`: LLaVA-style visual instruction tuning of any `AutoModelForImageTextToText` model, in stages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from peft import get_peft_model
from torch import nn
from transformers import AutoModelForImageTextToText

from lightning_ft.algorithms.sft import SFT
from lightning_ft.errors import UsageError
from lightning_ft.model.export import save_export
from lightning_ft.model.generation_defaults import GenerationDefaults
from lightning_ft.model.spec import ModelSpec
from lightning_ft.model.trainable import load_for_training
from lightning_ft.model.vision import language_model_peft_config, set_trainable_parts, vision_language_parts

VISION_INPUTS = ("pixel_values", "image_sizes", "image_grid_thw", "pixel_attention_mask")


class VisionLanguageSFT(SFT):
    """SFT of a vision-language model on `lightning_ft.data.MultimodalData`: the loss covers assistant tokens only.

    Stage 1 (``train_language_model: false``, no adapter) trains the projector alone; stage 2 trains projector and
    language model, fully or with an adapter (``peft``), which then targets the language model's layers only and
    saves the projector beside it. The vision tower stays frozen unless ``train_vision_tower``.

    Args:
        model: A model loadable with ``AutoModelForImageTextToText`` and ``AutoProcessor`` (LLaVA, or one that
            ``lightning_ft.model.llava.assemble_llava`` built from a vision encoder and a language model).
        train_projector: Train the projector between vision features and language embeddings.
        train_language_model: Train the language model (and its output head); with ``peft``, through the adapter.
        train_vision_tower: Train the vision encoder too (with ``peft``: adapters on its layers).
        **kwargs: `SFT` arguments (``peft``, optimiser, schedule, ``neftune_noise_alpha``, ...); no ``freeze``.
    """

    def __init__(
        self,
        model: ModelSpec,
        train_projector: bool = True,
        train_language_model: bool = True,
        train_vision_tower: bool = False,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("freeze") is not None:
            raise UsageError(
                "VisionLanguageSFT chooses what trains with train_projector / train_language_model / "
                "train_vision_tower, not freeze: remove model.freeze"
            )
        super().__init__(model, **kwargs)
        if not (train_projector or train_language_model or train_vision_tower):
            raise UsageError(
                "Nothing would train: set model.train_projector, model.train_language_model or model.train_vision_tower"
            )
        if self.peft is not None and not (train_language_model or train_vision_tower):
            raise UsageError(
                "An adapter needs train_language_model (or train_vision_tower); for stage 1 (projector only) "
                "leave model.peft unset"
            )
        self.train_projector = train_projector
        self.train_language_model = train_language_model
        self.train_vision_tower = train_vision_tower
        self.processor = model.load_processor(self.tokenizer)

    def build_model(self) -> nn.Module:
        spec = self.model_spec.keep_vision_unquantized()
        model = load_for_training(spec, self.peft is not None, self.gradient_checkpointing, AutoModelForImageTextToText)
        parts = vision_language_parts(model)
        set_trainable_parts(
            model, parts, self.train_vision_tower, self.train_projector, self.train_language_model and not self.peft
        )
        if self.peft is None:
            return model
        config = language_model_peft_config(self.peft, model, parts, self.train_projector, self.train_vision_tower)
        return get_peft_model(model, config)

    def extra_model_inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: batch[name] for name in VISION_INPUTS if name in batch}

    def export(self, directory: str | Path, generation: GenerationDefaults | None = None) -> Path:
        """The adapter (projector included) or full model with the processor; loads with `AutoProcessor` and
        `AutoModelForImageTextToText` (adapters through `load_export` or peft)."""
        details = {"auto_class": "AutoModelForImageTextToText"}
        return save_export(self.model, self.processor, self.model_spec, directory, details, generation)
