"""Input the user gets wrong, and what the data modules say about it: text encodings (a UTF-8 byte-order mark is read,
other encodings are an option, undecodable bytes are named by file, line and byte offset), unreadable parquet, where a
record is (the line of jsonl and csv records, else the 1-based record number), null against missing fields, option
ranges, and directories of shards."""

from __future__ import annotations

import codecs
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import Dataset

from lightning_ft.data import ChatData, DataError, InstructionData, PreferenceData, TextData
from lightning_ft.data.sources import load_records
from lightning_ft.data.streaming import TextStream, iter_records
from lightning_ft.data.text import text_tokenizer
from lightning_ft.errors import UsageError
from tests.conftest import build_tiny_tokenizer
from tests.helpers import write_jsonl

RECORDS = [
    {"instruction": "Say café.", "output": "café"},
    {"instruction": "Say it.", "output": "ok"},
    {"instruction": "Say hello.", "output": "hello world"},
]
LATIN_HINT = "if the file is Latin-1 or Windows-1252, set --data.encoding latin-1 (or cp1252)"


def prepared(data):
    data.prepare_data()
    data.setup("fit")
    return data


def jsonl_text(records: list[dict]) -> str:
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


def csv_text(records: list[dict]) -> str:
    return "instruction,output\n" + "".join(f"{r['instruction']},{r['output']}\n" for r in records)


def file_text(suffix: str, records: list[dict]) -> str:
    if suffix == "jsonl":
        return jsonl_text(records)
    if suffix == "csv":
        return csv_text(records)
    return json.dumps(records, ensure_ascii=False, indent=1)


def tokens(data) -> tuple[list, list]:
    train = data.datasets["train"]
    return train["input_ids"], train["labels"]


# 1. Encodings


@pytest.mark.parametrize("suffix", ["jsonl", "json", "csv"])
def test_a_utf8_byte_order_mark_is_read_and_trains_the_same(tmp_path, suffix):
    tokenizer = build_tiny_tokenizer()
    text = file_text(suffix, RECORDS)
    (tmp_path / f"plain.{suffix}").write_text(text, encoding="utf-8")
    (tmp_path / f"bom.{suffix}").write_bytes(codecs.BOM_UTF8 + text.encode("utf-8"))
    plain = prepared(InstructionData(str(tmp_path / f"plain.{suffix}"), tokenizer=tokenizer, packing=False))
    marked = prepared(InstructionData(str(tmp_path / f"bom.{suffix}"), tokenizer=tokenizer, packing=False))
    assert load_records(str(tmp_path / f"bom.{suffix}")).to_list() == RECORDS
    assert tokens(marked) == tokens(plain)
    assert next(iter(marked.train_dataloader()))["input_ids"].tolist() == (
        next(iter(plain.train_dataloader()))["input_ids"].tolist()
    )


def test_a_byte_order_mark_is_not_part_of_a_text_document_cached_or_streamed(tmp_path):
    (tmp_path / "doc.txt").write_bytes(codecs.BOM_UTF8 + b"hello world")
    (tmp_path / "doc.jsonl").write_bytes(codecs.BOM_UTF8 + b'{"text": "hello world"}\n')
    assert load_records(str(tmp_path / "doc.txt"))["text"] == ["hello world"]
    for name in ("doc.txt", "doc.jsonl"):
        assert [record for _, _, record in iter_records(str(tmp_path / name))] == [{"text": "hello world"}]


def latin1_jsonl(path: Path) -> Path:
    """Line 1 is 35 bytes (``{"instruction": "a", "output": "b"}``) and a newline, line 2 is blank, and line 3's
    ``é`` (0xe9 in Latin-1) is its 21st byte: byte offset 35 + 1 + 1 + 20 = 57."""
    lines = ['{"instruction": "a", "output": "b"}', "", '{"instruction": "café", "output": "b"}']
    path.write_bytes("\n".join(lines).encode("latin-1") + b"\n")
    return path


