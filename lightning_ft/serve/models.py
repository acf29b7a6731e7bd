"""What `lightning-ft serve` serves: one base model, loaded once, and LoRA adapter exports of it, each under its own
name, with the tokenizer (chat template) and the generation defaults of its own directory."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from peft import PeftConfig, PeftModel
from torch import nn
from transformers import AutoConfig, AutoTokenizer, GenerationConfig
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from lightning_ft.model.export import load_export, read_manifest
from lightning_ft.model.generation import stop_token_ids
from lightning_ft.model.spec import DTypeName, ModelSpec, dense_gguf_dir

BASE_ADAPTER = "__base__"  # peft's name for "no adapter" in a mixed-adapter batch


@dataclass
class ServedModel:
    """One name clients put in a request's ``model`` field.

    Args:
        name: The served name.
        adapter: The peft adapter it runs with (``None``: the base model alone).
        tokenizer: Renders its prompts (chat template) and decodes its replies.
        defaults: Its ``generation_config.json``: the options a request leaves unset (``None``: greedy, 256 tokens).
        stop_ids: Token ids that end its turn (EOS and end-of-turn tokens).
    """

    name: str
    adapter: str | None
    tokenizer: PreTrainedTokenizerBase
    defaults: GenerationConfig | None
    stop_ids: tuple[int, ...]


class UnknownModelError(KeyError):
    """A request named a model this server does not serve."""


class ModelRegistry:
    """The served names and how to load the network behind them.

    Args:
        model: A full export, an adapter export (its base is then the base, and the adapter is served under
            ``model`` too), a Hugging Face model directory, a GGUF directory or a hub id; served under ``model``.
        adapters: Served name -> peft LoRA adapter export of the same base; all run on the one base.
        dtype: Dtype of the weights.
    """

    def __init__(self, model: str, adapters: dict[str, str] | None = None, dtype: DTypeName = "float32") -> None:
        self.model = model
        self.dtype = dtype
        manifest = read_manifest(model)
        self.adapter_dirs: dict[str, str] = {}  # peft adapter name -> export directory
        self.models: dict[str, ServedModel] = {}
        if manifest is not None and manifest["kind"] == "peft":
            self.base_spec: ModelSpec | None = ModelSpec(**{**manifest["base"], "dtype": dtype})
            base_name, base_tokenizer = self.base_spec.path, _export_tokenizer(model)
            self._add(base_name, None, base_tokenizer, _generation_defaults(self.base_spec.path))
            self._add_adapter(model, model)
            self.default_name = model
        else:
            if manifest is not None and manifest["kind"] != "full" and adapters:
                raise ValueError(
                    f"Adapters can only be served on a plain base model, not on a {manifest['kind']} export"
                )
            self.base_spec = None
            tokenizer = _export_tokenizer(model) if manifest else ModelSpec(path=model).load_tokenizer()
            self._add(model, None, tokenizer, _generation_defaults(model))
            self.default_name = model
        for name, directory in (adapters or {}).items():
            self._add_adapter(name, directory)
        self.max_positions = _max_positions(self.base_spec or ModelSpec(path=model))

    @property
    def names(self) -> list[str]:
        return list(self.models)

    def get(self, name: str | None) -> ServedModel:
        """The served model called ``name`` (empty or ``None``: the default, ``model`` as given)."""
        if not name:
            return self.models[self.default_name]
        if name not in self.models:
            raise UnknownModelError(name)
        return self.models[name]

    def load_network(self) -> nn.Module:
        """The base model with every adapter loaded into one `PeftModel` (or the base alone), in eval mode."""
        if self.base_spec is not None:
            base = self.base_spec.load_model()
        else:
            base, _ = load_export(self.model, dtype=self.dtype)
        if not self.adapter_dirs:
            return base.eval()
        (first_name, first_dir), *others = self.adapter_dirs.items()
        network = PeftModel.from_pretrained(base, first_dir, adapter_name=first_name)
        for name, directory in others:
            network.load_adapter(directory, adapter_name=name)
        return network.eval()

    def _add(
        self, name: str, adapter: str | None, tokenizer: PreTrainedTokenizerBase, defaults: GenerationConfig | None
    ) -> None:
        if name in self.models:
            raise ValueError(f"Two served models are called {name!r}: give each adapter its own name")
        self.models[name] = ServedModel(name, adapter, tokenizer, defaults, tuple(stop_token_ids(tokenizer)))

    def _add_adapter(self, name: str, directory: str) -> None:
        manifest = read_manifest(directory)
        if manifest is None or manifest["kind"] != "peft":
            raise ValueError(f"{directory} is not a peft adapter export (lightning_ft.json with kind 'peft')")
        peft_type = str(PeftConfig.from_pretrained(directory).peft_type)
        if not peft_type.endswith("LORA"):
            raise ValueError(f"{directory} holds a {peft_type} adapter; mixed-adapter batches serve LoRA adapters only")
        base_path = (self.base_spec.path if self.base_spec else self.model).rstrip("/")
        if manifest["base"]["path"].rstrip("/") != base_path:
            warnings.warn(f"{directory} was trained on {manifest['base']['path']}, served on {base_path}", stacklevel=2)
        adapter = f"adapter_{len(self.adapter_dirs)}"  # served names may hold '/' or '.', which peft names may not
        self.adapter_dirs[adapter] = directory
        self._add(name, adapter, _export_tokenizer(directory), _generation_defaults(directory))


def _export_tokenizer(directory: str) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(directory)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _generation_defaults(path: str) -> GenerationConfig | None:
    """The ``generation_config.json`` of a directory or hub id, ``None`` when it has none."""
    if Path(path).is_dir() and not (Path(path) / "generation_config.json").exists():
        return None
    try:
        return GenerationConfig.from_pretrained(path)
    except OSError:
        return None


def _max_positions(spec: ModelSpec) -> int | None:
    """The longest sequence (prompt + reply) the model's positions allow, ``None`` when its config does not say."""
    path = str(dense_gguf_dir(spec)) if spec.gguf_file else spec.path
    config = AutoConfig.from_pretrained(path, revision=spec.revision, trust_remote_code=spec.trust_remote_code)
    return getattr(config.get_text_config(), "max_position_embeddings", None)
