"""Full-model merges: MergeKit's methods through `merge_models`, checked tensor by tensor; tokenizer, manifest and
atomic output."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from mergekit.config import MergeConfiguration
from mergekit.merge import run_merge
from mergekit.options import MergeOptions
from transformers import AutoTokenizer

from lightning_ft.cli import main
from lightning_ft.merge import merge_models
from lightning_ft.model.export import load_export, read_manifest
from lightning_ft.model.generation import Conversation
from lightning_ft.model.sampling import sampling_options
from tests.merge.conftest import weights, write_config

CUSTOM_TEMPLATE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"


def linear(*models_and_weights) -> dict:
    return {
        "merge_method": "linear",
        "models": [{"model": str(model), "parameters": {"weight": weight}} for model, weight in models_and_weights],
    }


def test_a_model_merged_with_itself_is_itself(tiny_llamas, tmp_path):
    copy = shutil.copytree(tiny_llamas[1], tmp_path / "copy")  # MergeKit refuses one model listed twice
    config = write_config(tmp_path / "merge.yaml", linear((tiny_llamas[1], 1.0), (copy, 1.0)))
    merge_models(config, tmp_path / "out")
    merged, original = weights(tmp_path / "out"), weights(tiny_llamas[1])
    assert merged.keys() == original.keys()
    for name, tensor in original.items():
        assert torch.equal(merged[name], tensor), name


def test_linear_is_the_weighted_mean(tiny_llamas, tmp_path):
    """MergeKit's linear normalises by default: (0.3 * a + 0.9 * b) / (0.3 + 0.9), per tensor, in float32."""
    config = write_config(tmp_path / "merge.yaml", linear((tiny_llamas[1], 0.3), (tiny_llamas[2], 0.9)))
    merge_models(config, tmp_path / "out")
    merged, a, b = weights(tmp_path / "out"), weights(tiny_llamas[1]), weights(tiny_llamas[2])
    for name in a:
        torch.testing.assert_close(merged[name], (0.3 * a[name] + 0.9 * b[name]) / 1.2, rtol=1e-6, atol=1e-7)
        assert "norm" in name or not torch.allclose(merged[name], a[name])  # norms are all ones in both


@pytest.mark.parametrize("method", ["ties", "dare_ties", "dare_linear"])
def test_ties_and_dare_equal_mergekit_run_directly(method, tiny_llamas, tmp_path):
    """DARE drops parameters at random: both runs pass the same ``random_seed`` to MergeKit, whose run_merge seeds
    every generator with it before planning, so the same drops happen in both. Our run goes through the CLI."""
    base, first, second = tiny_llamas
    yaml_config = {
        "merge_method": method,
        "base_model": str(base),
        "models": [
            {"model": str(first), "parameters": {"weight": 0.7, "density": 0.5}},
            {"model": str(second), "parameters": {"weight": 0.4, "density": 0.3}},
        ],
    }
    config = write_config(tmp_path / "merge.yaml", yaml_config)
    main(["merge", str(config), str(tmp_path / "ours"), "--seed", "7"])
    reference = MergeConfiguration.model_validate(yaml_config)
    run_merge(reference, str(tmp_path / "mergekit"), MergeOptions(random_seed=7, quiet=True))
    ours, theirs, base_weights = weights(tmp_path / "ours"), weights(tmp_path / "mergekit"), weights(base)
    assert ours.keys() == theirs.keys()
    for name, tensor in theirs.items():
        assert torch.equal(ours[name], tensor), name
    assert not torch.equal(ours["model.layers.0.mlp.up_proj.weight"], base_weights["model.layers.0.mlp.up_proj.weight"])
    if method.startswith("dare"):  # the seed matters: another one drops other parameters
        run_merge(reference, str(tmp_path / "reseeded"), MergeOptions(random_seed=8, quiet=True))
        assert not torch.equal(
            weights(tmp_path / "reseeded")["model.layers.0.mlp.up_proj.weight"],
            theirs["model.layers.0.mlp.up_proj.weight"],
        )


