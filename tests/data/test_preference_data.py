"""`PreferenceData`: side-by-side batches, KTO's KL pairs, dropped records reported by their number in the file,
bad records stopping the run with their number and field."""

from __future__ import annotations

import re

import pytest
import torch

from lightning_ft.data import DataError, PreferenceData
from lightning_ft.data.tokenize import IGNORE_INDEX
from tests.conftest import build_tiny_tokenizer, shared_data
from tests.helpers import identical_pairs, read_jsonl, write_jsonl


def prepared(data: PreferenceData) -> PreferenceData:
    data.prepare_data()
    data.setup("fit")
    return data


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))


def test_batches_hold_chosen_rows_then_rejected_rows(tmp_path):
    tokenizer = build_tiny_tokenizer()
    records = [
        {"prompt": "Say hello.", "chosen": "hello world", "rejected": "goodbye"},
        {"prompt": "What is the capital of France?", "chosen": "Paris.", "rejected": "No."},
    ]
    data = prepared(PreferenceData(str(write_jsonl(tmp_path / "p.jsonl", records)), tokenizer=tokenizer, batch_size=2))
    batch = next(iter(data.predict_dataloader()))
    assert batch["input_ids"].shape[0] == 4 and batch["record"].tolist() == [0, 1]
    responses = [
        tokenizer.decode([t for t, label in zip(ids, labels, strict=True) if label != IGNORE_INDEX])
        for ids, labels in zip(batch["input_ids"], batch["labels"], strict=True)
    ]
    assert responses == ["hello world<|im_end|>", "Paris.<|im_end|>", "goodbye<|im_end|>", "No.<|im_end|>"]
    assert batch["attention_mask"].sum(1).tolist() == [
        len(ids) for ids in data.datasets["train"]["chosen_input_ids"]
    ] + [len(ids) for ids in data.datasets["train"]["rejected_input_ids"]]


def test_identical_pairs_are_dropped_and_reported_by_record_number(tmp_path, caplog):
    records = [
        {"prompt": f"Say {word}.", "chosen": word, "rejected": "no" if word != "same" else word}
        for word in ["hello", "world", "same", "the", "same"]
    ]
    data = PreferenceData(
        str(write_jsonl(tmp_path / "p.jsonl", records)), tokenizer=build_tiny_tokenizer(), val_fraction=0.4, seed=1
    )
    with caplog.at_level("INFO"):
        prepared(data)
    dropped = data.dropped["train"].get("dropped_identical", []) + data.dropped["val"].get("dropped_identical", [])
    assert sorted(dropped) == [2, 4]  # numbers in the file, whichever split they fell in
    reported = re.findall(r"dropped with identical chosen and rejected \(lines? ([\d, ]+)\)", caplog.text)
    assert sorted(int(line) for lines in reported for line in lines.split(", ")) == [3, 5]  # their lines in the file
    kept = list(data.datasets["train"]["record"]) + list(data.datasets["val"]["record"])
    assert sorted(kept) == [0, 1, 3]


