"""The merged model's tokenizer: the base's (or a named source's), with its chat template."""

from __future__ import annotations

from pathlib import Path

from mergekit.config import MergeConfiguration
from mergekit.merge import _set_chat_template  # MergeKit's reading of `chat_template:` (built-in names, "auto")
from transformers import AutoConfig, AutoTokenizer
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from lightning_ft.errors import UsageError
from lightning_ft.merge.sources import MergeSource


def source_tokenizer(source: MergeSource, config: MergeConfiguration) -> PreTrainedTokenizerBase:
    """``source``'s tokenizer and chat template (an adapter export's is the one it was trained with), with the
    YAML's ``chat_template:`` in its place when the YAML sets one."""
    tokenizer = AutoTokenizer.from_pretrained(source.tokenizer_dir, revision=source.reference.model.revision)
    _set_chat_template(tokenizer, config)
    return tokenizer


def write_tokenizer(
    directory: Path, config: MergeConfiguration, tokenizer: PreTrainedTokenizerBase, tokenizer_name: str
) -> None:
    """Give the merged model in ``directory`` its tokenizer. With ``tokenizer_source``/``tokenizer:`` in the YAML,
    MergeKit built (and sized the embeddings for) the tokenizer it wrote there: it stays, and gets ``tokenizer``'s chat
    template if it has none. Otherwise ``tokenizer`` is written, if the model's vocabulary holds every one of its
    tokens."""
    if config.tokenizer_source is not None or config.tokenizer is not None:
        built = AutoTokenizer.from_pretrained(directory)
        if not built.chat_template and tokenizer.chat_template:
            built.chat_template = tokenizer.chat_template
            built.save_pretrained(directory)
        return
    vocab_size = AutoConfig.from_pretrained(directory).get_text_config().vocab_size
    if len(tokenizer) > vocab_size:
        raise UsageError(
            f"The tokenizer of {tokenizer_name} has {len(tokenizer)} tokens but the merged model's vocabulary "
            f"{vocab_size}: choose a tokenizer that fits (--base-tokenizer), or tokenizer_source: union in the YAML"
        )
    tokenizer.save_pretrained(directory)
