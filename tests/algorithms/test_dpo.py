"""The DPO module on a tiny Llama: each loss type's value at the start (policy = reference), learning raises the
reward accuracy, references (adapter disabled, frozen copy, precomputed) agree, and bad options are refused."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_ft.algorithms import DPO
from lightning_ft.data import PreferenceData
from lightning_ft.model.spec import ModelSpec
from tests.helpers import (
    PAIRS,
    adamw,
    build_dpo,
    dpo_lora,
    dpo_trainer,
    kto_file,
    pair_file,
    quiet_trainer,
)


def validate(module, data) -> dict[str, float]:
    return {
        name: float(value) for name, value in dpo_trainer(1).validate(module, datamodule=data, verbose=False)[0].items()
    }


@pytest.mark.parametrize(
    ("loss_type", "expected"),
    [
        ("sigmoid", math.log(2)),  # -log σ(0)
        ("robust", math.log(2)),  # ε = 0: as sigmoid
        ("hinge", 1.0),  # max(0, 1 - 0)
        ("ipo", (1 / (2 * 0.1)) ** 2),  # (0 - 1/(2β))² = 25
        ("kto", 0.5),  # 1 - σ(β(0 - 0)) for every example
    ],
)
def test_loss_at_start_equals_its_closed_form(tiny_model_dir, tmp_path, loss_type, expected):
    """Before training, policy = reference (dropout off), so the margin is 0 and every reward is 0."""
    module, data = build_dpo(tiny_model_dir, tmp_path, peft=dpo_lora(), loss_type=loss_type)
    metrics = validate(module, data)
    assert metrics["val/loss"] == pytest.approx(expected, abs=1e-5)
    if loss_type != "kto":
        assert metrics["val/rewards/chosen"] == pytest.approx(0.0, abs=1e-6)
        assert metrics["val/rewards/margin"] == pytest.approx(0.0, abs=1e-6)
    else:
        assert metrics["val/kl"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    ("peft", "loss_type", "packing"),
    [
        (dpo_lora(), "sigmoid", False),
        (dpo_lora(), "sigmoid", True),
        (None, "sigmoid", False),
        (dpo_lora(), "ipo", False),
        (dpo_lora(), "simpo", False),
        (dpo_lora(), "orpo", False),
        (dpo_lora(), "kto", False),
    ],
    ids=["lora-dpo", "lora-dpo-packed", "full-dpo", "ipo", "simpo", "orpo", "kto"],
)
def test_training_raises_reward_accuracy_on_the_training_pairs(tiny_model_dir, tmp_path, peft, loss_type, packing):
    lr = 2e-2 if peft else 2e-3
    module, data = build_dpo(tiny_model_dir, tmp_path, peft=peft, loss_type=loss_type, lr=lr, packing=packing)
    before = validate(module, data)
    dpo_trainer(15).fit(module, datamodule=data)
    after = validate(module, data)
    assert after["val/loss"] < before["val/loss"]
    if loss_type == "kto":
        assert after["val/rewards/desirable"] > 0 > after["val/rewards/undesirable"]
    else:
        if loss_type not in ("simpo", "orpo"):  # with a reference, rewards start at 0: no pair is won yet
            assert before["val/rewards/accuracy"] == 0.0
        assert after["val/rewards/accuracy"] == 1.0
        assert after["val/rewards/margin"] > before["val/rewards/margin"]


def test_kto_rewards_are_weighted_by_their_own_counts_and_logged_by_every_batch(tiny_model_dir, tmp_path, monkeypatch):
    """Validation in batches of 3 over the 4 desirable, then 4 undesirable examples: [D D D], [D U U], [U U]. A
    stand-in loss gives the examples rewards 1 .. 8 in order, so the epoch's desirable reward is the mean of its 4
    examples, (1 + 2 + 3 + 4) / 4 = 2.5 (weighting batch means by batch size gives (2·3 + 4·3) / 6 = 3), and the
    undesirable one (5 + 6 + 7 + 8) / 4 = 6.5 (not (5.5·3 + 7.5·2) / 5 = 6.3). Every batch logs the same keys,
    examples of a kind or not, so under DDP every device enters the same collectives when the epoch's means are
    synced."""
    module = DPO(ModelSpec(path=str(tiny_model_dir)), peft=dpo_lora(), loss_type="kto", optimizer=adamw(1e-2))
    train = kto_file(tmp_path)
    data = PreferenceData(train, val=train, format="kto", tokenizer=module.tokenizer, batch_size=3, max_length=64)
    seen = [0]

    def stand_in_kto_loss(policy, reference, desirable, *args):
        rewards = torch.arange(seen[0] + 1, seen[0] + 1 + len(policy), dtype=torch.float32)
        seen[0] += len(policy)
        return torch.zeros_like(policy), rewards

    monkeypatch.setattr("lightning_ft.algorithms.dpo.kto_loss", stand_in_kto_loss)
    logged: list[tuple[str, int | None]] = []
    log = module.log

    def recording_log(name, value, **options):
        logged.append((name, options.get("batch_size")))
        log(name, value, **options)

    monkeypatch.setattr(module, "log", recording_log)
    metrics = quiet_trainer(num_sanity_val_steps=0).validate(module, datamodule=data, verbose=False)[0]
    assert seen[0] == 8
    assert float(metrics["val/rewards/desirable"]) == pytest.approx(2.5)
    assert float(metrics["val/rewards/undesirable"]) == pytest.approx(6.5)
    batches = [index for index, (name, _) in enumerate(logged) if name == "val/loss"] + [len(logged)]
    per_batch = [dict(logged[start:end]) for start, end in zip(batches, batches[1:], strict=False)]
    assert len(per_batch) == 3
    assert all(batch.keys() == per_batch[0].keys() for batch in per_batch)
    assert [batch["val/rewards/desirable"] for batch in per_batch] == [3, 1, 0]
    assert [batch["val/rewards/undesirable"] for batch in per_batch] == [0, 2, 2]


def test_options_that_do_not_apply_are_refused(tiny_model_dir):
    spec = ModelSpec(path=str(tiny_model_dir))
    with pytest.raises(ValueError, match="valid: sigmoid, robust, hinge, ipo, simpo, orpo, kto"):
        DPO(spec, loss_type="nope")
    with pytest.raises(ValueError, match="label_smoothing does not apply to loss_type 'hinge'"):
        DPO(spec, loss_type="hinge", label_smoothing=0.1)
    with pytest.raises(ValueError, match="gamma_beta_ratio does not apply"):
        DPO(spec, loss_type="sigmoid", gamma_beta_ratio=1.0)


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_packed_pairs_give_the_padded_log_probs(tiny_model_dir, tmp_path, attn_implementation):
    """Packing the 2B sequences of a batch into one row (block-diagonal attention) changes no log-prob."""
    spec = ModelSpec(path=str(tiny_model_dir), attn_implementation=attn_implementation)
    module = DPO(spec, peft=dpo_lora())
    module.configure_model()
    module.model.eval()
    train = pair_file(tmp_path)
    logps = {}
    for packing in (False, True):
        data = PreferenceData(train, tokenizer=module.tokenizer, batch_size=len(PAIRS), packing=packing)
        data.prepare_data()
        data.setup("fit")
        batch = next(iter(data.predict_dataloader()))
        assert batch["input_ids"].shape[0] == (1 if packing else 2 * len(PAIRS))
        with torch.no_grad():
            logps[packing] = module._sequence_logps(module.model, batch)
    torch.testing.assert_close(logps[True][0], logps[False][0], atol=1e-5, rtol=1e-6)  # sums near 100: fp32 rounding
    assert logps[True][1].tolist() == logps[False][1].tolist()
