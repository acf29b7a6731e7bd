"""Generated malformed and unusual input files for every command that reads records (fit and validate through the
data modules, eval, score's pairs, and the data tools): each file either gives records to work on, or stops with a
`UserError` that names the file. Never another exception, never a run over zero records, never a partial output in
place of a good one."""

from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from lightning_ft.data import ChatData, InstructionData, PreferenceData
from lightning_ft.errors import UserError
from lightning_ft.eval.items import load_items
from lightning_ft.prep.clean import clean
from lightning_ft.prep.stats import stats
from tests.conftest import build_tiny_tokenizer

FIELDS = ["instruction", "input", "output", "messages", "conversations", "prompt", "chosen", "rejected", "question"]
KEYS = [*FIELDS, "role", "content"]
FUZZ = settings(
    max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(FIELDS + ["role", "content"]), children, max_size=3)
    ),
    max_leaves=8,
)
turns = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", "tool", "bot", ""]), "content": st.text(max_size=40)}
    ),
    max_size=4,
)
realistic = st.fixed_dictionaries(
    {},
    optional={
        "instruction": st.text(max_size=60) | json_values,
        "input": st.text(max_size=20),
        "output": st.text(max_size=2000) | json_values,
        "messages": turns | json_values,
        "prompt": st.text(max_size=40),
        "chosen": st.text(max_size=40) | turns,
        "rejected": st.text(max_size=40) | turns,
        "question": st.text(max_size=40),
    },
)
odd_records = realistic | st.dictionaries(st.text(max_size=8), json_values, max_size=3)
words = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=80)  # any script, emoji, controls
GOOD = {
    "instruction": st.fixed_dictionaries({"instruction": words, "output": words}, optional={"input": words}),
    "chat": st.fixed_dictionaries(
        {
            "messages": st.tuples(words, words).map(
                lambda pair: [{"role": r, "content": c} for r, c in zip(["user", "assistant"], pair, strict=True)]
            )
        }
    ),
    "preference": st.fixed_dictionaries({"prompt": words, "chosen": words, "rejected": words}),
}


@st.composite
def file_bytes(draw: st.DrawFn, kind: str = "instruction") -> bytes:
    """A JSONL file as a user might have it: records of ``kind`` in any script, sometimes odd records or broken
    lines among them, a BOM or another encoding, blank lines, or cut off anywhere."""
    rows = draw(st.lists(GOOD[kind], min_size=1, max_size=6))
    if draw(st.integers(0, 3)) == 0:
        rows.insert(draw(st.integers(0, len(rows))), draw(odd_records))
    lines = [json.dumps(row, ensure_ascii=draw(st.booleans())) for row in rows]
    if draw(st.integers(0, 3)) == 0:
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(["", "   ", "{", "[1, 2]", "null", "{}x"])))
    text = "\n".join(lines) + draw(st.sampled_from(["\n", "", "\n\n"]))
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-8-sig", "latin-1", "utf-16"]))
    content = text.encode(encoding, errors="replace")
    if draw(st.integers(0, 3)) == 0:
        content = content[: draw(st.integers(len(content) // 2, len(content)))]
    return content


def expect_records_or_a_named_error(path: Path, read: Any) -> Any:
    """``read()``'s result, or ``None`` after a `UserError` that names ``path``; anything else fails the test."""
    try:
        result = read()
    except UserError as error:
        assert path.name in str(error), f"the error does not name the file: {error}"
        outcome(f"refused: {type(error).__name__}")
        return None
    outcome("read")
    return result


def outcome(label: str) -> None:
    """Counted in --hypothesis-show-statistics: how many generated files were read and how many refused."""
    if currently_in_test_context():
        event(label)


def write(directory: Path, content: bytes, name: str = "data.jsonl") -> Path:
    path = directory / name
    path.write_bytes(content)
    return path


def prepared(data: Any) -> Any:
    data.prepare_data()
    data.setup("fit")
    return data


@pytest.mark.parametrize(
    ("module", "kind"), [(InstructionData, "instruction"), (ChatData, "chat"), (PreferenceData, "preference")]
)
@FUZZ
@given(data=st.data())
def test_training_data(module, kind, data, tmp_path_factory):
    content = data.draw(file_bytes(kind))
    path = write(tmp_path_factory.mktemp("fuzz"), content)
    data = expect_records_or_a_named_error(
        path, lambda: prepared(module(str(path), tokenizer=build_tiny_tokenizer(), max_length=64, val_fraction=0))
    )
    if data is not None:
        assert len(data.datasets["train"]) > 0


@FUZZ
@given(content=file_bytes())
def test_eval_items(content, tmp_path_factory):
    path = write(tmp_path_factory.mktemp("fuzz"), content)
    items = expect_records_or_a_named_error(path, lambda: load_items(str(path)))
    if items is not None:
        assert len(items) > 0


@FUZZ
@given(content=file_bytes())
def test_data_stats(content, tmp_path_factory):
    directory = tmp_path_factory.mktemp("fuzz")
    path = write(directory, content)
    report = expect_records_or_a_named_error(path, lambda: stats(str(path), report=str(directory / "report.json")))
    if report is not None:
        assert report["records"] > 0


@FUZZ
@given(content=file_bytes())
def test_data_clean_never_replaces_a_good_output_with_a_partial_one(content, tmp_path_factory):
    directory = tmp_path_factory.mktemp("fuzz")
    path = write(directory, content)
    output = directory / "clean.jsonl"
    previous = '{"instruction": "an earlier good output", "output": "kept"}\n'
    output.write_text(previous)
    result = expect_records_or_a_named_error(path, lambda: clean(str(path), str(output), near_dedup=False))
    if result is None:
        assert output.read_text() == previous
    else:
        assert output.read_text() != previous
        assert sorted(p.name for p in directory.iterdir() if p.name.startswith(".")) == []  # no temporary left


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\n\n",
        codecs.BOM_UTF8,
        b"\xff\xfe",
        b'{"instruction": "x", "output": "' + b"y" * 2_000_000 + b'"}\n',
        b'{"instruction": 3, "output": ["a"]}\n',
        b'{"instruction": "caf\xe9", "output": "x"}\n',
    ],
    ids=["empty", "blank-lines", "bom-only", "utf16-bom-only", "huge-field", "wrong-types", "latin-1"],
)
def test_known_shapes_through_training_data(content, tmp_path):
    path = write(tmp_path, content)
    data = expect_records_or_a_named_error(
        path, lambda: prepared(InstructionData(str(path), tokenizer=build_tiny_tokenizer(), max_length=64))
    )
    if data is not None:
        assert len(data.datasets["train"]) > 0
