"""Merging LoRA exports of one base at the adapter level, with peft's ``add_weighted_adapter``: no full model is
materialised per source, and the output is again an adapter export.

MergeKit's method and parameters map onto peft's arguments as follows. ``linear`` and ``task_arithmetic`` become
peft's ``cat`` (the adapters side by side, rank = sum of ranks): its delta ``sum_i w_i * s_i * B_i @ A_i`` is exactly
what MergeKit computes on the full weights, with MergeKit's weights (``w_i / sum(w)`` when ``normalize``, times
``lambda``). ``ties``, ``dare_linear`` and ``dare_ties`` become peft's namesakes with the models' common ``density``;
peft applies them to the LoRA factors A and B, not to the full deltas, so they approximate MergeKit's full-model
result. A caller may ask for any peft combination instead (``svd``, ``linear``, ...).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mergekit.config import MergeConfiguration
from mergekit.merge_methods import get as get_merge_method
from mergekit.merge_methods.base import MISSING
from peft import PeftModel
from transformers import GenerationConfig
from transformers.tokenization_utils_base import PreTrainedTokenizerBase
from transformers.utils import GENERATION_CONFIG_NAME

from lightning_ft.merge.sources import MergeSource
from lightning_ft.model.export import save_export
from lightning_ft.model.heads import unwrap
from lightning_ft.model.spec import DTypeName, ModelSpec, torch_dtype

PEFT_COMBINATION_OF_METHOD = {
    "linear": "cat",
    "task_arithmetic": "cat",
    "ties": "ties",
    "dare_linear": "dare_linear",
    "dare_ties": "dare_ties",
}
PEFT_PARAMETERS_OF_METHOD = {
    "linear": {"weight", "normalize"},
    "task_arithmetic": {"weight", "normalize", "lambda"},
    "ties": {"weight", "density", "lambda"},
    "dare_linear": {"weight", "density", "lambda"},
    "dare_ties": {"weight", "density", "lambda"},
}
DENSITY_COMBINATIONS = {"ties", "ties_svd", "dare_linear", "dare_ties", "dare_linear_svd", "dare_ties_svd"}
MERGED_ADAPTER_NAME = "default"  # peft writes the "default" adapter at the top of the directory, where loaders look


class AdapterPathUnavailable(Exception):
    """The merge cannot run at the adapter level; the message says why."""


@dataclass(frozen=True)
class AdapterMerge:
    """What `merge_adapters` passes to ``add_weighted_adapter``, and from which exports."""

    adapters: list[MergeSource]
    combination_type: str
    weights: list[float]
    density: float | None

    def describe(self) -> dict[str, Any]:
        return {"combination_type": self.combination_type, "weights": self.weights, "density": self.density}


def plan_adapter_merge(
    config: MergeConfiguration, sources: list[MergeSource], combination: str | None = None
) -> AdapterMerge:
    """The adapter-level equivalent of ``config``: every model a LoRA export of one base (and ``base_model``, if
    given, that base), a method and parameters that map onto peft's arguments (``combination`` overrides the method's).

    Raises:
        AdapterPathUnavailable: Naming the source, method or parameter that has no adapter-level equivalent.
    """
    if not config.models:
        raise AdapterPathUnavailable("the merge uses slices or modules, which work on full models")
    if config.tokenizer_source is not None or config.tokenizer is not None:
        raise AdapterPathUnavailable("tokenizer_source/tokenizer may change the vocabulary, which needs full models")
    by_reference = {source.reference: source for source in sources}
    adapters = [by_reference[model.model] for model in config.models]
    _check_one_lora_base(config, adapters, by_reference)
    method = config.merge_method
    combination = combination or PEFT_COMBINATION_OF_METHOD.get(method)
    if combination is None:
        raise AdapterPathUnavailable(f"merge method {method} has no adapter-level equivalent in peft")
    mappable = PEFT_PARAMETERS_OF_METHOD.get(method, {"weight", "density"})
    values = _parameter_values(config, mappable)
    weights = [value["weight"] for value in values]
    if "normalize" in mappable and values[0].get("normalize"):
        weights = [weight / sum(weights) for weight in weights]
    weights = [weight * values[0].get("lambda", 1.0) for weight in weights]
    densities = {value.get("density") for value in values}
    if combination in DENSITY_COMBINATIONS and len(densities) > 1:
        raise AdapterPathUnavailable(f"peft takes one density for all adapters; the models give {sorted(densities)}")
    density = densities.pop() if combination in DENSITY_COMBINATIONS else None
    return AdapterMerge(adapters, combination, weights, density)


def _check_one_lora_base(
    config: MergeConfiguration, adapters: list[MergeSource], by_reference: dict[Any, MergeSource]
) -> None:
    for source in adapters:
        if source.kind != "adapter":
            raise AdapterPathUnavailable(f"{source.reference} is not a lightning-ft adapter export")
        peft_type = json.loads((Path(source.path) / "adapter_config.json").read_text()).get("peft_type")
        if peft_type != "LORA":
            raise AdapterPathUnavailable(f"{source.reference} is a {peft_type} adapter; peft merges LoRA adapters")
    bases = {_base_key(source.base_spec) for source in adapters}
    if len(bases) > 1:
        raise AdapterPathUnavailable(f"the adapters have different bases: {sorted(map(str, bases))}")
    if config.base_model is not None:
        base = by_reference[config.base_model]
        if base.kind == "adapter" or _base_key(base.base_spec) not in bases:
            raise AdapterPathUnavailable(f"base_model {config.base_model} is not the adapters' base model")


def _base_key(spec: dict[str, Any]) -> tuple[str, str | None, str | None]:
    path = Path(spec["path"])
    return (str(path.resolve()) if path.exists() else spec["path"], spec.get("gguf_file"), spec.get("revision"))


def _parameter_values(config: MergeConfiguration, mappable: set[str]) -> list[dict[str, Any]]:
    """Per model: each parameter of MergeKit's method, from the model's ``parameters``, else the top-level ones,
    else MergeKit's default; a parameter peft has no counterpart for, or one set per tensor, stops the plan."""
    specs = {spec.name: spec for spec in get_merge_method(config.merge_method).spec.parameters}
    values = []
    for index, model in enumerate(config.models):
        settings = {**(config.parameters or {}), **(model.parameters or {})}
        for name, setting in settings.items():
            if name not in mappable and (name not in specs or setting != specs[name].default):
                raise AdapterPathUnavailable(f"parameter {name} of {config.merge_method} has no peft counterpart")
            if not isinstance(setting, bool | int | float):
                raise AdapterPathUnavailable(f"models[{index}] sets {name} per tensor (gradient or filter)")
        resolved = {name: spec.default for name, spec in specs.items() if spec.default is not MISSING}
        resolved.update({name: value for name, value in settings.items() if name in specs})
        if "weight" not in resolved:
            raise AdapterPathUnavailable(f"models[{index}].parameters.weight is required by {config.merge_method}")
        values.append(resolved)
    return values


