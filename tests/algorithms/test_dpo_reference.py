"""DPO's precomputed reference: float32 values looked up by record (never rounded by the training precision), scored
under the training precision, keyed on the reference's weights, and available in `fit` and `validate` in any order
of runs and for every reference kind (adapter disabled, frozen copy)."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_ft.algorithms import DPO
from lightning_ft.data import PreferenceData
from lightning_ft.model.spec import ModelSpec
from tests.conftest import build_tiny_llama, build_tiny_tokenizer
from tests.helpers import PAIRS, adamw, build_dpo, dpo_lora, dpo_trainer, pair_file, quiet_trainer

PEFTS = pytest.mark.parametrize("peft", [dpo_lora(), None], ids=["adapter-disabled", "frozen-copy"])


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))


def live_reference_logps(model_dir, tmp_path, peft) -> torch.Tensor:
    """``(2B,)`` the live reference of the validation batch (all pairs, file order)."""
    module, data = build_dpo(model_dir, tmp_path, peft=peft)
    module.configure_model()
    data.prepare_data()
    data.setup("fit")
    return module._reference_logps(next(iter(data.val_dataloader())), ("chosen_", "rejected_"))


def table_values(module: DPO, split: str = "val") -> torch.Tensor:
    table, _ = module.reference_logps_table[split]
    return torch.cat([table[: len(PAIRS), 0], table[: len(PAIRS), 1]]).cpu()


@PEFTS
def test_precomputed_reference_logps_equal_live_ones(tiny_model_dir, tmp_path, peft):
    live = live_reference_logps(tiny_model_dir, tmp_path, peft)
    module, data = build_dpo(tiny_model_dir, tmp_path, peft=peft, precompute_reference_logps=True)
    dpo_trainer(1).fit(module, datamodule=data)
    assert module.reference_model is None  # nothing kept in memory for the reference
    assert table_values(module).dtype == torch.float32
    torch.testing.assert_close(table_values(module), live, atol=1e-5, rtol=0)
    batch = next(iter(data.train_dataloader()))
    assert not any(name.startswith("reference_") for name in batch)  # the values never ride in a batch


@PEFTS
def test_under_bf16_true_the_start_is_exactly_policy_equals_reference(tiny_model_dir, tmp_path, peft):
    """At the start the policy is its reference, so the loss is ln 2 and the margin 0, provided the precomputed values
    are neither rounded to bf16 by the batch transfer (the policy's log-probs are float32 sums) nor scored in another
    precision than the policy (a full fine-tune's temporary copy was float32)."""
    module, data = build_dpo(tiny_model_dir, tmp_path, peft=peft, precompute_reference_logps=True)
    bf16 = quiet_trainer(max_steps=1, precision="bf16-true", num_sanity_val_steps=0, limit_val_batches=1)
    metrics = bf16.validate(module, datamodule=data, verbose=False)[0]
    assert metrics["val/rewards/margin"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["val/loss"] == pytest.approx(math.log(2), abs=1e-6)
    sums = table_values(module)
    assert not torch.equal(sums, sums.bfloat16().float())  # values a bf16 batch would have rounded


def test_an_overwritten_reference_is_scored_again(tmp_path):
    """The cache key covers the weights: re-exporting to the same folder must not reuse the old log-probs."""
    model_dir = tmp_path / "model"
    tokenizer = build_tiny_tokenizer()
    tokenizer.save_pretrained(model_dir)
    tables = []
    for seed in (0, 1):
        build_tiny_llama(len(tokenizer), seed=seed).save_pretrained(model_dir)
        module, data = build_dpo(model_dir, tmp_path, peft=dpo_lora(), precompute_reference_logps=True)
        dpo_trainer(1).validate(module, datamodule=data, verbose=False)
        tables.append(table_values(module))
        torch.testing.assert_close(tables[-1], live_reference_logps(model_dir, tmp_path, dpo_lora()), atol=1e-5, rtol=0)
    assert not torch.allclose(tables[0], tables[1])


def test_full_fine_tuning_with_precomputed_reference_validates_and_fits_in_any_order(tiny_model_dir, tmp_path):
    """No frozen copy is kept: `validate` alone, then `fit` with a cosine schedule over epochs (which builds the
    training loader before fit starts), then `validate` again, all score against the precomputed reference."""
    spec = ModelSpec(path=str(tiny_model_dir))
    module = DPO(spec, optimizer=adamw(0.0), lr_scheduler="cosine", precompute_reference_logps=True)
    train = pair_file(tmp_path)
    data = PreferenceData(train, val=train, tokenizer=module.tokenizer, batch_size=2, max_length=64)
    first = quiet_trainer(max_epochs=1).validate(module, datamodule=data, verbose=False)[0]
    assert first["val/loss"] == pytest.approx(math.log(2), abs=1e-6)
    quiet_trainer(max_epochs=1, num_sanity_val_steps=0).fit(module, datamodule=data)
    assert module.reference_model is None
    again = quiet_trainer(max_epochs=1).validate(module, datamodule=data, verbose=False)[0]
    assert again["val/loss"] == pytest.approx(math.log(2), abs=1e-6)  # learning rate 0: still the reference