def test_bytes_that_are_not_utf8_are_named_by_file_line_and_byte_offset(tmp_path):
    path = latin1_jsonl(tmp_path / "latin.jsonl")
    assert path.read_bytes().index(b"\xe9") == 57
    expected = f"{path}: not valid UTF-8 at line 3, byte offset 57 (0xe9); {LATIN_HINT}"
    with pytest.raises(DataError) as error:
        InstructionData(str(path), tokenizer=build_tiny_tokenizer()).prepare_data()
    assert str(error.value) == expected
    with pytest.raises(DataError) as error:
        list(iter_records(str(path)))
    assert str(error.value) == expected


@pytest.mark.parametrize("suffix", ["csv", "txt"])
def test_undecodable_csv_and_text_files_are_named_too(tmp_path, suffix):
    """``instruction,output\\n`` is 19 bytes, then ``caf`` 3: the ``é`` of line 2 is byte 22."""
    path = tmp_path / f"latin.{suffix}"
    path.write_bytes("instruction,output\ncafé,b\n".encode("latin-1"))
    with pytest.raises(DataError) as error:
        load_records(str(path))
    assert str(error.value) == f"{path}: not valid UTF-8 at line 2, byte offset 22 (0xe9); {LATIN_HINT}"


def test_the_byte_offset_counts_the_byte_order_mark(tmp_path):
    """The 3 bytes of the mark come first: ``{"text": "`` is 10 bytes, so the bad byte is at 3 + 10 = 13."""
    path = tmp_path / "marked.jsonl"
    path.write_bytes(codecs.BOM_UTF8 + b'{"text": "\xff"}\n')
    with pytest.raises(DataError) as error:
        load_records(str(path))
    assert str(error.value) == f"{path}: not valid UTF-8 at line 1, byte offset 13 (0xff); {LATIN_HINT}"


@pytest.mark.parametrize("suffix", ["jsonl", "json", "csv"])
def test_the_encoding_option_reads_latin1_files_as_their_utf8_twins(tmp_path, suffix):
    tokenizer = build_tiny_tokenizer()
    text = file_text(suffix, RECORDS)
    (tmp_path / f"utf8.{suffix}").write_text(text, encoding="utf-8")
    (tmp_path / f"latin.{suffix}").write_bytes(text.encode("latin-1"))
    utf8 = prepared(InstructionData(str(tmp_path / f"utf8.{suffix}"), tokenizer=tokenizer))
    latin = prepared(InstructionData(str(tmp_path / f"latin.{suffix}"), tokenizer=tokenizer, encoding="latin-1"))
    assert tokens(latin) == tokens(utf8)
    # datasets reads a UTF-8 copy, made once: its fingerprint (and so the tokenized cache) stays the same
    first, second = (load_records(str(tmp_path / f"latin.{suffix}"), encoding="latin-1") for _ in range(2))
    assert first.to_list() == RECORDS and first._fingerprint == second._fingerprint


def test_text_data_honours_the_encoding_cached_and_streamed(tmp_path):
    tokenizer = build_tiny_tokenizer()
    (tmp_path / "latin").mkdir()
    (tmp_path / "latin" / "a.txt").write_bytes("Le café est chaud.".encode("latin-1"))
    cached = prepared(TextData(str(tmp_path / "latin"), tokenizer=tokenizer, max_length=16, encoding="latin-1"))
    expected = tokenizer("Le café est chaud.")["input_ids"] + [tokenizer.eos_token_id]
    assert cached.datasets["train"]["input_ids"] == [expected]
    stream = TextStream(str(tmp_path / "latin"), text_tokenizer(tokenizer), 64, encoding="latin-1")
    assert next(iter(stream))["input_ids"] == [expected]
    streaming = TextData(str(tmp_path / "latin"), streaming=True, encoding="latin-1", tokenizer=tokenizer)
    block = next(iter(streaming.train_dataloader()))["input_ids"].flatten().tolist()  # the stream repeats the file
    assert block[: len(expected)] == expected
    path = tmp_path / "latin" / "a.txt"
    with pytest.raises(DataError) as error:
        next(iter(TextStream(str(tmp_path / "latin"), text_tokenizer(tokenizer), 64)))
    assert str(error.value) == f"{path}: not valid UTF-8 at line 1, byte offset 6 (0xe9); {LATIN_HINT}"