def test_pairs_identical_once_truncated_are_dropped_and_reported_by_record_number(tmp_path, caplog):
    """With max_length 20 and max_prompt_length 10, record 1's 17-token prompt keeps its last 10 tokens and its
    responses (19 tokens at most) their first 10: the responses differ only after their 14th token, so chosen and
    rejected become the same tokens and the pair would train on nothing. Records 0 and 2 are cut too but differ from
    their responses' first tokens."""
    shared = "hello world the a of and to in is it that"
    records = [
        {"prompt": "Say hello.", "chosen": "hello world", "rejected": "goodbye"},
        {"prompt": "Say hello.", "chosen": f"{shared} hello", "rejected": f"{shared} goodbye"},
        {
            "prompt": "Say hello.",
            "chosen": "The capital of France is Paris.",
            "rejected": "the a of and to in is it that",
        },
    ]
    data = PreferenceData(
        str(write_jsonl(tmp_path / "p.jsonl", records)),
        tokenizer=build_tiny_tokenizer(),
        max_length=20,
        max_prompt_length=10,
    )
    with caplog.at_level("INFO"):
        prepared(data)
    assert data.dropped["train"] == {"dropped_identical": [1]}
    assert data.stats["train"] == {"records": 3, "truncated": 2, "dropped_identical": 1}
    assert "1 dropped with identical chosen and rejected (line 2)" in caplog.text
    assert list(data.datasets["train"]["record"]) == [0, 2]


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"prompt": "Hi", "rejected": "no"}, r"p\.jsonl:2: missing field 'chosen'"),
        ({"prompt": "Hi", "chosen": "yes"}, r"p\.jsonl:2: missing field 'rejected'"),
        ({"prompt": "Hi", "chosen": None, "rejected": "no"}, r"p\.jsonl:2: field 'chosen' is null$"),
        ({"prompt": "Hi", "chosen": 3, "rejected": "no"}, r"p\.jsonl:2: field 'chosen' must be text"),
    ],
)
def test_bad_records_stop_the_run_with_their_number_and_field(tmp_path, record, message):
    records = [{"prompt": "Say hello.", "chosen": "hello", "rejected": "no"}, record]
    data = PreferenceData(str(write_jsonl(tmp_path / "p.jsonl", records)), tokenizer=build_tiny_tokenizer())
    with pytest.raises(DataError, match=message):
        prepared(data)


def test_kto_pairs_every_prompt_with_another_examples_completion(tmp_path):
    tokenizer = build_tiny_tokenizer()
    words = ["hello", "world", "the", "of", "and"]
    records = [
        {
            "messages": [{"role": "user", "content": f"Say {w}."}, {"role": "assistant", "content": w}],
            "label": i % 2 == 0,
        }
        for i, w in enumerate(words)
    ]
    data = prepared(
        PreferenceData(str(write_jsonl(tmp_path / "k.jsonl", records)), format="kto", tokenizer=tokenizer, batch_size=5)
    )
    batch = next(iter(data.predict_dataloader()))
    assert batch["input_ids"].shape[0] == 10 and batch["desirable"].tolist() == [True, False, True, False, True]

    def decoded(row: int) -> tuple[str, str]:
        ids, labels = batch["input_ids"][row], batch["labels"][row]
        mask = batch["attention_mask"][row].bool()
        text = tokenizer.decode(ids[mask])
        return text, tokenizer.decode(ids[labels != IGNORE_INDEX])

    completions = [decoded(row)[1] for row in range(5)]
    assert completions == [f"{w}<|im_end|>" for w in words]
    partners = []
    for row in range(5):
        text, completion = decoded(5 + row)
        assert f"Say {words[row]}." in text  # its own prompt...
        partners.append(completions.index(completion))
    assert sorted(partners) == list(range(5)) and all(p != row for row, p in enumerate(partners))  # ...another's answer


def test_margin_field_must_be_numeric(tmp_path):
    records = [{"prompt": "Hi", "chosen": "hello", "rejected": "no", "gap": "big"}]
    data = PreferenceData(
        str(write_jsonl(tmp_path / "p.jsonl", records)), margin_field="gap", tokenizer=build_tiny_tokenizer()
    )
    with pytest.raises(DataError, match=r"p\.jsonl:1: field 'gap' must be a number"):
        prepared(data)


def test_real_hh_rlhf_counts(tmp_path):
    """The real hh-rlhf slice: every record tokenizes; the identical pairs (721 and 2168 of 2354) are the only ones
    dropped."""
    path = shared_data("preference/hh_rlhf_helpful_base_test.jsonl")
    records = read_jsonl(path)
    identical = identical_pairs(records)
    assert identical  # the slice has some: the drop is exercised
    data = prepared(PreferenceData(str(path), format="hh_rlhf", tokenizer=build_tiny_tokenizer(), max_length=512))
    assert data.stats["train"]["records"] == len(records)
    assert data.dropped["train"] == {"dropped_identical": identical}
    assert len(data.datasets["train"]) == len(records) - len(identical)
    assert isinstance(data.datasets["train"][0]["chosen_input_ids"][0], int)
    assert torch.is_tensor(next(iter(data.train_dataloader()))["input_ids"])
