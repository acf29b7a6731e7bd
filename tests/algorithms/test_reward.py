"""The reward model on tiny backbones (a causal LM with LoRA, a BERT-style encoder): training separates chosen from
rejected, the export reloads with AutoModelForSequenceClassification to the same rewards, and `score_pairs` reads it."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from peft import LoraConfig
from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification, BertTokenizer

from lightning_ft.algorithms import RewardModel
from lightning_ft.data import PreferenceData
from lightning_ft.eval import score_pairs
from lightning_ft.model.spec import ModelSpec
from tests.helpers import PAIRS, adamw, pair_file, quiet_trainer

WORDS = "user assistant : what is the capital of france ? paris . no say hello world goodbye write a haiku about"
WORDS += " autumn leaves falling on quiet pond and convert 3 kilometres to metres 3000"


@pytest.fixture(scope="module")
def tiny_encoder_dir(tmp_path_factory: pytest.TempPathFactory):
    """A tiny random BERT sequence classifier with a WordPiece tokenizer (adds [CLS] ... [SEP], no chat template)."""
    directory = tmp_path_factory.mktemp("tiny-bert")
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *dict.fromkeys(WORDS.split())]
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(tokens)})
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokens), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    )
    BertForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def fit_reward_model(module: RewardModel, data: PreferenceData, steps: int, root) -> L.Trainer:
    trainer = quiet_trainer(max_steps=steps, num_sanity_val_steps=0, default_root_dir=root)
    trainer.fit(module, datamodule=data)
    return trainer


@torch.no_grad()
def rewards_of(model, batch) -> torch.Tensor:
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)


@pytest.mark.parametrize("backbone", ["causal-lm-lora", "encoder-full"])
def test_reward_model_learns_pairs_and_exports_a_sequence_classifier(
    backbone, tiny_model_dir, tiny_encoder_dir, tmp_path, monkeypatch
):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    if backbone == "causal-lm-lora":
        spec = ModelSpec(path=str(tiny_model_dir))
        module = RewardModel(spec, peft=LoraConfig(r=8, target_modules="all-linear"), optimizer=adamw(2e-2))
        special = False
    else:
        spec = ModelSpec(path=str(tiny_encoder_dir), chat_template="plain")
        module = RewardModel(spec, optimizer=adamw(1e-3))
        special = True
    train = pair_file(tmp_path)
    data = PreferenceData(
        train, val=train, tokenizer=module.tokenizer, batch_size=len(PAIRS), max_length=64, add_special_tokens=special
    )
    quiet_trainer().validate(module, datamodule=data)
    trainer = fit_reward_model(module, data, steps=30, root=tmp_path)  # validating first must not break fit
    metrics = trainer.validate(module, datamodule=data, verbose=False)[0]
    assert metrics["val/accuracy"] == 1.0 and metrics["val/margin"] > 0

    export = module.export(tmp_path / "export")
    manifest = json.loads((export / "lightning_ft.json").read_text())
    assert manifest["kind"] == "full" and manifest["task"] == "reward"
    assert manifest["add_special_tokens"] is special
    reloaded = AutoModelForSequenceClassification.from_pretrained(export).eval()
    batch = next(iter(data.val_dataloader()))
    module.model.eval()
    torch.testing.assert_close(rewards_of(reloaded, batch), rewards_of(module.model, batch), atol=1e-5, rtol=1e-5)
    if special:  # [CLS] first, [SEP] last: the pooled token is the encoder's own
        first = batch["input_ids"][:, 0]
        assert (first == module.tokenizer.cls_token_id).all()

    summary = score_pairs(export, train, output=tmp_path / "scores.jsonl")
    assert summary["pairs"] == len(PAIRS) and summary["accuracy"] == 1.0 and summary["dropped"] == 0
    lines = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert [line["record"] for line in lines] == list(range(len(PAIRS)))
    expected = rewards_of(reloaded, batch)
    assert [line["chosen"] for line in lines] == pytest.approx(expected[: len(PAIRS)].tolist(), abs=1e-5)


def test_margin_field_reaches_the_loss(tiny_model_dir, tmp_path, monkeypatch):
    """With a margin m the Bradley-Terry loss at equal rewards is -log σ(-m), not log 2."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    records = [{"prompt": p, "chosen": c, "rejected": r, "gap": 2.0} for p, c, r in PAIRS]
    path = tmp_path / "margin.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    module = RewardModel(ModelSpec(path=str(tiny_model_dir)))
    module.configure_model()
    torch.nn.init.zeros_(module.model.score.weight)  # every reward 0
    data = PreferenceData(str(path), margin_field="gap", tokenizer=module.tokenizer, batch_size=len(PAIRS))
    data.prepare_data()
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch["margin"].tolist() == [2.0] * len(PAIRS)
    losses, chosen, rejected = module.pair_losses(batch)
    expected = -torch.nn.functional.logsigmoid(torch.tensor(-2.0))
    torch.testing.assert_close(losses, expected.expand(len(PAIRS)))