def test_bytes_another_encoding_cannot_decode_are_named_with_it(tmp_path):
    """0x81 is undefined in Windows-1252; ``{"text": "`` is 10 bytes before it."""
    path = tmp_path / "win.jsonl"
    path.write_bytes(b'{"text": "\x81"}\n')
    with pytest.raises(DataError) as error:
        TextData(str(path), tokenizer=build_tiny_tokenizer(), encoding="cp1252").prepare_data()
    assert str(error.value) == (
        f"{path}: not valid cp1252 at line 1, byte offset 10 (0x81); set --data.encoding to the encoding the file "
        "was saved in"
    )


def test_an_unknown_encoding_is_refused_at_construction(tmp_path):
    with pytest.raises(UsageError) as error:
        InstructionData(str(tmp_path / "t.jsonl"), encoding="latin-9000")
    assert str(error.value) == (
        "data.encoding: unknown encoding 'latin-9000'; give a Python codec name such as utf-8, latin-1 or cp1252"
    )


# 2. Parquet


def test_a_corrupt_parquet_file_names_the_file_and_pyarrows_reason(tmp_path):
    whole, cut = tmp_path / "whole.parquet", tmp_path / "train.parquet"
    Dataset.from_list(RECORDS).to_parquet(str(whole))
    cut.write_bytes(whole.read_bytes()[:-20])  # the footer is gone
    with pytest.raises(pa.ArrowInvalid) as reason:
        pq.ParquetFile(cut)
    expected = f"{cut}: not a readable parquet file ({reason.value})"
    with pytest.raises(DataError) as error:
        InstructionData(str(cut), tokenizer=build_tiny_tokenizer()).prepare_data()
    assert str(error.value) == expected
    with pytest.raises(DataError) as error:
        list(iter_records(str(cut)))
    assert str(error.value) == expected


# 3. Where a record is


def test_jsonl_errors_name_the_line_an_editor_shows(tmp_path):
    """Record 3 (index 2) is on line 5: blank lines 2 and 4 count."""
    path = tmp_path / "train.jsonl"
    lines = [RECORDS[0], None, RECORDS[1], None, {"instruction": "x", "output": 3}]
    path.write_text("".join("\n" if r is None else json.dumps(r) + "\n" for r in lines))
    with pytest.raises(DataError) as error:
        InstructionData(str(path), tokenizer=build_tiny_tokenizer()).prepare_data()
    assert str(error.value) == f"{path}:5: field 'output' must be a string, got int"


def test_csv_errors_name_the_line_a_record_starts_on(tmp_path):
    """The header is line 1; record 1's quoted instruction spans lines 2-3, record 2 is line 4, line 5 is blank, and
    record 3, whose output cell is empty (null, as `datasets` reads CSV), is line 6."""
    path = tmp_path / "train.csv"
    path.write_text('instruction,output\n"Say\nit.",ok\nSay hi.,hi\n\nSay nothing.,\n')
    with pytest.raises(DataError) as error:
        InstructionData(str(path), tokenizer=build_tiny_tokenizer()).prepare_data()
    assert str(error.value) == f"{path}:6: field 'output' is null; expected a string"
    assert [where for _, where, _ in iter_records(str(path))] == [f"{path}:2", f"{path}:4", f"{path}:6"]


