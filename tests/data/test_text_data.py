"""Continued pre-training data: raw text tokenized with EOS after each document and cut into fixed blocks; with
``document_boundaries`` each document is trained exactly as if alone."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from lightning_ft.data import DataError, TextData
from lightning_ft.data.packing import PackingCollator
from tests.conftest import build_tiny_tokenizer
from tests.helpers import per_token_logits, split_by_sequence, write_jsonl

DOCUMENTS = [
    "The capital of France is Paris.",
    "Write a haiku about autumn leaves falling on a quiet pond.",
    "hello world",
    "Convert 3 kilometres to metres: 3000 metres. Thank you, goodbye! " * 3,
    "the a of and to in is it that",
]


def text_data(path: str, tokenizer, **options) -> TextData:
    data = TextData(path, tokenizer=tokenizer, **options)
    data.prepare_data()
    data.setup("fit")
    return data


def alone(model, tokens: list[int]) -> torch.Tensor:
    ids = torch.tensor([tokens])
    return per_token_logits(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)})


def document_tokens(tokenizer, documents: list[str]) -> list[list[int]]:
    """Each document as the tokenizer encodes it, then EOS: what the blocks must hold, in this order."""
    return [tokenizer(text)["input_ids"] + [tokenizer.eos_token_id] for text in documents]


@pytest.mark.parametrize("document_boundaries", [False, True])
def test_blocks_hold_every_document_token_once_in_order(tmp_path, document_boundaries):
    tokenizer = build_tiny_tokenizer()
    path = write_jsonl(tmp_path / "text.jsonl", [{"text": text} for text in DOCUMENTS])
    data = text_data(str(path), tokenizer, max_length=16, document_boundaries=document_boundaries)
    blocks = data.items("train")
    expected = document_tokens(tokenizer, DOCUMENTS)
    total = sum(map(len, expected))
    assert len(blocks) == -(-total // 16)
    flat, lengths = [], []
    for index in range(len(blocks)):
        block = blocks[index]
        assert block["labels"] == block["input_ids"]  # every token trained
        lengths.append(sum(map(len, block["input_ids"])))
        flat += [token for segment in block["input_ids"] for token in segment]
        if document_boundaries:  # a segment ends at EOS unless the block ends inside its document
            assert all(segment[-1] == tokenizer.eos_token_id for segment in block["input_ids"][:-1])
        else:
            assert len(block["input_ids"]) == 1
    assert flat == sum(expected, [])
    assert lengths == [16] * (len(blocks) - 1) + [total - 16 * (len(blocks) - 1)]


def test_with_document_boundaries_each_document_has_its_logits_alone(tmp_path, tiny_model_dir):
    """A block holding three documents (the third cut by the block's end): under `document_boundaries` each
    document's logits equal those of the document run alone; without, the second document sees the first (the
    test can fail)."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()
    tokenizer = build_tiny_tokenizer()
    documents = DOCUMENTS[:3] + DOCUMENTS[3:4]
    tokens = document_tokens(tokenizer, documents)
    block_size = sum(map(len, tokens[:3])) - 2  # documents 0 and 1 whole, then all but 2 tokens of document 2
    path = write_jsonl(tmp_path / "text.jsonl", [{"text": text} for text in documents])
    collate = PackingCollator(tokenizer.pad_token_id)
    for boundaries in (True, False):
        data = text_data(str(path), tokenizer, max_length=block_size, document_boundaries=boundaries)
        batch = collate([data.items("train")[0]])
        logits = per_token_logits(model, batch)
        if boundaries:
            pieces = split_by_sequence(logits, batch["sequence_ids"][0])
            assert len(pieces) == 3
            for piece, document in zip(pieces, [tokens[0], tokens[1], tokens[2][:-2]], strict=True):
                torch.testing.assert_close(piece, alone(model, document), atol=1e-5, rtol=0)
            assert batch["labels"][0, len(tokens[0])] == -100  # the 2nd document's first token is not predicted
        else:
            second = logits[len(tokens[0]) : len(tokens[0]) + len(tokens[1])]
            assert (second - alone(model, tokens[1])).abs().max() > 1e-3


def test_text_files_a_directory_val_fraction_and_dropped_documents(tmp_path):
    tokenizer = build_tiny_tokenizer()
    (tmp_path / "corpus").mkdir()
    for number, text in enumerate([*DOCUMENTS, "   "]):
        (tmp_path / "corpus" / f"doc{number}.txt").write_text(text)
    data = text_data(str(tmp_path / "corpus"), tokenizer, max_length=32, val_fraction=0.4, seed=3)
    train, val = data.stats["train"], data.stats["val"]
    assert train["records"] + val["records"] == 6 and val["records"] == 2  # round(0.4 * 6) held out
    assert train.get("dropped_empty", 0) + val.get("dropped_empty", 0) == 1
    kept = [*data.datasets["train"]["record"], *data.datasets["val"]["record"]]
    assert sorted(kept) == [0, 1, 2, 3, 4]  # the blank file (number 5) dropped, the others once each
    batch = next(iter(data.val_dataloader()))
    assert set(batch) == {"input_ids", "labels", "position_ids", "sequence_ids", "attention_mask"}


def test_bad_text_records_are_named(tmp_path):
    tokenizer = build_tiny_tokenizer()
    path = write_jsonl(tmp_path / "bad.jsonl", [{"text": "fine"}, {"text": None}])
    with pytest.raises(DataError, match=r"bad\.jsonl:2: field 'text' is null"):
        text_data(str(path), tokenizer)
    path = write_jsonl(tmp_path / "num.jsonl", [{"body": 3}])
    with pytest.raises(DataError, match=r"num\.jsonl:1: field 'body' must be text, got int"):
        text_data(str(path), tokenizer, text_field="body")