def test_output_has_the_base_tokenizer_template_and_manifest(tiny_llamas, tmp_path):
    base = shutil.copytree(tiny_llamas[0], tmp_path / "base")
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.chat_template = CUSTOM_TEMPLATE
    tokenizer.save_pretrained(base)
    yaml_config = {**linear((tiny_llamas[1], 1.0), (tiny_llamas[2], 1.0)), "merge_method": "task_arithmetic"}
    config = write_config(tmp_path / "merge.yaml", {**yaml_config, "base_model": str(base)})
    report = merge_models(config, tmp_path / "out")

    assert (report.path, report.method) == ("full", "task_arithmetic")
    merged_tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert merged_tokenizer.chat_template == CUSTOM_TEMPLATE
    assert merged_tokenizer.get_vocab() == tokenizer.get_vocab()
    assert (tmp_path / "out" / "generation_config.json").read_text() == (base / "generation_config.json").read_text()
    manifest = read_manifest(tmp_path / "out")
    assert manifest["kind"] == "full" and manifest["base"]["path"] == str(base)
    record = manifest["merge"]
    assert (record["method"], record["path"], record["tokenizer_source"]) == ("task_arithmetic", "full", str(base))
    assert [source["model"] for source in record["sources"]] == [str(base), str(tiny_llamas[1]), str(tiny_llamas[2])]
    assert {source["kind"] for source in record["sources"]} == {"model"}

    model, loaded_tokenizer = load_export(tmp_path / "out")  # what `lightning-ft chat --model OUT` does
    reply = Conversation(model, loaded_tokenizer, None, [], sampling_options(model.generation_config, max_new_tokens=4))
    assert isinstance(reply.ask("hello"), str)


def test_base_tokenizer_names_another_source(tiny_llamas, tmp_path):
    other = shutil.copytree(tiny_llamas[2], tmp_path / "other")
    tokenizer = AutoTokenizer.from_pretrained(other)
    tokenizer.chat_template = CUSTOM_TEMPLATE
    tokenizer.save_pretrained(other)
    config = write_config(tmp_path / "merge.yaml", linear((tiny_llamas[1], 1.0), (other, 1.0)))
    main(["merge", str(config), str(tmp_path / "out"), "--base-tokenizer", str(other)])
    assert AutoTokenizer.from_pretrained(tmp_path / "out").chat_template == CUSTOM_TEMPLATE
    assert read_manifest(tmp_path / "out")["merge"]["tokenizer_source"] == str(other)


def test_a_gguf_directory_is_read_from_its_dense_copy(tiny_llamas, tmp_path, monkeypatch):
    """A directory holding one .gguf file and no config.json is a GGUF source: MergeKit reads `dense_gguf_dir`'s
    copy (stubbed here with a plain model, since converting a real GGUF takes minutes)."""
    gguf_dir = tmp_path / "gguf"
    gguf_dir.mkdir()
    (gguf_dir / "tiny.Q8_0.gguf").write_bytes(b"GGUF")
    monkeypatch.setattr("lightning_ft.merge.sources.dense_gguf_dir", lambda spec: tiny_llamas[1])
    config = write_config(tmp_path / "merge.yaml", linear((gguf_dir, 1.0), (tiny_llamas[2], 3.0)))
    merge_models(config, tmp_path / "out")
    merged, a, b = weights(tmp_path / "out"), weights(tiny_llamas[1]), weights(tiny_llamas[2])
    for name in a:
        torch.testing.assert_close(merged[name], (a[name] + 3.0 * b[name]) / 4.0, rtol=1e-6, atol=1e-7)
    record = read_manifest(tmp_path / "out")["merge"]
    assert record["sources"][0]["kind"] == "gguf" and record["sources"][0]["base"]["gguf_file"] == "tiny.Q8_0.gguf"


def test_a_failed_merge_leaves_the_previous_output_and_no_temporary_files(lora_exports, tiny_llamas, tmp_path):
    """The adapter source is materialised in a temporary sibling of the output: it is gone after success and after
    failure, and a failed merge leaves the previous good output untouched."""
    parent = tmp_path / "merges"
    config = write_config(tmp_path / "merge.yaml", linear((lora_exports[0], 1.0), (tiny_llamas[2], 1.0)))
    report = merge_models(config, parent / "out")
    assert "adapters materialised as full models" in report.reason
    assert [path.name for path in parent.iterdir()] == ["out"]
    good = weights(parent / "out")

    def interrupted(config, out_path, **kwargs):
        assert any(path.name.startswith(".out.sources-") for path in parent.iterdir())  # materialised by now
        (parent / out_path).mkdir(exist_ok=True)
        raise KeyboardInterrupt

    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr("lightning_ft.merge.full.run_merge", interrupted)
    with pytest.raises(KeyboardInterrupt):
        merge_models(config, parent / "out")
    monkeypatch.undo()
    assert [path.name for path in parent.iterdir()] == ["out"]
    for name, tensor in weights(parent / "out").items():
        assert torch.equal(tensor, good[name])
    assert json.loads((parent / "out" / "lightning_ft.json").read_text())["merge"]["path"] == "full"
