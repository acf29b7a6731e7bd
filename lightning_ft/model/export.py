"""Hugging Face exports: write what was trained (adapter or full model) with its tokenizer, load it back, merge.

Every export directory holds ``lightning_ft.json``: what kind of export it is and the base model's `ModelSpec`, so
``lightning-ft export`` and ``lightning-ft chat`` can rebuild the base (GGUF bases included) without the recipe.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Literal

from peft import PeftModel
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedModel,
    ProcessorMixin,
)
from transformers.tokenization_utils_base import PreTrainedTokenizerBase
from transformers.utils import GENERATION_CONFIG_NAME

from lightning_ft.errors import UsageError
from lightning_ft.model.bottleneck import has_bottleneck_adapters, load_bottleneck_adapters, save_bottleneck_adapters
from lightning_ft.model.generation_defaults import GenerationDefaults, export_generation_config
from lightning_ft.model.heads import unwrap
from lightning_ft.model.spec import DTypeName, ModelSpec, torch_dtype

MANIFEST_NAME = "lightning_ft.json"
ExportKind = Literal["peft", "bottleneck", "full"]


def export_kind(model: nn.Module) -> ExportKind:
    if isinstance(model, PeftModel):
        return "peft"
    if has_bottleneck_adapters(model):
        return "bottleneck"
    return "full"


def save_export(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase | ProcessorMixin,
    spec: ModelSpec,
    directory: str | Path,
    details: dict[str, Any] | None = None,
    generation: GenerationDefaults | None = None,
) -> Path:
    """Write the adapter (or full model), tokenizer (or processor) and manifest (with ``details``, e.g. how inputs
    were built) to ``directory``, and for a model that generates, ``generation_config.json``: the base model's own
    (or ``generation`` when given) with generation stopping at the end of a trained turn.

    The files go to a sibling temporary directory first and replace ``directory`` only once complete, so an
    interrupted export never leaves a half-written one in place of the previous good one.
    """
    generation_config = _generation_config(model, tokenizer, generation)
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = directory.with_name(f".{directory.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    kind = export_kind(model)
    if kind == "peft":
        model.save_pretrained(staging)
    elif kind == "bottleneck":
        save_bottleneck_adapters(model, staging)
    else:
        model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    if generation_config is not None:
        generation_config.save_pretrained(staging)
    manifest = {"kind": kind, "base": spec.to_dict(), **(details or {})}
    (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    replace_directory(staging, directory)
    return directory


def _generation_config(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase | ProcessorMixin, generation: GenerationDefaults | None
) -> GenerationConfig | None:
    """What the export's ``generation_config.json`` holds, checked as ``save_pretrained`` will check it; ``None`` for
    a model that does not generate."""
    base = unwrap(model)
    if not (isinstance(base, PreTrainedModel) and base.can_generate()):
        if generation is not None:
            raise UsageError(
                f"Generation defaults were given, but a {type(base).__name__} does not generate text: leave "
                "model.generation unset"
            )
        return None
    text_tokenizer = tokenizer.tokenizer if isinstance(tokenizer, ProcessorMixin) else tokenizer
    config = export_generation_config(base.generation_config, text_tokenizer, generation)
    config.validate(strict=True)
    return config


def replace_directory(staging: Path, directory: Path) -> None:
    """Move the complete ``staging`` directory to ``directory``, removing a previous one only once it is replaced."""
    previous = directory.with_name(f".{directory.name}.previous-{os.getpid()}")
    if directory.exists():
        directory.rename(previous)
    staging.rename(directory)
    shutil.rmtree(previous, ignore_errors=True)


def read_manifest(directory: str | Path) -> dict | None:
    """An export's manifest (what it is and which base it applies to), ``None`` where there is none.

    Raises:
        UsageError: The manifest is not JSON or lacks what every export writes (``kind``; ``base`` with its
            ``path`` for adapters).
    """
    path = Path(directory) / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UsageError(f"{path}: not a valid export manifest ({error}); export the run again") from None
    kind = manifest.get("kind") if isinstance(manifest, dict) else None
    base = manifest.get("base") if isinstance(manifest, dict) else None
    if not isinstance(kind, str) or (kind != "full" and not (isinstance(base, dict) and "path" in base)):
        raise UsageError(f"{path}: not a valid export manifest (no kind, or an adapter without its base's path)")
    return manifest


def load_export(
    directory: str | Path, dtype: DTypeName = "float32", merge: bool = False, base: str | None = None
) -> tuple[nn.Module, PreTrainedTokenizerBase | ProcessorMixin]:
    """Load an export, or any base model (directory, GGUF directory or hub id), for inference.

    Adapters are applied to their base model, loaded from the spec recorded at training time (or from ``base``, a
    directory or hub id holding the same base, e.g. on another machine); with ``merge`` a PEFT adapter is folded into
    the base weights and a plain ``PreTrainedModel`` comes back. Vision-language exports come back with their
    processor in place of the tokenizer. The model's ``generation_config`` is the export's ``generation_config.json``
    (for adapters too, not their base's), so ``generate`` and `lightning-ft chat` use the defaults it records.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest is None:  # a base model: local directory (GGUF included) or hub id
        if base is not None:
            raise UsageError(f"{directory} is not a lightning-ft adapter export (no {MANIFEST_NAME}): nothing to apply")
        spec = ModelSpec(path=str(directory), dtype=dtype)
        return spec.load_model().eval(), spec.load_tokenizer()
    vision = manifest.get("auto_class") == "AutoModelForImageTextToText"
    auto_class = AutoModelForImageTextToText if vision else AutoModelForCausalLM
    tokenizer = (AutoProcessor if vision else AutoTokenizer).from_pretrained(directory)
    if manifest["kind"] == "full":
        model = auto_class.from_pretrained(directory, dtype=torch_dtype(dtype))
        return model.eval(), tokenizer
    base_spec = ModelSpec(**{**manifest["base"], "dtype": dtype})
    if base is not None:
        base_spec = ModelSpec(path=base, dtype=dtype, quantization=base_spec.quantization)
    base_model = base_spec.load_model(auto_class)
    if manifest["kind"] == "bottleneck":
        if merge:
            raise UsageError(
                "A bottleneck adapter has a non-linearity and cannot be merged into the base weights; "
                "load it with `lightning-ft chat` or `lightning_ft.model.export.load_export`."
            )
        return _with_generation_config(load_bottleneck_adapters(base_model, directory), directory).eval(), tokenizer
    model = _with_generation_config(PeftModel.from_pretrained(base_model, directory), directory)
    if merge:
        model = model.merge_and_unload()
    return model.eval(), tokenizer


def _with_generation_config(model: nn.Module, directory: Path) -> nn.Module:
    if (directory / GENERATION_CONFIG_NAME).exists():
        unwrap(model).generation_config = GenerationConfig.from_pretrained(directory)
    return model


def merge_export(directory: str | Path, output: str | Path, dtype: DTypeName = "float32") -> Path:
    """Merge an adapter export into its base and write a standalone model that needs neither peft nor us, with the
    export's ``generation_config.json``."""
    output = Path(output)
    if output.exists() and any(output.iterdir()) and not (output / "config.json").exists():
        raise UsageError(f"{output} exists and is not a model directory: give a new or empty output directory")
    model, tokenizer = load_export(directory, dtype=dtype, merge=True)
    if not isinstance(model, PreTrainedModel):
        raise TypeError(f"Merging {directory} produced a {type(model).__name__}, not a transformers model")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.with_name(f".{output.name}.partial-{os.getpid()}")
    try:  # written whole beside the output, then moved in place: an interrupted merge leaves the old output
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        replace_directory(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output
