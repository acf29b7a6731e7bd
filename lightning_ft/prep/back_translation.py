"""Back-translation: a text translated into a pivot language and back is a paraphrase of it (Sennrich et al. 2016;
Xie et al. 2020 for augmentation). Translators are an encoder-decoder model trained for one language pair (e.g.
Marian ``opus-mt-en-fr``, then ``opus-mt-fr-en`` back), a causal chat model asked to translate, or an
OpenAI-compatible endpoint asked the same."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import torch
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer, PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from lightning_ft.model.export import load_export
from lightning_ft.model.spec import DTypeName, torch_dtype
from lightning_ft.prep.completions import Completer, Completion, LocalCompleter

TRANSLATION_REQUEST = "Translate to {language}. Reply with the translation only.\n\n{text}"


class Translator(Protocol):
    def translate(self, texts: list[str], language: str, seed: int) -> list[Completion]:
        """Each text in ``language`` (or why not), in order."""
        ...


class ChatTranslator:
    """A chat model or endpoint asked "Translate to <language>" for each text.

    Args:
        completer: The model or endpoint.
    """

    def __init__(self, completer: Completer) -> None:
        self.completer = completer

    def translate(self, texts: list[str], language: str, seed: int) -> list[Completion]:
        conversations = [
            [{"role": "user", "content": TRANSLATION_REQUEST.format(language=language, text=text)}] for text in texts
        ]
        return self.completer.complete_many(conversations, seed, progress=f"to {language}")


class Seq2SeqTranslator:
    """An encoder-decoder translation model; it translates into the language it was trained for, whatever
    ``language`` says.

    Args:
        model: The model.
        tokenizer: Its tokenizer.
        max_new_tokens: Longest translation.
        temperature: 0 decodes as the model's generation config says; above 0 samples.
        top_p: Nucleus of the sampling.
        batch_size: Texts translated together.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        batch_size: int = 8,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.batch_size = batch_size

    @torch.no_grad()
    def translate(self, texts: list[str], language: str, seed: int) -> list[Completion]:
        sampling = {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "num_beams": 1}
        translations = []
        for batch_number, start in enumerate(tqdm(range(0, len(texts), self.batch_size), desc=f"to {language}")):
            batch = self.tokenizer(
                texts[start : start + self.batch_size], return_tensors="pt", padding=True, truncation=True
            ).to(self.model.device)
            torch.manual_seed(seed + batch_number)
            generated = self.model.generate(
                **batch, max_new_tokens=self.max_new_tokens, **(sampling if self.temperature > 0 else {})
            )
            translations += self.tokenizer.batch_decode(generated, skip_special_tokens=True)
        return [Completion(text.strip()) if text.strip() else Completion(None, "empty_reply") for text in translations]


def is_seq2seq(path: str) -> bool:
    """Whether ``path`` holds (or names) an encoder-decoder model."""
    directory = Path(path)
    if directory.is_dir():
        config = directory / "config.json"
        return config.is_file() and bool(json.loads(config.read_text()).get("is_encoder_decoder", False))
    try:
        return bool(AutoConfig.from_pretrained(path).is_encoder_decoder)
    except (OSError, ValueError):
        return False


def load_translator(
    path: str,
    dtype: DTypeName = "float32",
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    batch_size: int = 8,
) -> Translator:
    """An encoder-decoder translation model, or a causal model (anything `load_export` loads) asked to translate.

    Args:
        path: A model directory, export, GGUF directory or hub id.
        dtype: The weights' dtype.
        max_new_tokens: Longest translation.
        temperature: 0 decodes greedily; above 0 samples (copies differ).
        top_p: Nucleus of the sampling.
        batch_size: Texts translated together.
    """
    sampling = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p}
    if is_seq2seq(path):
        model = AutoModelForSeq2SeqLM.from_pretrained(path, dtype=torch_dtype(dtype))
        return Seq2SeqTranslator(model, AutoTokenizer.from_pretrained(path), batch_size=batch_size, **sampling)
    model, tokenizer = load_export(path, dtype=dtype)
    return ChatTranslator(LocalCompleter(model, tokenizer, batch_size=batch_size, **sampling))


def back_translate(
    texts: list[str], forward: Translator, back: Translator, pivot_language: str, source_language: str, seed: int
) -> list[Completion]:
    """Each text translated into ``pivot_language`` and back into ``source_language``; a failure names its leg
    (``to_pivot_http_500``, ``from_pivot_empty_reply``, ...)."""
    pivots = forward.translate(texts, pivot_language, seed)
    reached = [index for index, pivot in enumerate(pivots) if pivot.text is not None]
    returned = back.translate([str(pivots[index].text) for index in reached], source_language, seed + 1)
    results = [Completion(None, f"to_pivot_{pivot.failure}") for pivot in pivots]
    for index, completion in zip(reached, returned, strict=True):
        failure = None if completion.text is not None else f"from_pivot_{completion.failure}"
        results[index] = Completion(completion.text, failure)
    return results
