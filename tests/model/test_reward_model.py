"""`load_reward_model`, the one loading of a reward model for scoring (`score_pairs`, `RewardModelScorer`): the pad
token, the input settings from the manifest or their defaults, and the checks that it is a reward model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from lightning_ft.model.export import MANIFEST_NAME
from lightning_ft.model.reward_model import load_reward_model
from tests.conftest import build_tiny_tokenizer


def write_classifier(directory: Path, num_labels: int = 1, model_max_length: int | None = None) -> Path:
    """A tiny one-output Llama classifier whose tokenizer has no pad token (eos id 2)."""
    tokenizer = build_tiny_tokenizer()
    tokenizer.pad_token = None
    if model_max_length is not None:
        tokenizer.model_max_length = model_max_length
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_labels=num_labels,
    )
    LlamaForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_classifier(tmp_path_factory.mktemp("classifier"))


def with_manifest(source: Path, target: Path, manifest: dict) -> Path:
    shutil.copytree(source, target)
    (target / MANIFEST_NAME).write_text(json.dumps(manifest))
    return target


def test_pad_token_is_eos_and_the_model_is_frozen_for_scoring(classifier_dir):
    model, tokenizer, _, _ = load_reward_model(classifier_dir)
    assert tokenizer.pad_token == "<|im_end|>" and tokenizer.pad_token_id == tokenizer.eos_token_id == 2
    assert model.config.pad_token_id == 2  # the classifier finds each row's last token by it
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_without_manifest_inputs_are_at_most_1024_tokens_and_plain(classifier_dir, tmp_path):
    assert load_reward_model(classifier_dir)[2:] == (1024, False)
    assert load_reward_model(classifier_dir, max_length=100, add_special_tokens=True)[2:] == (100, True)
    short = write_classifier(tmp_path / "short", model_max_length=512)
    assert load_reward_model(short)[2:] == (512, False)  # within the model's own limit


def test_manifest_settings_apply_unless_given(classifier_dir, tmp_path):
    export = with_manifest(
        classifier_dir,
        tmp_path / "export",
        {"kind": "full", "task": "reward", "max_length": 64, "add_special_tokens": True},
    )
    assert load_reward_model(export)[2:] == (64, True)
    assert load_reward_model(export, max_length=32, add_special_tokens=False)[2:] == (32, False)


def test_other_exports_and_multi_output_classifiers_are_refused(classifier_dir, tmp_path):
    sft_export = with_manifest(classifier_dir, tmp_path / "sft", {"kind": "full", "task": "sft"})
    with pytest.raises(ValueError, match="is a 'sft' export, not a reward model"):
        load_reward_model(sft_export)
    two_outputs = write_classifier(tmp_path / "two", num_labels=2)
    with pytest.raises(ValueError, match="has 2 outputs; a reward model has one"):
        load_reward_model(two_outputs)
