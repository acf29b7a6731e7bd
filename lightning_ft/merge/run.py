"""`merge_models`: one MergeKit YAML in, one merged export out, by the adapter path when it applies."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal

from mergekit.common import ModelReference
from mergekit.config import MergeConfiguration
from mergekit.options import MergeOptions
from transformers import set_seed

from lightning_ft.merge.adapters import AdapterMerge, AdapterPathUnavailable, merge_adapters, plan_adapter_merge
from lightning_ft.merge.config import MergeConfigError, read_merge_config
from lightning_ft.merge.full import merge_full
from lightning_ft.merge.sources import MergeSource, classify_source, referenced_sources
from lightning_ft.merge.tokenizer import source_tokenizer
from lightning_ft.model.spec import DTypeName

MergePath = Literal["full", "adapter"]


@dataclass(frozen=True)
class MergeReport:
    """Where the merge went, which path it took (``full``: MergeKit on full models; ``adapter``: peft's
    ``add_weighted_adapter``) and why."""

    output: Path
    path: MergePath
    reason: str
    method: str


def merge_models(
    config_file: str | Path,
    output: str | Path,
    dtype: DTypeName | None = None,
    base_tokenizer: str | None = None,
    materialize: bool = False,
    adapter_combination: str | None = None,
    seed: int | None = None,
    device: str = "cpu",
) -> MergeReport:
    """Merge the models a MergeKit YAML names into ``output``, an export `load_export` and `lightning-ft chat` read.

    When every model is a LoRA export of one base and the method maps onto peft (see `lightning_ft.merge.adapters`),
    the adapters are merged as adapters and ``output`` is an adapter export; otherwise (or with ``materialize``)
    MergeKit merges full models and ``output`` is a full export. The path taken and why is printed and recorded in
    ``output/lightning_ft.json`` with the sources and the method.

    Args:
        config_file: A MergeKit YAML; ``model:`` may also be a lightning-ft adapter export or a GGUF directory.
        output: The directory to write; replaced only once the merge is complete.
        dtype: Dtype of the written weights (MergeKit's ``out_dtype``); default: as the YAML says, else the base's.
        base_tokenizer: The source whose tokenizer, chat template and generation config the output gets (default:
            ``base_model``, else the first model).
        materialize: Merge full models even when the adapter path applies.
        adapter_combination: peft's ``combination_type`` for the adapter path instead of the method's counterpart.
        seed: Seeds the random methods (DARE), as MergeKit's ``--random-seed``.
        device: Where MergeKit does its arithmetic (``cpu``, ``cuda``, ``auto``).
    """
    config, config_text = read_merge_config(config_file)
    if base_tokenizer is not None and (config.tokenizer_source is not None or config.tokenizer is not None):
        raise MergeConfigError("--base-tokenizer conflicts with the YAML's tokenizer_source/tokenizer: keep one")
    if dtype not in (None, "auto"):
        config = config.model_copy(update={"out_dtype": dtype})
    sources = referenced_sources(config)
    tokenizer_from = _tokenizer_source(sources, base_tokenizer)
    plan, reason = _choose_path(config, sources, materialize, adapter_combination)
    path: MergePath = "full" if plan is None else "adapter"
    print(f"lightning-ft merge: {path} path: {reason}")
    tokenizer = source_tokenizer(tokenizer_from, config)
    record = _merge_record(config, sources, tokenizer_from, path, reason, plan)
    output = Path(output)
    if seed is not None:
        set_seed(seed)
    if plan is not None:
        merge_adapters(plan, tokenizer, output, {"merge": record}, tokenizer_from.tokenizer_dir, dtype)
    else:
        options = MergeOptions(random_seed=seed, device=device, copy_tokenizer=False, quiet=True)
        manifest = {"kind": "full", "base": sources[0].base_spec, "merge": record}
        work_dtype = "float32" if dtype in (None, "auto") else dtype
        merge_full(config, config_text, sources, tokenizer_from, tokenizer, output, manifest, options, work_dtype)
    return MergeReport(output, path, reason, config.merge_method)


def _tokenizer_source(sources: list[MergeSource], name: str | None) -> MergeSource:
    """The named source (as written in the YAML, or the same directory), else the base model, else the first."""
    if name is None:
        return sources[0]
    for source in sources:
        if name == str(source.reference) or Path(name).resolve() == Path(source.path).resolve():
            return source
    return classify_source(ModelReference.model_validate(name))


def _choose_path(
    config: MergeConfiguration, sources: list[MergeSource], materialize: bool, combination: str | None
) -> tuple[AdapterMerge | None, str]:
    if materialize:
        if combination is not None:
            raise MergeConfigError("--adapter-combination needs the adapter path, which --materialize turns off")
        return None, "--materialize given: MergeKit merges the full models"
    try:
        plan = plan_adapter_merge(config, sources, combination)
    except AdapterPathUnavailable as why:
        if combination is not None:
            raise MergeConfigError(f"--adapter-combination needs the adapter path, but {why}") from why
        if not any(source.kind == "adapter" for source in sources):
            return None, "MergeKit merges the full models"
        return None, f"adapters materialised as full models, since {why}"
    base = plan.adapters[0].base_spec["path"]
    return plan, f"every model is a LoRA export of {base}: peft add_weighted_adapter ({plan.combination_type})"


def _merge_record(
    config: MergeConfiguration,
    sources: list[MergeSource],
    tokenizer_from: MergeSource,
    path: MergePath,
    reason: str,
    plan: AdapterMerge | None,
) -> dict[str, Any]:
    """What ``lightning_ft.json`` records under ``merge``: the method, path, sources and the configuration."""
    record = {
        "method": config.merge_method,
        "path": path,
        "reason": reason,
        "sources": [source.describe() for source in sources],
        "tokenizer_source": str(tokenizer_from.reference),
        "config": config.model_dump(mode="json", exclude_defaults=True),
        "mergekit_version": version("mergekit"),
    }
    if plan is not None:
        record["adapter_merge"] = plan.describe()
    return record
