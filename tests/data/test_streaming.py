"""Streaming text: the blocks of the cached path, read on the fly; every document read once per pass across DDP ranks
and loader workers; a stopped stream resumes with no block twice and none missed."""

from __future__ import annotations

import pytest
from torchdata.stateful_dataloader import StatefulDataLoader

from lightning_ft.algorithms import SFT
from lightning_ft.data import DataError, TextData
from lightning_ft.data.streaming import TextStream
from lightning_ft.data.text import text_tokenizer
from lightning_ft.model.spec import ModelSpec
from tests.conftest import build_tiny_tokenizer
from tests.helpers import quiet_trainer, write_jsonl

DOCUMENTS = [f"Document {n}: " + "hello world the a of " * (n % 4 + 1) for n in range(11)]


def items(batch: list[dict]) -> list[dict]:
    return batch


def corpus(tmp_path) -> str:
    """Two shards, so the stream crosses a file boundary."""
    (tmp_path / "shards").mkdir()
    write_jsonl(tmp_path / "shards" / "part-0.jsonl", [{"text": text} for text in DOCUMENTS[:6]])
    write_jsonl(tmp_path / "shards" / "part-1.jsonl", [{"text": text} for text in DOCUMENTS[6:]])
    return str(tmp_path / "shards")


def stream(source: str, tokenizer, rank: int = 0, world_size: int = 1, boundaries: bool = True) -> TextStream:
    return TextStream(source, text_tokenizer(tokenizer), 24, boundaries, rank=rank, world_size=world_size)


def loader(dataset: TextStream, workers: int) -> StatefulDataLoader:
    return StatefulDataLoader(dataset, batch_size=2, collate_fn=items, num_workers=workers)


def test_one_reader_streams_the_cached_blocks_pass_after_pass(tmp_path):
    tokenizer = build_tiny_tokenizer()
    source = corpus(tmp_path)
    for boundaries in (False, True):
        cached = TextData(source, tokenizer=tokenizer, max_length=24, document_boundaries=boundaries)
        cached.prepare_data()
        cached.setup("fit")
        blocks = cached.items("train")
        expected = [blocks[i] for i in range(len(blocks))]
        streamed = iter(stream(source, tokenizer, boundaries=boundaries))
        for epoch in (0, 1):
            got = [next(streamed) for _ in expected]
            assert [{"input_ids": b["input_ids"], "labels": b["labels"]} for b in got] == expected
            assert {b["epoch"] for b in got} == {epoch}


def test_two_ranks_with_two_workers_read_every_document_once_per_pass(tmp_path):
    tokenizer = build_tiny_tokenizer()
    source = corpus(tmp_path)
    pieces: dict[int, list[int]] = {}
    for rank in (0, 1):
        passed_on = set()  # readers (slots) seen in their second pass: their first pass is complete
        for batch in loader(stream(source, tokenizer, rank, world_size=2), workers=2):
            for block in batch:
                if block["epoch"] > 0:
                    passed_on.add(block["reader"])
                    continue
                for document, segment in zip(block["documents"], block["input_ids"], strict=True):
                    pieces.setdefault(document, []).extend(segment)
            if passed_on == {2 * rank, 2 * rank + 1}:
                break
    expected = [tokenizer(text)["input_ids"] + [tokenizer.eos_token_id] for text in DOCUMENTS]
    assert [pieces[document] for document in sorted(pieces)] == expected  # each document whole, once, in order
    assert sorted(pieces) == list(range(len(DOCUMENTS)))


@pytest.mark.parametrize("workers", [0, 2])
def test_a_stopped_stream_resumes_without_repeats_or_gaps(tmp_path, workers):
    tokenizer = build_tiny_tokenizer()
    source = corpus(tmp_path)
    uninterrupted = iter(loader(stream(source, tokenizer), workers))
    expected = [next(uninterrupted) for _ in range(14)]  # past the end of the first pass
    stopped = loader(stream(source, tokenizer), workers)
    head_iterator = iter(stopped)
    head = [next(head_iterator) for _ in range(5)]
    state = stopped.state_dict()
    del head_iterator
    resumed = loader(stream(source, tokenizer), workers)
    resumed.load_state_dict(state)
    tail_iterator = iter(resumed)
    assert head + [next(tail_iterator) for _ in range(9)] == expected


def test_streaming_trains_and_needs_max_steps(tmp_path, tiny_model_dir):
    module, source = SFT(ModelSpec(path=str(tiny_model_dir))), corpus(tmp_path)
    data = TextData(source, streaming=True, max_length=24, batch_size=2, tokenizer=module.tokenizer)
    trainer = quiet_trainer(max_steps=3)
    trainer.fit(module, datamodule=data)
    assert trainer.global_step == 3
    data = TextData(source, streaming=True, tokenizer=module.tokenizer)
    with pytest.raises(ValueError, match="set trainer.max_steps"):
        quiet_trainer(max_epochs=1).fit(SFT(ModelSpec(path=str(tiny_model_dir))), datamodule=data)
    with pytest.raises(ValueError, match="give a data.val file instead of data.val_fraction"):
        TextData(source, streaming=True, val_fraction=0.1)


def test_a_malformed_line_met_while_streaming_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine"}\n\n{"text": "also fine",}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:3: malformed JSON"):
        next(iter(stream(str(path), build_tiny_tokenizer())))


def test_a_reader_with_no_documents_says_so_instead_of_waiting_forever(tmp_path):
    path = write_jsonl(tmp_path / "one.jsonl", [{"text": "only one document"}])
    with pytest.raises(DataError, match=r"one\.jsonl: no documents for reader 1 of 2"):
        next(iter(stream(str(path), build_tiny_tokenizer(), rank=1, world_size=2)))