@pytest.mark.parametrize("suffix", ["json", "parquet"])
def test_json_lists_and_parquet_name_the_1_based_record(tmp_path, suffix):
    path = tmp_path / f"train.{suffix}"
    records = [RECORDS[0], RECORDS[1], {"instruction": "x", "output": ""}, {"instruction": "y", "output": None}]
    if suffix == "json":
        path.write_text(json.dumps(records))
    else:
        Dataset.from_list(records).to_parquet(str(path))
    with pytest.raises(DataError) as error:
        InstructionData(str(path), tokenizer=build_tiny_tokenizer()).prepare_data()
    assert str(error.value) == f"{path} record 4: field 'output' is null; expected a string"
    assert [where for _, where, _ in iter_records(str(path))][-1] == f"{path} record 4"


def test_drop_reports_name_lines_or_records(tmp_path, caplog):
    """Max length 24: the long instructions of records 2 and 4 are dropped. In the jsonl file (blank line 2) they are
    on lines 3 and 5; in parquet they are records 2 and 4; in the csv file (header first) on lines 3 and 5."""
    records = [RECORDS[1], {"instruction": "Say hello. " * 9, "output": "hi"}, RECORDS[1]]
    records.append(records[1])
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text(json.dumps(records[0]) + "\n\n" + "".join(json.dumps(r) + "\n" for r in records[1:]))
    Dataset.from_list(records).to_parquet(str(tmp_path / "train.parquet"))
    (tmp_path / "train.csv").write_text(csv_text(records))
    tokenizer = build_tiny_tokenizer()
    for name, places in (("jsonl", "lines 3, 5"), ("parquet", "records 2, 4"), ("csv", "lines 3, 5")):
        caplog.clear()
        path = tmp_path / f"train.{name}"
        with caplog.at_level("INFO"):
            data = InstructionData(str(path), tokenizer=tokenizer, max_length=24, overlong="drop")
            data.prepare_data()
        assert data.dropped["train"] == {"dropped_too_long": [1, 3]}  # 0-based indices, as the `record` column
        report = f"train data ({path}): 4 records, 2 kept; 2 dropped as longer than 24 tokens ({places})"
        assert report in caplog.text


def test_a_directory_of_shards_names_the_shard_and_its_line(tmp_path):
    (tmp_path / "shards").mkdir()
    write_jsonl(tmp_path / "shards" / "a.jsonl", RECORDS[:2])
    write_jsonl(tmp_path / "shards" / "b.jsonl", [RECORDS[2], {"instruction": "x"}])
    with pytest.raises(DataError) as error:
        InstructionData(str(tmp_path / "shards"), tokenizer=build_tiny_tokenizer()).prepare_data()
    assert str(error.value) == f"{tmp_path / 'shards' / 'b.jsonl'}:2: missing field 'output'"


# 4. Null is not missing


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"instruction": None, "output": "b"}, "field 'instruction' is null; expected a string"),
        ({"output": "b"}, "missing field 'instruction'"),
    ],
)
def test_a_null_field_is_reported_as_null_and_an_absent_one_as_missing(tmp_path, bad, message):
    """Every other record has the field, so `datasets` gives the bad one the field as null either way."""
    path = write_jsonl(tmp_path / "train.jsonl", [RECORDS[0], bad, RECORDS[1]])
    with pytest.raises(DataError) as error:
        InstructionData(str(path), tokenizer=build_tiny_tokenizer()).prepare_data()
    assert str(error.value) == f"{path}:2: {message}"


@pytest.mark.parametrize(
    ("turn", "message"),
    [
        ({"role": "assistant", "content": None}, "field 'content' is null; expected a string"),
        ({"role": "assistant"}, "missing field 'content'"),
    ],
)
def test_null_and_missing_are_told_apart_inside_turns(tmp_path, turn, message):
    good = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    bad = {"messages": [{"role": "user", "content": "Hi"}, turn]}
    path = write_jsonl(tmp_path / "chat.jsonl", [good, bad])
    with pytest.raises(DataError) as error:
        ChatData(str(path), tokenizer=build_tiny_tokenizer()).prepare_data()
    assert str(error.value) == f"{path}:2, turn 1: {message}"


