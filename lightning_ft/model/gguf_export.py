"""GGUF export: a trained model (adapter export merged into its base, full export, or any Hugging Face directory) as
one ``.gguf`` file that llama.cpp, Ollama and transformers (``gguf_file=``) run, chat template and stop tokens
included.

The file is written by our own converter on gguf-py's ``GGUFWriter`` (see `gguf_weights` and `gguf_vocab`):
llama.cpp's ``convert_hf_to_gguf.py`` is not published on PyPI by its authors.
"""

from __future__ import annotations

import os
from pathlib import Path

import gguf
from transformers import GenerationConfig, PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from lightning_ft.errors import UnsupportedError, UsageError
from lightning_ft.model.export import load_export
from lightning_ft.model.gguf_vocab import gguf_vocab
from lightning_ft.model.gguf_weights import (
    FILE_TYPES,
    GGUF_TYPES,
    GgufType,
    add_hyperparameters,
    add_tensor_infos,
    gguf_architecture,
    plan_tensors,
    stored_arrays,
)
from lightning_ft.model.spec import DTypeName


def export_gguf(
    source: str | Path, output: str | Path, gguf_type: GgufType = "q8_0", dtype: DTypeName = "float32"
) -> Path:
    """Write ``source`` (an export directory, adapters merged into their base first, or a model directory) as GGUF.

    Args:
        source: An adapter or full export directory (``lightning_ft.json``), or a Hugging Face model directory.
        output: A ``.gguf`` file path, or a directory that receives ``model-<gguf_type>.gguf``.
        gguf_type: ``f32``, ``f16``, ``bf16`` or ``q8_0`` (norms and biases stay f32).
        dtype: Dtype the model is loaded and merged in before conversion.

    Returns:
        The path of the written file.
    """
    check_gguf_type(gguf_type)
    model, tokenizer = load_export(source, dtype=dtype, merge=True)
    if not isinstance(model, PreTrainedModel) or not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise UnsupportedError(
            f"GGUF export needs a transformers text model and tokenizer; {source} gave {type(model).__name__}"
        )
    output = Path(output)
    path = output if output.suffix == ".gguf" else output / f"model-{gguf_type}.gguf"
    return write_gguf(model, tokenizer, path, gguf_type, name=Path(source).name)


def check_gguf_type(gguf_type: str) -> None:
    if gguf_type not in GGUF_TYPES:
        raise UsageError(f"Unsupported GGUF type {gguf_type!r} (--gguf); supported: {', '.join(GGUF_TYPES)}.")


def write_gguf(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    path: str | Path,
    gguf_type: GgufType = "q8_0",
    name: str | None = None,
) -> Path:
    """Write ``model`` and ``tokenizer`` to the GGUF file ``path``, atomically: the file appears complete or not at
    all (a partial sibling is written first and renamed). Tensors are converted and written one at a time."""
    check_gguf_type(gguf_type)
    config = model.config
    architecture = gguf_architecture(config)
    vocab_size = model.get_input_embeddings().weight.shape[0]
    state_dict = model.state_dict()
    planned = plan_tensors(state_dict, config, architecture, gguf_type)
    vocab = gguf_vocab(tokenizer, vocab_size, _stop_token_ids(model.generation_config))

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    writer = gguf.GGUFWriter(partial, architecture.name)
    try:
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name(_model_name(name or path.stem))
        writer.add_file_type(FILE_TYPES[gguf_type])
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        add_hyperparameters(writer, config, vocab_size)
        vocab.add_to(writer)
        _add_sampling_defaults(writer, model.generation_config)
        add_tensor_infos(writer, planned)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for array in stored_arrays(state_dict, planned, config, architecture):
            writer.write_tensor_data(array)
        writer.close()
        os.replace(partial, path)
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise
    return path


def _model_name(name: str) -> str:
    # transformers (5.x) reads a `llama` file named exactly "mistral" as a Mistral and then fails to map its tensors
    return f"{name}-model" if name == "mistral" else name


def _stop_token_ids(generation_config: GenerationConfig | None) -> list[int]:
    eos = getattr(generation_config, "eos_token_id", None)
    return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)


def _add_sampling_defaults(writer: gguf.GGUFWriter, generation_config: GenerationConfig | None) -> None:
    """The export's sampling defaults as ``general.sampling.*`` keys, which llama.cpp applies unless overridden."""
    if generation_config is None:
        return
    if generation_config.do_sample:
        writer.add_sampling_temp(float(generation_config.temperature or 1.0))
        if generation_config.top_p is not None:
            writer.add_sampling_top_p(float(generation_config.top_p))
        if generation_config.top_k is not None:
            writer.add_sampling_top_k(int(generation_config.top_k))
    if generation_config.repetition_penalty not in (None, 1.0):
        writer.add_sampling_penalty_repeat(float(generation_config.repetition_penalty))
