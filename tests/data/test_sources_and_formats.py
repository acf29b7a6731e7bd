"""Reading files and adapting record formats; every bad input names the file and line, or the record and field."""

from __future__ import annotations

import pytest

from lightning_ft.data.formats import (
    CHAT_FIELDS,
    INSTRUCTION_FIELDS,
    chat_to_messages,
    field_names,
    instruction_to_messages,
)
from lightning_ft.data.sources import DataError, load_records
from tests.conftest import shared_data
from tests.helpers import write_jsonl


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", ['{"a": 1}', "", '{"a": 2,}', '{"a": 3}'])
    with pytest.raises(DataError, match=r"bad\.jsonl:3: malformed JSON"):
        load_records(str(path))


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = write_lines(tmp_path / "list.jsonl", ['{"a": 1}', "[1, 2]"])
    with pytest.raises(DataError, match=r"list\.jsonl:2: expected a JSON object, got list"):
        load_records(str(path))


def test_malformed_json_array_names_the_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n {"a": 1},\n {"a": }\n]')
    with pytest.raises(DataError, match=r"bad\.json:3: malformed JSON"):
        load_records(str(path))


def test_missing_empty_and_unsupported_files(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_records(str(tmp_path / "absent.jsonl"))
    with pytest.raises(DataError, match="no records"):
        load_records(str(write_lines(tmp_path / "empty.jsonl", [""])))
    (tmp_path / "data.xml").write_text("<a/>")
    with pytest.raises(DataError, match=r"unsupported file type '\.xml'.*\.csv.*\.txt"):
        load_records(str(tmp_path / "data.xml"))


def test_a_text_file_is_one_document_and_a_directory_its_sorted_shards(tmp_path):
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "b.txt").write_text("second file\n\nstill the second")
    (tmp_path / "texts" / "a.txt").write_text("first file\n")
    assert load_records(str(tmp_path / "texts"))["text"] == ["first file\n", "second file\n\nstill the second"]
    (tmp_path / "shards").mkdir()
    write_jsonl(tmp_path / "shards" / "part-1.jsonl", [{"text": "c"}])
    write_jsonl(tmp_path / "shards" / "part-0.jsonl", [{"text": "a"}, {"text": "b"}])
    assert load_records(str(tmp_path / "shards"))["text"] == ["a", "b", "c"]
    streamed = load_records(str(tmp_path / "shards"), streaming=True)
    assert [record["text"] for record in streamed] == ["a", "b", "c"]
    (tmp_path / "shards" / "extra.csv").write_text("text\nd\n")
    with pytest.raises(DataError, match=r"several types \(\.csv: extra\.csv; \.jsonl: part-0\.jsonl, part-1\.jsonl\)"):
        load_records(str(tmp_path / "shards"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty directory"):
        load_records(str(tmp_path / "empty"))


def test_csv_and_parquet_load_the_same_records(tmp_path):
    records = [{"instruction": "a", "output": "b"}, {"instruction": "c", "output": "d"}]
    write_jsonl(tmp_path / "d.jsonl", records)
    jsonl = load_records(str(tmp_path / "d.jsonl"))
    jsonl.to_csv(str(tmp_path / "d.csv"))
    jsonl.to_parquet(str(tmp_path / "d.parquet"))
    for suffix in ("csv", "parquet"):
        assert load_records(str(tmp_path / f"d.{suffix}")).to_list() == records


ALPACA = INSTRUCTION_FIELDS["alpaca"]


def test_alpaca_input_follows_the_instruction_after_a_blank_line():
    record = {"instruction": "Translate.", "input": "Bonjour", "output": "Hello", "system": "Be terse."}
    assert instruction_to_messages(record, ALPACA, "r") == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Translate.\n\nBonjour"},
        {"role": "assistant", "content": "Hello"},
    ]
    assert instruction_to_messages({"instruction": "Hi", "input": "  ", "output": "Yo"}, ALPACA, "r")[0] == {
        "role": "user",
        "content": "Hi",
    }


def test_dolly_context_and_response():
    fields = INSTRUCTION_FIELDS["dolly"]
    record = {"instruction": "Summarise.", "context": "Long text.", "response": "Short."}
    assert instruction_to_messages(record, fields, "r")[-2:] == [
        {"role": "user", "content": "Summarise.\n\nLong text."},
        {"role": "assistant", "content": "Short."},
    ]


def test_missing_and_mistyped_fields_name_field_and_record():
    with pytest.raises(DataError, match=r"train\.jsonl: record 7: missing field 'output'"):
        instruction_to_messages({"instruction": "x"}, ALPACA, "train.jsonl: record 7")
    with pytest.raises(DataError, match=r"record 2: field 'output' must be a string, got list"):
        instruction_to_messages({"instruction": "x", "output": ["y"]}, ALPACA, "record 2")
    with pytest.raises(DataError, match="looks like chat data"):
        instruction_to_messages({"messages": []}, ALPACA, "record 0")


def test_sharegpt_roles_and_system_field():
    fields = CHAT_FIELDS["sharegpt"]
    record = {"system": "S", "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}
    assert chat_to_messages(record, fields, "r") == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "A"},
    ]


def test_chat_errors_name_record_turn_and_valid_roles():
    fields = CHAT_FIELDS["messages"]
    with pytest.raises(DataError, match=r"record 3, turn 1: unknown role 'bot'; valid roles: \['assistant'"):
        chat_to_messages(
            {"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]}, fields, "record 3"
        )
    with pytest.raises(DataError, match="record 4, turn 0: missing field 'content'"):
        chat_to_messages({"messages": [{"role": "user"}]}, fields, "record 4")
    with pytest.raises(DataError, match="record 5: the conversation has no assistant turn"):
        chat_to_messages({"messages": [{"role": "user", "content": "a"}]}, fields, "record 5")
    with pytest.raises(DataError, match="record 6: missing field 'messages'"):
        chat_to_messages({"text": "a"}, fields, "record 6")


def test_unknown_format_and_field_keys_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown format 'oasst'; valid: messages, sharegpt"):
        field_names(CHAT_FIELDS, "oasst", None)
    with pytest.raises(
        ValueError,
        match=r"Unknown field keys for format 'alpaca' \['answer'\]; valid: input, instruction, output, system",
    ):
        field_names(INSTRUCTION_FIELDS, "alpaca", {"answer": "output"})
    assert field_names(INSTRUCTION_FIELDS, "alpaca", {"output": "answer"})["output"] == "answer"


@pytest.mark.parametrize(
    ("relative", "convert", "fields"),
    [
        ("sft_alpaca/alpaca_gpt4_en_demo.jsonl", instruction_to_messages, INSTRUCTION_FIELDS["alpaca"]),
        ("sft_alpaca/dolly15k_subset121.jsonl", instruction_to_messages, INSTRUCTION_FIELDS["dolly"]),
        ("chat/oasst_en100_messages.jsonl", chat_to_messages, CHAT_FIELDS["messages"]),
        ("chat/fastchat_dummy_conversation.jsonl", chat_to_messages, CHAT_FIELDS["sharegpt"]),
        ("chat/sharegpt_dialogstudio_5.jsonl", chat_to_messages, CHAT_FIELDS["sharegpt"]),
    ],
)
def test_real_datasets_convert_every_record(relative, convert, fields):
    records = load_records(str(shared_data(relative)))
    for index, record in enumerate(records):
        messages = convert(record, fields, f"record {index}")
        assert messages[-1]["role"] in ("assistant", "user", "tool")
        assert any(m["role"] == "assistant" for m in messages)
