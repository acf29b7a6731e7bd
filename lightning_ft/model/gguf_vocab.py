"""A Hugging Face tokenizer as GGUF metadata: vocabulary, merges, pre-tokenizer name, special ids, chat template.

Only byte-level BPE tokenizers (GPT-2 style: SmolLM2, Llama 3, Qwen2, ...) are written; llama.cpp calls them
``gpt2``. Tokens are stored in their byte-level spelling, as llama.cpp's converter stores them, and
``tokenizer.ggml.pre`` names the regex that splits text before BPE, read off the tokenizer's own pre-tokenizer so
llama.cpp splits text as the tokenizer the model was trained with does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import gguf
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from lightning_ft.errors import UsageError

# The split regexes of the Llama 3 and Qwen2 tokenizers, as their tokenizer.json spell them, and llama.cpp's names.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPLIT_PRE_TOKENIZERS = {LLAMA3_SPLIT: "llama-bpe", QWEN2_SPLIT: "qwen2"}
SUPPORTED_PRE_TOKENIZERS = (
    "ByteLevel (llama.cpp 'gpt-2')",
    "Digits + ByteLevel (llama.cpp 'smollm')",
    "the Llama 3 split regex + ByteLevel (llama.cpp 'llama-bpe')",
    "the Qwen2 split regex + ByteLevel (llama.cpp 'qwen2')",
)


@dataclass(frozen=True)
class GgufVocab:
    """What a GGUF file records about its tokenizer (the ``tokenizer.*`` keys)."""

    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    pre_tokenizer: str
    special_token_ids: dict[str, int]
    add_bos: bool
    add_eos: bool
    chat_template: str | None

    def add_to(self, writer: gguf.GGUFWriter) -> None:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(self.pre_tokenizer)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.token_types)
        writer.add_token_merges(self.merges)
        for kind, token_id in self.special_token_ids.items():
            getattr(writer, f"add_{kind}_token_id")(token_id)
        writer.add_add_bos_token(self.add_bos)
        writer.add_add_eos_token(self.add_eos)
        writer.add_add_space_prefix(False)
        if self.chat_template is not None:
            writer.add_chat_template(self.chat_template)


def gguf_vocab(
    tokenizer: PreTrainedTokenizerBase, vocab_size: int, stop_token_ids: list[int] | None = None
) -> GgufVocab:
    """The GGUF description of ``tokenizer`` for a model whose embedding has ``vocab_size`` rows (ids the tokenizer
    lacks become unused ``[PAD<id>]`` tokens, as llama.cpp writes them). ``stop_token_ids`` (the export's
    ``generation_config`` EOS list) adds an end-of-turn id (``eot``) when one differs from the tokenizer's EOS.

    Raises:
        ValueError: The tokenizer is not a byte-level BPE one, or splits text in a way llama.cpp has no name for.
    """
    backend = _backend_json(tokenizer)
    model, decoder = backend["model"], backend.get("decoder") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback") or decoder.get("type") != "ByteLevel":
        raise UsageError(
            f"GGUF export supports byte-level BPE tokenizers (GPT-2 style, llama.cpp's 'gpt2' model) only; this one "
            f"is a {model.get('type')} model with a {decoder.get('type')} decoder."
        )
    tokens, token_types = _tokens_and_types(tokenizer, vocab_size)
    return GgufVocab(
        tokens=tokens,
        token_types=token_types,
        merges=[_merge_text(merge) for merge in model["merges"]],
        pre_tokenizer=pre_tokenizer_name(backend.get("pre_tokenizer")),
        special_token_ids=_special_token_ids(tokenizer, stop_token_ids or []),
        add_bos=_adds_first(tokenizer, tokenizer.bos_token_id),
        add_eos=_adds_last(tokenizer, tokenizer.eos_token_id),
        chat_template=tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None,
    )


def _backend_json(tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise UsageError(f"GGUF export needs a fast (tokenizers) tokenizer; got {type(tokenizer).__name__}")
    return json.loads(backend.to_str())


def _tokens_and_types(tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> tuple[list[str], list[int]]:
    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    if max(by_id) >= vocab_size:
        raise UsageError(
            f"The tokenizer has ids up to {max(by_id)}, beyond the model's {vocab_size} embeddings: export a model "
            "with its own tokenizer"
        )
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for index in range(vocab_size):
        if index not in by_id:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
        elif index in added:
            tokens.append(added[index].content)
            types.append(gguf.TokenType.CONTROL if added[index].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[index])
            types.append(gguf.TokenType.NORMAL)
    return tokens, [int(kind) for kind in types]


def _merge_text(merge: str | list[str]) -> str:
    if isinstance(merge, str):
        return merge
    # GGUF joins a merge's two parts with a space; a space inside a part is written as its byte-level stand-in
    return " ".join(part.replace(" ", chr(ord(" ") + 256)) for part in merge)


def pre_tokenizer_name(pre_tokenizer: dict[str, Any] | None) -> str:
    """llama.cpp's name (``tokenizer.ggml.pre``) for a tokenizer.json pre-tokenizer.

    Raises:
        ValueError: llama.cpp has no pre-tokenizer that splits text the same way.
    """
    steps = (pre_tokenizer or {}).get("pretokenizers", [pre_tokenizer] if pre_tokenizer else [])
    kinds = [step.get("type") for step in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        name = SPLIT_PRE_TOKENIZERS.get(steps[0].get("pattern", {}).get("Regex"))
        if name is not None:
            return name
    raise UsageError(
        f"llama.cpp has no pre-tokenizer matching this tokenizer's ({json.dumps(pre_tokenizer)[:300]}); "
        f"supported: {'; '.join(SUPPORTED_PRE_TOKENIZERS)}."
    )


def _special_token_ids(tokenizer: PreTrainedTokenizerBase, stop_token_ids: list[int]) -> dict[str, int]:
    ids = {
        "bos": tokenizer.bos_token_id,
        "eos": tokenizer.eos_token_id,
        "unk": tokenizer.unk_token_id,
        "pad": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    }
    end_of_turn = [index for index in stop_token_ids if index != tokenizer.eos_token_id]
    if end_of_turn:
        ids["eot"] = end_of_turn[0]
    return {kind: index for kind, index in ids.items() if index is not None}


def _adds_first(tokenizer: PreTrainedTokenizerBase, token_id: int | None) -> bool:
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return token_id is not None and len(ids) > 1 and ids[0] == token_id


def _adds_last(tokenizer: PreTrainedTokenizerBase, token_id: int | None) -> bool:
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return token_id is not None and len(ids) > 1 and ids[-1] == token_id
