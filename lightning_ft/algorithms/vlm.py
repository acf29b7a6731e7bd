"""`VisionLanguageSFT`: LLaVA-style visual instruction tuning of any `AutoModelForImageTextToText` model, in stages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from peft import get_peft_model, prepare_model_for_kbit_training
from torch import nn
from transformers import AutoModelForImageTextToText, AutoProcessor, ProcessorMixin

from lightning_ft.algorithms.sft import SFT
from lightning_ft.model.export import save_export
from lightning_ft.model.spec import ModelSpec
from lightning_ft.model.trainable import is_quantized
from lightning_ft.model.vision import (
    PROJECTOR_NAMES,
    VISION_TOWER_NAMES,
    language_model_peft_config,
    set_trainable_parts,
    vision_language_parts,
)

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
            raise ValueError(
                "VisionLanguageSFT chooses what trains with train_projector / train_language_model / "
                "train_vision_tower, not freeze"
            )
        super().__init__(model, **kwargs)
        if not (train_projector or train_language_model or train_vision_tower):
            raise ValueError("Nothing would train: set train_projector, train_language_model or train_vision_tower")
        if self.peft is not None and not (train_language_model or train_vision_tower):
            raise ValueError(
                "An adapter needs train_language_model (or train_vision_tower); for stage 1 (projector only) "
                "leave peft unset"
            )
        self.train_projector = train_projector
        self.train_language_model = train_language_model
        self.train_vision_tower = train_vision_tower
        self.processor = load_processor(model, self.tokenizer)

    def build_model(self) -> nn.Module:
        model = keep_vision_unquantized(self.model_spec).load_model(AutoModelForImageTextToText)
        model.config.use_cache = False
        parts = vision_language_parts(model)
        checkpointing = {"use_reentrant": False}
        if is_quantized(model):
            if self.peft is None:
                raise ValueError("k-bit quantized weights cannot be trained directly: add an adapter (QLoRA).")
            model = prepare_model_for_kbit_training(model, self.gradient_checkpointing, checkpointing)
        elif self.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing)
        set_trainable_parts(
            model, parts, self.train_vision_tower, self.train_projector, self.train_language_model and not self.peft
        )
        if self.peft is None:
            return model
        config = language_model_peft_config(self.peft, model, parts, self.train_projector, self.train_vision_tower)
        return get_peft_model(model, config)

    def extra_model_inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: batch[name] for name in VISION_INPUTS if name in batch}

    def export(self, directory: str | Path) -> Path:
        """The adapter (projector included) or full model with the processor; loads with `AutoProcessor` and
        `AutoModelForImageTextToText` (adapters through `load_export` or peft)."""
        details = {"auto_class": "AutoModelForImageTextToText"}
        return save_export(self.model, self.processor, self.model_spec, directory, details)


def keep_vision_unquantized(spec: ModelSpec) -> ModelSpec:
    """QLoRA quantizes the language model only: the vision tower and projector (which may train, and whose small
    layers gain little) and the output head stay in full precision, unless the config already lists what to skip."""
    quantization = spec.quantization
    if quantization is None or quantization.llm_int8_skip_modules is not None:
        return spec
    # transformers matches these as regexes from the start of a module's name, up to a module boundary
    skipped = [f".*{name}" for name in (*VISION_TOWER_NAMES, *PROJECTOR_NAMES)]
    return spec.with_quantization(llm_int8_skip_modules=[*skipped, "lm_head"])


def load_processor(spec: ModelSpec, tokenizer: Any) -> ProcessorMixin:
    """The model's processor, holding the tokenizer `ModelSpec` prepared (chat template, pad token)."""
    source = spec.tokenizer_path or spec.path
    processor = AutoProcessor.from_pretrained(source, revision=spec.revision, trust_remote_code=spec.trust_remote_code)
    if not isinstance(processor, ProcessorMixin) or not hasattr(processor, "image_processor"):
        raise ValueError(f"{source} has no image processor (AutoProcessor gave {type(processor).__name__})")
    processor.tokenizer = tokenizer
    return processor
