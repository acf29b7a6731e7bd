"""`ModelSpec`: where a model and its tokenizer (or processor) come from, and how to load them."""

from __future__ import annotations

import atexit
import copy
import functools
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

import torch
import transformers
from transformers import (
    AutoModelForCausalLM,
    AutoProcessor,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
    ProcessorMixin,
)
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from lightning_ft.environment import NO_CACHE_ENVIRONMENT, cache_root, flag_set
from lightning_ft.errors import UsageError
from lightning_ft.model.chat_templates import resolve_chat_template
from lightning_ft.model.source import check_model_path, hub_errors
from lightning_ft.model.vision import PROJECTOR_NAMES, VISION_TOWER_NAMES

try:  # transformers versions that can keep GGUF weights packed; older ones always dequantize on load
    from transformers import GgufConfig
except ImportError:  # pragma: no cover
    GgufConfig = None

DTypeName = Literal["float32", "bfloat16", "float16", "auto"]


class ModelSpec:
    """A model to fine-tune: a local directory or hub id, optionally a GGUF file inside it.

    Args:
        path: Local directory or Hugging Face hub id.
        gguf_file: Name of a GGUF file inside ``path``; transformers dequantizes it. Found by itself when ``path`` is
            a local directory holding one ``.gguf`` file and no ``config.json``. Converted once into a cached plain
            copy (`dense_gguf_dir`: safetensors, config, tokenizer) that every later load reads instead: parsing a
            GGUF's metadata costs transformers tens of seconds per load, even for a 135M model.
        tokenizer_path: Where the tokenizer lives when not beside the model.
        revision: Hub revision (branch, tag or commit).
        dtype: Dtype of the loaded weights.
        attn_implementation: ``sdpa``, ``eager`` or ``flash_attention_2``; ``None`` lets transformers choose.
        quantization: k-bit loading (QLoRA), e.g. ``transformers.BitsAndBytesConfig(load_in_4bit=True)``.
        chat_template: A built-in template name (``chatml``, ``llama3``, ``alpaca``, ``plain``) or a Jinja string;
            ``None`` keeps the tokenizer's own. The chosen template travels with every export.
        trust_remote_code: Allow model code from the hub repository to run.
    """

    def __init__(
        self,
        path: str,
        gguf_file: str | None = None,
        tokenizer_path: str | None = None,
        revision: str | None = None,
        dtype: DTypeName = "float32",
        attn_implementation: str | None = "sdpa",
        quantization: BitsAndBytesConfig | None = None,
        chat_template: str | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        check_model_path(path)
        if path.endswith(".gguf") and Path(path).is_file() and gguf_file is None:
            path, gguf_file = str(Path(path).parent), Path(path).name
        self.path = path
        self.gguf_file = gguf_file if gguf_file is not None else find_gguf_file(path)
        self.tokenizer_path = tokenizer_path
        self.revision = revision
        self.dtype = dtype
        self.attn_implementation = attn_implementation
        self.quantization = quantization
        self.chat_template = chat_template
        self.trust_remote_code = trust_remote_code

    def with_quantization(self, dtype: DTypeName | None = None, **changes: Any) -> ModelSpec:
        """A copy whose quantization config has ``changes`` set (and ``dtype``, if given); ``self`` is unchanged."""
        changed = copy.copy(self)
        changed.quantization = copy.deepcopy(self.quantization)
        for name, value in changes.items():
            setattr(changed.quantization, name, value)
        changed.dtype = dtype or self.dtype
        return changed

    def keep_vision_unquantized(self) -> ModelSpec:
        """QLoRA of a vision-language model quantizes the language model only: a copy whose quantization skips the
        vision tower and projector (which may train, and whose small layers gain little) and the output head, unless
        the config already lists what to skip. ``self`` when it has no quantization."""
        quantization = self.quantization
        if quantization is None or quantization.llm_int8_skip_modules is not None:
            return self
        # transformers matches these as regexes from the start of a module's name, up to a module boundary
        skipped = [f".*{name}" for name in (*VISION_TOWER_NAMES, *PROJECTOR_NAMES)]
        return self.with_quantization(llm_int8_skip_modules=[*skipped, "lm_head"])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description from which the same base model can be loaded again (written beside exports)."""
        return {
            "path": str(self.path),
            "gguf_file": self.gguf_file,
            "tokenizer_path": self.tokenizer_path,
            "revision": self.revision,
            "dtype": self.dtype,
            "attn_implementation": self.attn_implementation,
            "trust_remote_code": self.trust_remote_code,
        }

    def load_tokenizer(self) -> PreTrainedTokenizerBase:
        """Load the tokenizer, install the chat template and make sure a pad token exists (pad = eos if none)."""
        source = self.tokenizer_path or self.path
        if self.tokenizer_path is None and self.gguf_file is not None:
            source = str(dense_gguf_dir(self))
        with hub_errors(source):
            tokenizer = AutoTokenizer.from_pretrained(
                source, revision=self.revision, trust_remote_code=self.trust_remote_code
            )
        if self.chat_template is not None:
            tokenizer.chat_template = resolve_chat_template(self.chat_template)
        if tokenizer.chat_template is None:
            raise UsageError(
                f"The tokenizer of {source!r} has no chat template. Set `chat_template` to a built-in name "
                "(chatml, llama3, alpaca, plain) or a Jinja string."
            )
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer

    def load_processor(self, tokenizer: PreTrainedTokenizerBase) -> ProcessorMixin:
        """The model's processor (vision-language models), holding ``tokenizer``: the one `load_tokenizer` prepared
        (chat template, pad token).

        Raises:
            ValueError: The model has no image processor.
        """
        source = self.tokenizer_path or self.path
        with hub_errors(source):
            processor = AutoProcessor.from_pretrained(
                source, revision=self.revision, trust_remote_code=self.trust_remote_code
            )
        if not isinstance(processor, ProcessorMixin) or not hasattr(processor, "image_processor"):
            raise UsageError(
                f"{source} has no image processor (AutoProcessor gave {type(processor).__name__}): a vision-language "
                "model needs one"
            )
        processor.tokenizer = tokenizer
        return processor

    def load_model(self, auto_class: type = AutoModelForCausalLM, **model_kwargs: Any) -> PreTrainedModel:
        """Load the model with the requested dtype, attention and quantization: a causal LM, or the class that
        ``auto_class`` names (e.g. ``AutoModelForSequenceClassification`` with ``num_labels=1`` for reward models)."""
        # A GGUF loads from its cached plain copy: dense weights (trainable, wrappable by any adapter, exported as
        # ordinary safetensors) that can also be quantized anew, which transformers cannot do to a GGUF on load.
        path = self.path if self.gguf_file is None else str(dense_gguf_dir(self))
        kwargs: dict[str, Any] = {
            "revision": self.revision,
            "trust_remote_code": self.trust_remote_code,
            "dtype": torch_dtype(self.dtype),
        }
        if self.attn_implementation is not None:
            kwargs["attn_implementation"] = self.attn_implementation
        if self.quantization is not None:
            kwargs["quantization_config"] = self.quantization
        with hub_errors(path):
            return auto_class.from_pretrained(path, **kwargs, **model_kwargs)


def find_gguf_file(path: str) -> str | None:
    directory = Path(path)
    if not directory.is_dir() or (directory / "config.json").exists():
        return None
    candidates = sorted(file.name for file in directory.glob("*.gguf"))
    if len(candidates) > 1:
        raise UsageError(f"{path} holds several GGUF files {candidates}: choose one with `gguf_file`.")
    return candidates[0] if candidates else None


def torch_dtype(name: DTypeName) -> torch.dtype | str:
    return "auto" if name == "auto" else getattr(torch, name)


def dense_gguf_kwargs() -> dict[str, Any]:
    return {} if GgufConfig is None else {"quantization_config": GgufConfig(dequantize=True)}


def drop_gguf_quantization(model: PreTrainedModel) -> None:
    """Forget that the weights came from a GGUF file: they are dequantized already, and `save_pretrained` refuses
    to write a model that still carries the GGUF quantization config."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model, "quantization_method"):
        model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def dense_gguf_dir(spec: ModelSpec) -> Path:
    """A cached plain copy of a GGUF model (float32 safetensors, config, tokenizer with its chat template), written
    once, atomically (concurrent writers: the first rename wins), and reused by every later load. The cache lives
    under ``$LIGHTNING_FT_CACHE`` (default ``~/.cache/lightning_ft``), keyed by the file (size, mtime and a hash of
    its first and last MiB) and the transformers version that dequantized it. With ``$LIGHTNING_FT_NO_CACHE`` set the
    copy goes to a temporary directory removed when the process ends."""
    gguf_path = Path(spec.path) / str(spec.gguf_file)
    name = f"{gguf_path.stem}-{gguf_cache_key(gguf_path)}"
    target = (_temporary_root() if flag_set(NO_CACHE_ENVIRONMENT) else cache_root() / "gguf") / name
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + f".partial-{os.getpid()}")
    try:
        _write_dense_copy(spec, partial)
        partial.rename(target)
    except OSError:  # another process wrote it meanwhile
        if not (target / "config.json").exists():
            raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def gguf_cache_key(gguf_path: Path, sample_bytes: int = 1 << 20) -> str:
    """Size, mtime, the first and last ``sample_bytes`` of the file, and the transformers version: hashing a
    multi-gigabyte file whole on every load would cost what the cache saves."""
    stat = gguf_path.stat()
    digest = hashlib.sha256(f"3:{stat.st_size}:{stat.st_mtime_ns}:{transformers.__version__}".encode())
    with gguf_path.open("rb") as file:
        digest.update(file.read(sample_bytes))
        file.seek(max(stat.st_size - sample_bytes, 0))
        digest.update(file.read(sample_bytes))
    return digest.hexdigest()[:16]


def _write_dense_copy(spec: ModelSpec, directory: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(
        spec.path, gguf_file=spec.gguf_file, dtype=torch.float32, **dense_gguf_kwargs()
    )
    drop_gguf_quantization(model)
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(spec.path, gguf_file=spec.gguf_file).save_pretrained(directory)


@functools.cache
def _temporary_root() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="lightning-ft-gguf-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return directory
