"""What each ``model:`` of a merge is, and the plain Hugging Face directory MergeKit reads for it.

MergeKit reads Hugging Face model directories and hub ids (and ``model+lora`` pairs). Two more kinds are ours: a
lightning-ft adapter export (materialised as its base with the adapter merged in) and a GGUF directory (read from
the cached dense copy `dense_gguf_dir` writes once).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mergekit.common import ModelPath, ModelReference
from mergekit.config import MergeConfiguration

from lightning_ft.errors import UsageError
from lightning_ft.model.export import merge_export, read_manifest
from lightning_ft.model.spec import DTypeName, ModelSpec, dense_gguf_dir, find_gguf_file

SourceKind = Literal["model", "adapter", "gguf"]


class MergeSourceError(UsageError):
    """A ``model:`` of the merge cannot be merged."""


@dataclass(frozen=True)
class MergeSource:
    """A model of the merge as the YAML names it, and what it is.

    Attributes:
        reference: The reference as written in the YAML.
        kind: ``adapter`` (a lightning-ft PEFT export), ``gguf`` (a directory holding one GGUF file) or ``model``
            (anything MergeKit reads itself: a model directory, a full lightning-ft export, a hub id, ``model+lora``).
        manifest: The export's ``lightning_ft.json``, when it has one.
    """

    reference: ModelReference
    kind: SourceKind
    manifest: dict[str, Any] | None = None

    @property
    def path(self) -> str:
        return self.reference.model.path

    @property
    def base_spec(self) -> dict[str, Any]:
        """The `ModelSpec` (as a dict) of the base model: an adapter's base, else the source itself."""
        if self.kind == "adapter":
            return dict(self.manifest["base"])
        return ModelSpec(path=self.path, revision=self.reference.model.revision).to_dict()

    @property
    def tokenizer_dir(self) -> str:
        """Where its tokenizer (and chat template) lives: an export holds its own; a GGUF's is in its dense copy."""
        if self.kind == "gguf":
            return str(dense_gguf_dir(ModelSpec(path=self.path)))
        return self.path

    def describe(self) -> dict[str, Any]:
        return {"model": str(self.reference), "kind": self.kind, "base": self.base_spec}


def classify_source(reference: ModelReference) -> MergeSource:
    """What ``reference`` is; a bottleneck export is refused (its non-linearity cannot be merged into weights)."""
    path = reference.model.path
    if reference.lora is not None or not Path(path).is_dir():
        return MergeSource(reference, "model")
    manifest = read_manifest(path)
    if manifest is not None and manifest["kind"] == "bottleneck":
        raise MergeSourceError(
            f"{path} is a bottleneck-adapter export: its non-linearity cannot be merged into weights; merge a LoRA "
            "(or full) export instead"
        )
    if manifest is not None and manifest["kind"] == "peft":
        return MergeSource(reference, "adapter", manifest)
    if manifest is None and find_gguf_file(path) is not None:
        return MergeSource(reference, "gguf")
    return MergeSource(reference, "model", manifest)


def referenced_sources(config: MergeConfiguration) -> list[MergeSource]:
    """Every model the configuration reads, base model first, then in the order the YAML lists them."""
    references: list[ModelReference] = [config.base_model] if config.base_model else []
    for model in config.models or []:
        references.append(model.model)
    modules = list((config.modules or {}).values())
    for output_slice in [*(config.slices or []), *(s for m in modules for s in (m.slices or []))]:
        references += [output_slice.base_model] if output_slice.base_model else []
        references += [source.model for source in output_slice.sources]
    for module in modules:
        references += [model.model for model in module.models or []]
    return [classify_source(reference) for reference in dict.fromkeys(references)]


def materialise(
    sources: list[MergeSource], workdir: Path, dtype: DTypeName = "float32"
) -> dict[ModelReference, ModelReference]:
    """For each adapter and GGUF source, the plain model directory MergeKit reads instead: adapters merged into
    their base under ``workdir`` (the caller removes it), GGUF directories as their cached dense copy."""
    replacements: dict[ModelReference, ModelReference] = {}
    for index, source in enumerate(sources):
        if source.kind == "adapter":
            directory = merge_export(source.path, workdir / f"source-{index}", dtype=dtype)
        elif source.kind == "gguf":
            directory = dense_gguf_dir(ModelSpec(path=source.path))
        else:
            continue
        replacements[source.reference] = ModelReference(model=ModelPath(path=str(directory)))
    return replacements
