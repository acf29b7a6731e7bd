"""A transformers decoder's hyperparameters and weights in llama.cpp's GGUF layout.

Tensor names come from gguf-py's ``TensorNameMap`` (``model.layers.0.self_attn.q_proj.weight`` ->
``blk.0.attn_q.weight``). For the ``llama`` architecture the rows of the query and key projections are permuted, as
llama.cpp's converter does, from transformers' rotate-half rotary layout to GGML's interleaved one; transformers'
GGUF loader undoes exactly that permutation. Qwen2 uses the rotate-half layout in llama.cpp too, so it is not
permuted. One-dimensional tensors (norms, biases) stay float32 whatever the file type, as llama.cpp writes them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import gguf
import numpy as np
import torch
from transformers import PretrainedConfig

from lightning_ft.errors import UsageError

GgufType = Literal["f32", "f16", "bf16", "q8_0"]
GGUF_TYPES: tuple[str, ...] = ("f32", "f16", "bf16", "q8_0")
TENSOR_TYPES = {
    "f32": gguf.GGMLQuantizationType.F32,
    "f16": gguf.GGMLQuantizationType.F16,
    "bf16": gguf.GGMLQuantizationType.BF16,
    "q8_0": gguf.GGMLQuantizationType.Q8_0,
}
FILE_TYPES = {
    "f32": gguf.LlamaFileType.ALL_F32,
    "f16": gguf.LlamaFileType.MOSTLY_F16,
    "bf16": gguf.LlamaFileType.MOSTLY_BF16,
    "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
}


@dataclass(frozen=True)
class GgufArchitecture:
    """How one transformers ``model_type`` is written: llama.cpp's architecture and whether q/k rows are permuted."""

    arch: gguf.MODEL_ARCH
    permute_query_key: bool

    @property
    def name(self) -> str:
        return gguf.MODEL_ARCH_NAMES[self.arch]


# Mistral is llama.cpp's `llama` architecture (its converter writes it so); without a sliding window it is a Llama.
ARCHITECTURES = {
    "llama": GgufArchitecture(gguf.MODEL_ARCH.LLAMA, permute_query_key=True),
    "mistral": GgufArchitecture(gguf.MODEL_ARCH.LLAMA, permute_query_key=True),
    "qwen2": GgufArchitecture(gguf.MODEL_ARCH.QWEN2, permute_query_key=False),
}


@dataclass(frozen=True)
class PlannedTensor:
    """One tensor of the file: its GGUF name, the state-dict entry it comes from, its GGML type and stored shape."""

    name: str
    source: str
    tensor_type: gguf.GGMLQuantizationType
    shape: tuple[int, ...]


def gguf_architecture(config: PretrainedConfig) -> GgufArchitecture:
    """The architecture ``config`` is written as, after checking the file can describe the model exactly.

    Raises:
        ValueError: An architecture or option (rope scaling, biases, sliding window) that neither llama.cpp's
            ``llama``/``qwen2`` nor transformers' GGUF loader would reproduce.
    """
    architecture = ARCHITECTURES.get(config.model_type)
    if architecture is None:
        raise UsageError(
            f"GGUF export does not support model type {config.model_type!r}; supported: {', '.join(ARCHITECTURES)}."
        )
    rope = getattr(config, "rope_parameters", None) or {}
    problems = {
        f"rope scaling {rope.get('rope_type')!r} (only 'default' rope)": rope.get("rope_type", "default") != "default",
        "attention or MLP biases": config.model_type != "qwen2"
        and bool(getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False)),
        "a sliding attention window": bool(getattr(config, "use_sliding_window", False))
        or (config.model_type == "mistral" and getattr(config, "sliding_window", None) is not None),
        "a head size other than hidden_size / num_attention_heads": config.model_type == "qwen2"
        and _head_dim(config) != config.hidden_size // config.num_attention_heads,
    }
    found = [problem for problem, present in problems.items() if present]
    if found:
        raise UsageError(f"GGUF export of this {config.model_type} model is not supported: it has {', '.join(found)}.")
    return architecture


def add_hyperparameters(writer: gguf.GGUFWriter, config: PretrainedConfig, vocab_size: int) -> None:
    """The ``<arch>.*`` keys llama.cpp and transformers' GGUF loader read the model's shape from."""
    head_dim = _head_dim(config)
    writer.add_vocab_size(vocab_size)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads or config.num_attention_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    if head_dim != config.hidden_size // config.num_attention_heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)


