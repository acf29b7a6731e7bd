"""Generated malformed and unusual inputs of the commands that do not read records: merge configs (`merge`), search
spaces (`tune`), export manifests (`export`, `chat`, `eval`, `serve`), chat prompts (`chat`), and outputs that a
failed `export` must leave as they were. Each input works or stops with a `UserError` naming the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lightning_ft.cli import main
from lightning_ft.errors import UsageError, UserError
from lightning_ft.merge.config import read_merge_config
from lightning_ft.model import export as export_module
from lightning_ft.model.export import MANIFEST_NAME, merge_export, read_manifest
from lightning_ft.tune.space import read_space

FUZZ = settings(
    max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3),
    max_leaves=10,
)
MERGE_KEYS = ["merge_method", "models", "slices", "base_model", "parameters", "dtype", "tokenizer_source", "model"]
merge_like = st.dictionaries(
    st.sampled_from(MERGE_KEYS),
    values | st.sampled_from(["linear", "ties", "slerp", "nope"]) | st.lists(st.fixed_dictionaries({"model": values})),
    max_size=5,
)
SPACE_KEYS = ["metric", "direction", "sampler", "pruner", "seed", "model.optimizer.init_args.lr", "trainer.max_steps"]
space_like = st.dictionaries(
    st.sampled_from(SPACE_KEYS) | st.text(max_size=12),
    values
    | st.dictionaries(
        st.sampled_from(["log_uniform", "uniform", "int", "choice", "float", "bogus"]), values, max_size=2
    ),
    max_size=5,
)


@st.composite
def yaml_bytes(draw: st.DrawFn, documents: st.SearchStrategy[Any]) -> bytes:
    """A YAML file: a generated document, sometimes cut short, in another encoding or with stray bytes."""
    text = yaml.safe_dump(draw(documents), allow_unicode=draw(st.booleans()))
    content = text.encode(draw(st.sampled_from(["utf-8", "utf-8", "latin-1", "utf-16"])), errors="replace")
    if draw(st.integers(0, 3)) == 0:
        content = content[: draw(st.integers(0, len(content)))]
    if draw(st.integers(0, 5)) == 0:
        content += draw(st.binary(max_size=8))
    return content


def works_or_names(path: Path, read: Any) -> None:
    try:
        read()
    except UserError as error:
        assert path.name in str(error), f"the error does not name the file: {error}"


@FUZZ
@given(content=yaml_bytes(merge_like))
def test_merge_configs(content, tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "merge.yaml"
    path.write_bytes(content)
    works_or_names(path, lambda: read_merge_config(path))


@FUZZ
@given(content=yaml_bytes(space_like))
def test_search_spaces(content, tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "space.yaml"
    path.write_bytes(content)
    works_or_names(path, lambda: read_space(path))


@FUZZ
@given(manifest=values | st.fixed_dictionaries({"kind": values, "base": values}))
def test_export_manifests(manifest, tmp_path_factory):
    directory = tmp_path_factory.mktemp("fuzz")
    path = directory / MANIFEST_NAME
    path.write_text(json.dumps(manifest))
    works_or_names(path, lambda: read_manifest(directory))


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(prompt=st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=300))
def test_chat_answers_any_prompt(prompt, tiny_model_dir, capsys):
    """Any script, control characters, template-like text (``<|im_start|>``): a reply, never an exception."""
    main(["chat", "--model", str(tiny_model_dir), "--prompt", prompt, "--max_new_tokens", "2"])
    assert capsys.readouterr().out.strip()


def test_an_export_into_a_directory_of_other_files_is_refused(tmp_path):
    output = tmp_path / "models"
    output.mkdir()
    (output / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="exists and is not a model directory"):
        merge_export(tmp_path / "no-such-export", output)
    assert [path.name for path in output.iterdir()] == ["notes.txt"]


def test_a_failed_export_leaves_the_previous_output(tiny_model_dir, tmp_path, monkeypatch):
    output = tmp_path / "merged"
    output.mkdir()
    (output / "config.json").write_text('{"previous": true}')

    class BrokenTokenizer:
        def save_pretrained(self, directory: Path) -> None:
            raise OSError("disk full")

    model, _ = export_module.load_export(tiny_model_dir)
    monkeypatch.setattr(export_module, "load_export", lambda *args, **kwargs: (model, BrokenTokenizer()))
    with pytest.raises(OSError, match="disk full"):
        merge_export(tiny_model_dir, output)
    assert [path.name for path in output.iterdir()] == ["config.json"]
    assert (output / "config.json").read_text() == '{"previous": true}'
    assert [path.name for path in tmp_path.iterdir()] == ["merged"]  # no partial copy beside it