def test_null_in_preference_records(tmp_path):
    good = {"prompt": "Hi", "chosen": "hello", "rejected": "no"}
    path = write_jsonl(tmp_path / "pairs.jsonl", [good, {"prompt": "Hi", "chosen": None, "rejected": "no"}])
    with pytest.raises(DataError) as error:
        PreferenceData(str(path), tokenizer=build_tiny_tokenizer()).prepare_data()
    assert str(error.value) == f"{path}:2: field 'chosen' is null"


# 5. Option ranges


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_length": -5}, "data.max_length must be a positive integer, got -5"),
        ({"max_length": 0}, "data.max_length must be a positive integer, got 0"),
        ({"max_length": 2.5}, "data.max_length must be a positive integer, got 2.5"),
        ({"batch_size": 0}, "data.batch_size must be a positive integer, got 0"),
        ({"eval_batch_size": -1}, "data.eval_batch_size must be a positive integer, got -1"),
        ({"num_workers": -1}, "data.num_workers must be an integer of 0 or more, got -1"),
        (
            {"val_fraction": 1.0},
            "data.val_fraction must be at least 0 and below 1 (the share of train held out), got 1.0",
        ),
        (
            {"val_fraction": -0.1},
            "data.val_fraction must be at least 0 and below 1 (the share of train held out), got -0.1",
        ),
    ],
)
def test_out_of_range_options_are_refused_at_construction(options, message):
    for module in (InstructionData, TextData, PreferenceData):
        with pytest.raises(UsageError) as error:
            module("unused.jsonl", **options)
        assert str(error.value) == message


def test_max_prompt_length_must_be_positive():
    with pytest.raises(UsageError) as error:
        PreferenceData("unused.jsonl", max_prompt_length=0)
    assert str(error.value) == "data.max_prompt_length must be a positive integer, got 0"


# 6. Directories of shards


def test_a_directory_of_jsonl_shards_loads_in_sorted_name_order(tmp_path):
    (tmp_path / "shards").mkdir()
    write_jsonl(tmp_path / "shards" / "part-10.jsonl", [{"text": "c"}])
    write_jsonl(tmp_path / "shards" / "part-01.jsonl", [{"text": "a"}, {"text": "b"}])
    assert load_records(str(tmp_path / "shards"))["text"] == ["a", "b", "c"]
    places = [where for _, where, _ in iter_records(str(tmp_path / "shards"))]
    shards = tmp_path / "shards"
    assert places == [f"{shards / 'part-01.jsonl'}:1", f"{shards / 'part-01.jsonl'}:2", f"{shards / 'part-10.jsonl'}:1"]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            ["a.jsonl", "b.parquet"],
            "holds files of several types (.jsonl: a.jsonl; .parquet: b.parquet); keep one type per directory",
        ),
        (
            ["a.jsonl", "notes.md"],
            "holds files of unsupported types (.md: notes.md); a data directory holds files of one type: .jsonl, "
            ".json, .parquet, .csv, .txt",
        ),
        (
            ["a.jsonl", "b.txt"],
            "holds files of several types (.jsonl: a.jsonl; .txt: b.txt); keep one type per directory",
        ),
        ([], "empty directory; put data files of one type (.jsonl, .json, .parquet, .csv, .txt) in it"),
    ],
)
def test_directories_that_are_not_one_type_of_shard_are_refused(tmp_path, files, message):
    directory = tmp_path / "data"
    directory.mkdir()
    for name in files:
        (directory / name).write_text('{"text": "a"}\n')
    with pytest.raises(DataError) as error:
        load_records(str(directory))
    assert str(error.value) == f"{directory}: {message}"