def _head_dim(config: PretrainedConfig) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def plan_tensors(
    state_dict: dict[str, torch.Tensor], config: PretrainedConfig, architecture: GgufArchitecture, gguf_type: GgufType
) -> list[PlannedTensor]:
    """Every tensor of the file, in state-dict order; a tied output head is left out (llama.cpp reuses the
    embedding when ``output.weight`` is absent, and transformers' loader ties the weights then).

    Raises:
        ValueError: A weight has no GGUF name (a module the architecture does not have).
    """
    names = gguf.get_tensor_name_map(architecture.arch, config.num_hidden_layers)
    planned = []
    for source, tensor in state_dict.items():
        if source == "lm_head.weight" and config.tie_word_embeddings:
            continue
        stem, _, suffix = source.rpartition(".")
        name = names.get_name(stem)
        if name is None:
            raise UsageError(
                f"GGUF export does not support this model: its tensor {source} has no GGUF tensor name in llama.cpp's "
                f"{architecture.name} architecture"
            )
        tensor_type = _tensor_type(tuple(tensor.shape), gguf_type)
        planned.append(PlannedTensor(f"{name}.{suffix}", source, tensor_type, tuple(tensor.shape)))
    return planned


def _tensor_type(shape: tuple[int, ...], gguf_type: GgufType) -> gguf.GGMLQuantizationType:
    tensor_type = TENSOR_TYPES[gguf_type]
    if len(shape) <= 1:
        return gguf.GGMLQuantizationType.F32
    block_size, _ = gguf.GGML_QUANT_SIZES[tensor_type]
    if shape[-1] % block_size:  # rows that do not fill whole quantization blocks: llama.cpp falls back to f16
        return gguf.GGMLQuantizationType.F16
    return tensor_type


def stored_array(
    tensor: torch.Tensor, planned: PlannedTensor, config: PretrainedConfig, architecture: GgufArchitecture
) -> np.ndarray:
    """The bytes of one tensor as the file stores them (float32/float16 arrays, or raw bf16/q8_0 blocks)."""
    weights = tensor.detach().to(torch.float32).cpu().numpy()
    if architecture.permute_query_key and planned.name.endswith(("attn_q.weight", "attn_k.weight")):
        heads = config.num_attention_heads
        if planned.name.endswith("attn_k.weight"):
            heads = config.num_key_value_heads or heads
        weights = permute_for_ggml_rope(weights, heads)
    return gguf.quants.quantize(weights, planned.tensor_type)


def permute_for_ggml_rope(weights: np.ndarray, num_heads: int) -> np.ndarray:
    """Reorder each head's rows from rotate-half pairs ``(i, i + d/2)`` to interleaved pairs ``(2i, 2i + 1)``:
    llama.cpp's ``LlamaModel.permute``, the inverse of transformers' ``_reverse_permute_weights``."""
    rows_per_half = weights.shape[0] // num_heads // 2
    halves = weights.reshape(num_heads, 2, rows_per_half, *weights.shape[1:])
    return halves.swapaxes(1, 2).reshape(weights.shape)


def add_tensor_infos(writer: gguf.GGUFWriter, planned: list[PlannedTensor]) -> None:
    """Declare every tensor (name, shape, type, size) so the header can be written before any data."""
    for tensor in planned:
        if tensor.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            dtype = np.float32 if tensor.tensor_type == gguf.GGMLQuantizationType.F32 else np.float16
            nbytes = int(np.prod(tensor.shape)) * np.dtype(dtype).itemsize
            writer.add_tensor_info(tensor.name, tensor.shape, np.dtype(dtype), nbytes)
            continue
        byte_shape = gguf.quants.quant_shape_to_byte_shape(tensor.shape, tensor.tensor_type)
        nbytes = int(np.prod(byte_shape))
        writer.add_tensor_info(tensor.name, byte_shape, np.dtype(np.uint8), nbytes, raw_dtype=tensor.tensor_type)


def stored_arrays(
    state_dict: dict[str, torch.Tensor],
    planned: list[PlannedTensor],
    config: PretrainedConfig,
    architecture: GgufArchitecture,
) -> Iterator[np.ndarray]:
    """The stored bytes of each planned tensor, one at a time, so only one converted copy is in memory."""
    for tensor in planned:
        array = stored_array(state_dict[tensor.source], tensor, config, architecture)
        yield array if array.dtype in (np.float32, np.float16) else array.view(np.uint8)
