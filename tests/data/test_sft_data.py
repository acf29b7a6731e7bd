"""The SFT data modules: counts of kept, truncated and dropped records, batches, splits and errors by record."""

from __future__ import annotations

import pytest
import torch

from lightning_ft.data import ChatData, DataError, InstructionData
from lightning_ft.errors import UsageError
from tests.conftest import build_tiny_tokenizer, shared_data
from tests.helpers import read_jsonl, write_jsonl


def test_counts_of_kept_truncated_and_dropped_records(tmp_path, caplog):
    tokenizer = build_tiny_tokenizer()
    records = [
        {"instruction": "Say hello.", "output": "hello"},
        {"instruction": "Say hello. " * 40, "output": "hello"},  # too long: dropped under overlong=drop
        {"instruction": "Say it.", "output": "world " * 40},  # too long as well
        {"instruction": "Say it.", "output": "ok"},
    ]
    data = InstructionData(
        str(write_jsonl(tmp_path / "t.jsonl", records)),
        max_length=48,
        overlong="drop",
        tokenizer=tokenizer,
        batch_size=2,
        packing=False,
    )
    data.prepare_data()
    data.setup("fit")
    assert data.stats["train"] == {"records": 4, "ok": 2, "dropped_too_long": 2}
    batch = next(iter(data.train_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["input_ids"].shape[0] == 2 and batch["input_ids"].dtype == torch.long
    data.packing = True  # the two short records share one packed row
    (row,) = next(iter(data.train_dataloader()))["sequence_ids"]
    assert row.max() == 1

    truncating = InstructionData(str(write_jsonl(tmp_path / "t.jsonl", records)), max_length=48, tokenizer=tokenizer)
    truncating.prepare_data()
    # Record 1's prompt fills all 48 tokens: nothing trainable is left. Record 2 keeps part of its answer.
    assert truncating.stats["train"] == {"records": 4, "ok": 2, "truncated": 1, "dropped_no_trainable": 1}


def test_nothing_left_to_train_is_an_error(tmp_path):
    path = str(write_jsonl(tmp_path / "t.jsonl", [{"instruction": "x " * 100, "output": "y"}]))
    data = InstructionData(path, max_length=16, tokenizer=build_tiny_tokenizer())
    with pytest.raises(DataError, match="no train records left"):
        data.prepare_data()


def test_bad_record_is_named_by_file_line_and_field(tmp_path):
    path = str(
        write_jsonl(tmp_path / "t.jsonl", [{"instruction": "a", "output": "b"}, {"instruction": "a", "output": 3}])
    )
    data = InstructionData(path, tokenizer=build_tiny_tokenizer())
    with pytest.raises(DataError, match=r"t\.jsonl:2: field 'output' must be a string, got int"):
        data.prepare_data()


def test_seeded_validation_fraction_and_system_prompt(tmp_path):
    records = [{"instruction": f"Say {i}.", "output": str(i)} for i in range(20)]

    def make():
        return InstructionData(
            str(write_jsonl(tmp_path / "t.jsonl", records)),
            val_fraction=0.25,
            system_prompt="Be brief.",
            tokenizer=build_tiny_tokenizer(),
            seed=3,
        )

    first, second = make(), make()
    for data in (first, second):
        data.prepare_data()
        data.setup("fit")
    assert (len(first.datasets["train"]), len(first.datasets["val"])) == (15, 5)
    assert first.datasets["val"]["input_ids"] == second.datasets["val"]["input_ids"]
    text = first.tokenizer.decode(first.datasets["train"][0]["input_ids"])
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>")


def test_val_file_and_fraction_together_are_rejected(tmp_path):
    with pytest.raises(UsageError, match=r"^give either data\.val \(a file\) or data\.val_fraction, not both$"):
        InstructionData("a.jsonl", val="b.jsonl", val_fraction=0.1)


def test_real_sharegpt_and_oasst_chats_tokenize(tmp_path):
    tokenizer = build_tiny_tokenizer()
    sharegpt_file = shared_data("chat/fastchat_dummy_conversation.jsonl")
    sharegpt = ChatData(str(sharegpt_file), format="sharegpt", tokenizer=tokenizer, max_length=4096)
    sharegpt.prepare_data()
    records = len(read_jsonl(sharegpt_file))
    assert sharegpt.stats["train"]["records"] == records
    assert sharegpt.stats["train"].get("ok", 0) + sharegpt.stats["train"].get("truncated", 0) == records
    oasst_file = shared_data("chat/oasst_en100_messages.jsonl")
    oasst = ChatData(str(oasst_file), tokenizer=tokenizer, max_length=256)
    oasst.prepare_data()
    assert oasst.stats["train"]["records"] == len(read_jsonl(oasst_file))


def test_length_grouping_of_packed_rows_is_refused():
    with pytest.raises(ValueError, match="group_by_length batches padded conversations: it needs packing: false"):
        InstructionData("unused.jsonl", packing=True, group_by_length=True)