def merge_adapters(
    plan: AdapterMerge,
    tokenizer: PreTrainedTokenizerBase,
    output: Path,
    details: dict[str, Any],
    generation_dir: str | None = None,
    dtype: DTypeName | None = None,
) -> Path:
    """Load the common base once, add every adapter, combine them with ``add_weighted_adapter`` and write the result
    as an adapter export (atomically, by `save_export`) that `load_export` reads. ``generation_dir``'s
    ``generation_config.json``, if it has one, becomes the export's."""
    base_spec = ModelSpec(**{**plan.adapters[0].base_spec, "dtype": "float32"})
    model = PeftModel.from_pretrained(base_spec.load_model(), plan.adapters[0].path, adapter_name="source-0")
    names = ["source-0"]
    for index, source in enumerate(plan.adapters[1:], start=1):
        names.append(f"source-{index}")
        model.load_adapter(source.path, adapter_name=names[-1])
    model.add_weighted_adapter(
        names, plan.weights, MERGED_ADAPTER_NAME, combination_type=plan.combination_type, density=plan.density
    )
    model.set_adapter(MERGED_ADAPTER_NAME)
    for name in names:
        model.delete_adapter(name)
    if dtype not in (None, "auto"):
        model.to(torch_dtype(dtype))
    if generation_dir is not None and (Path(generation_dir) / GENERATION_CONFIG_NAME).exists():
        unwrap(model).generation_config = GenerationConfig.from_pretrained(generation_dir)
    return save_export(model, tokenizer, base_spec, output, details=details)
