"""The full-model path: MergeKit merges plain model directories (adapters and GGUFs materialised first)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from mergekit.config import MergeConfiguration
from mergekit.merge import run_merge
from mergekit.options import MergeOptions
from transformers.tokenization_utils_base import PreTrainedTokenizerBase
from transformers.utils import GENERATION_CONFIG_NAME

from lightning_ft.merge.config import replace_models
from lightning_ft.merge.sources import MergeSource, materialise
from lightning_ft.merge.tokenizer import write_tokenizer
from lightning_ft.model.export import MANIFEST_NAME, replace_directory
from lightning_ft.model.spec import DTypeName


def merge_full(
    config: MergeConfiguration,
    config_text: str,
    sources: list[MergeSource],
    tokenizer_source: MergeSource,
    tokenizer: PreTrainedTokenizerBase,
    output: Path,
    manifest: dict[str, Any],
    options: MergeOptions,
    materialise_dtype: DTypeName = "float32",
) -> Path:
    """Run MergeKit on ``config`` and write a full export to ``output``: the merged weights, ``tokenizer``, the
    tokenizer source's ``generation_config.json`` if it has one, and ``lightning_ft.json`` (``manifest``).

    Everything is written to a hidden sibling of ``output`` and renamed into place once complete, so an interrupted
    merge never leaves a half-written ``output`` in place of a good one. Materialised sources live in another hidden
    sibling (``lora_merge_cache`` of ``options`` too), removed afterwards, on error as well.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.with_name(f".{output.name}.partial-{os.getpid()}")
    workdir = output.with_name(f".{output.name}.sources-{os.getpid()}")
    try:
        shutil.rmtree(staging, ignore_errors=True)
        workdir.mkdir(exist_ok=True)
        resolved = replace_models(config, materialise(sources, workdir, materialise_dtype))
        options = options.model_copy(update={"lora_merge_cache": str(workdir / "lora")})
        run_merge(resolved, str(staging), options=options, config_source=config_text)
        write_tokenizer(staging, config, tokenizer, str(tokenizer_source.reference))
        generation_config = Path(tokenizer_source.tokenizer_dir) / GENERATION_CONFIG_NAME
        if generation_config.exists():
            shutil.copyfile(generation_config, staging / GENERATION_CONFIG_NAME)
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
        replace_directory(staging, output)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
    return output
