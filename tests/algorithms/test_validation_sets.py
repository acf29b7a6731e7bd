"""Extra validation sets (`val_extra`, the forgetting probe): each is logged under its own name with the same
arithmetic as the main set, for SFT, DPO, KTO and reward models; bad names are refused; and Lightning's
`EarlyStopping` on a probe whose loss rises stops the run when its patience runs out."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping

from lightning_ft.algorithms import SFT, RewardModel
from lightning_ft.data import InstructionData, PromptData
from lightning_ft.data.tokenize import IGNORE_INDEX, ConversationTokenizer
from lightning_ft.model.spec import ModelSpec
from tests.helpers import (
    KTO_EXAMPLES,
    PAIRS,
    adamw,
    build_dpo,
    context_dependent,
    dpo_lora,
    dpo_trainer,
    quiet_trainer,
    write_jsonl,
)

TRAIN = [
    {"instruction": "What is the capital of France?", "output": "The capital of France is Paris."},
    {"instruction": "Say hello.", "output": "hello world"},
    {"instruction": "Convert 3 kilometres to metres.", "output": "3000 metres."},
    {"instruction": "Write a haiku about autumn.", "output": "Autumn leaves falling on a quiet pond."},
]
# The same questions with other answers of very different lengths: a mean of per-batch means would differ from the
# token-weighted mean.
FORGET = [
    {"instruction": "What is the capital of France?", "output": "No."},
    {"instruction": "Say hello.", "output": "goodbye, goodbye, goodbye, goodbye, goodbye, goodbye"},
    {"instruction": "Convert 3 kilometres to metres.", "output": "3 metres."},
]


def sft_data(module: SFT, tmp_path, **options) -> InstructionData:
    train = write_jsonl(tmp_path / "train.jsonl", TRAIN)
    defaults = {"tokenizer": module.tokenizer, "batch_size": 2, "max_length": 64, "packing": False}
    return InstructionData(str(train), **{**defaults, **options})


def forget_file(tmp_path) -> str:
    return str(write_jsonl(tmp_path / "forget.jsonl", FORGET))


def validated(module: L.LightningModule, data: L.LightningDataModule) -> dict[str, float]:
    trainer = quiet_trainer()
    trainer.validate(module, datamodule=data, verbose=False)
    return {name: float(value) for name, value in trainer.callback_metrics.items()}


def hand_computed_loss(model: torch.nn.Module, tokenizer, records: list[dict]) -> float:
    """Σ over every trained token of every record of -log p(token), divided by the number of those tokens; each record
    forwarded alone, its conversation rendered from the record by hand."""
    encode = ConversationTokenizer(tokenizer, max_length=64)
    loss_sum, tokens = torch.zeros(()), 0
    with torch.no_grad():
        for record in records:
            messages = [
                {"role": "user", "content": record["instruction"]},
                {"role": "assistant", "content": record["output"]},
            ]
            example = encode(messages)
            logits = model(input_ids=torch.tensor([example["input_ids"]])).logits[0, :-1]
            labels = torch.tensor(example["labels"][1:])
            loss_sum += F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum")
            tokens += int((labels != IGNORE_INDEX).sum())
    return float(loss_sum / tokens)


@pytest.fixture
def sft_module(tiny_model_dir) -> SFT:
    """SFT whose tiny model has weights large enough that token losses differ (`context_dependent`), in eval mode."""
    module = SFT(ModelSpec(path=str(tiny_model_dir)))
    module.configure_model()
    context_dependent(module.model)
    return module


def test_extra_set_logs_its_token_weighted_loss_and_leaves_the_main_set_alone(sft_module, tmp_path):
    train = str(tmp_path / "train.jsonl")
    main_only = validated(sft_module, sft_data(sft_module, tmp_path, val=train))
    data = sft_data(sft_module, tmp_path, val=train, val_extra={"forget": forget_file(tmp_path)})
    metrics = validated(sft_module, data)

    expected = hand_computed_loss(sft_module.model, sft_module.tokenizer, FORGET)
    assert metrics["val_forget/loss"] == pytest.approx(expected, rel=1e-5)
    assert metrics["val_forget/ppl"] == pytest.approx(torch.tensor(expected).exp().item(), rel=1e-5)
    assert metrics["val/loss"] == main_only["val/loss"]
    assert metrics["val/loss"] == pytest.approx(hand_computed_loss(sft_module.model, sft_module.tokenizer, TRAIN))
    assert metrics["val/loss"] != pytest.approx(metrics["val_forget/loss"], rel=1e-3)
    assert sorted(metrics) == ["val/loss", "val/ppl", "val_forget/loss", "val_forget/ppl"]  # no dataloader_idx


def test_packed_extra_set_gives_the_same_loss(sft_module, tmp_path):
    data = sft_data(sft_module, tmp_path, packing=True, val_extra={"forget": forget_file(tmp_path)})
    metrics = validated(sft_module, data)
    expected = hand_computed_loss(sft_module.model, sft_module.tokenizer, FORGET)
    assert metrics["val_forget/loss"] == pytest.approx(expected, rel=1e-5)


def test_extra_sets_without_a_main_set_and_beside_a_held_out_fraction(sft_module, tmp_path):
    only_extra = sft_data(
        sft_module, tmp_path, val_extra={"forget": forget_file(tmp_path), "again": forget_file(tmp_path)}
    )
    assert only_extra.val_set_names == ["val_forget", "val_again"]
    metrics = validated(sft_module, only_extra)
    assert sorted(metrics) == ["val_again/loss", "val_again/ppl", "val_forget/loss", "val_forget/ppl"]
    assert metrics["val_again/loss"] == metrics["val_forget/loss"]

    held_out = sft_data(sft_module, tmp_path, val_fraction=0.25, val_extra={"forget": forget_file(tmp_path)})
    assert held_out.val_set_names == ["val", "val_forget"]
    metrics = validated(sft_module, held_out)
    assert (len(held_out.datasets["train"]), len(held_out.datasets["val"])) == (3, 1)
    assert {"val/loss", "val_forget/loss"} <= set(metrics)
    assert metrics["val_forget/loss"] == pytest.approx(
        hand_computed_loss(sft_module.model, sft_module.tokenizer, FORGET)
    )


def test_bad_set_names_are_refused_all_at_once():
    with pytest.raises(ValueError) as error:
        InstructionData("train.jsonl", val_extra={"val": "a.jsonl", "2nd": "b.jsonl", "gen/eral": "c.jsonl"})
    message = str(error.value)
    assert message.startswith("data.val_extra: ")
    assert "'val' would log as 'val_val/...'" in message
    assert "'2nd' is not identifier-like" in message and "'gen/eral' is not identifier-like" in message


def test_prompt_data_refuses_extra_sets():
    with pytest.raises(ValueError, match="online RL validates by generating"):
        PromptData("prompts.jsonl", val_extra={"general": "general.jsonl"})


def swapped_pair_file(tmp_path) -> str:
    records = [{"prompt": p, "chosen": r, "rejected": c} for p, c, r in PAIRS]
    return str(write_jsonl(tmp_path / "swapped.jsonl", records))


def flipped_kto_file(tmp_path) -> str:
    records = [
        {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": c}], "label": not label}
        for p, c, label in KTO_EXAMPLES
    ]
    return str(write_jsonl(tmp_path / "flipped.jsonl", records))


@pytest.mark.parametrize("algorithm", ["dpo", "dpo_precomputed", "kto", "reward"])
def test_preference_algorithms_log_each_set_under_its_name(algorithm, tiny_model_dir, tmp_path, monkeypatch):
    """After two steps: a copy of the main set logs exactly the main set's values, and the set with chosen and
    rejected swapped (KTO: labels flipped) logs the mirrored ones, so each set really went through its own loader.
    Swapping negates every margin; flipping KTO labels trades the desirable and undesirable mean rewards."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    options = {"kto": {"loss_type": "kto"}, "dpo_precomputed": {"precompute_reference_logps": True}}
    module, data = build_dpo(tiny_model_dir, tmp_path, peft=dpo_lora(), **options.get(algorithm, {}))
    if algorithm == "reward":
        module = RewardModel(ModelSpec(path=str(tiny_model_dir)), optimizer=adamw(1e-2))
    mirrored = flipped_kto_file(tmp_path) if algorithm == "kto" else swapped_pair_file(tmp_path)
    data.val_extra = {"copy": data.val, "mirrored": mirrored}
    dpo_trainer(2).fit(module, datamodule=data)
    metrics = validated(module, data)

    main = {name.removeprefix("val/"): value for name, value in metrics.items() if name.startswith("val/")}
    assert {name for name in metrics if name.startswith("val_copy/")} == {f"val_copy/{name}" for name in main}
    for name, value in main.items():
        assert metrics[f"val_copy/{name}"] == pytest.approx(value, abs=1e-6), name
    assert not any("dataloader_idx" in name for name in metrics)
    if algorithm == "kto":
        assert metrics["val_mirrored/rewards/desirable"] == pytest.approx(main["rewards/undesirable"], abs=1e-5)
        assert metrics["val_mirrored/rewards/undesirable"] == pytest.approx(main["rewards/desirable"], abs=1e-5)
    else:
        margin = "margin" if algorithm == "reward" else "rewards/margin"
        assert main[margin] != pytest.approx(0.0, abs=1e-4)
        assert metrics[f"val_mirrored/{margin}"] == pytest.approx(-main[margin], abs=1e-5)
    assert metrics["val_mirrored/loss"] != pytest.approx(main["loss"], abs=1e-4)


class ValidationHistory(L.Callback):
    """The value of ``monitor`` after each validation (sanity checks excluded)."""

    def __init__(self, monitor: str) -> None:
        self.monitor = monitor
        self.values: list[float] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.values.append(float(trainer.callback_metrics[self.monitor]))


def validation_that_stops(values: list[float], patience: int) -> int | None:
    """EarlyStopping's rule (mode min, min_delta 0): the index of the validation after which ``patience``
    validations in a row have not beaten the best value so far, or None."""
    best, waited = float("inf"), 0
    for index, value in enumerate(values):
        best, waited = (value, 0) if value < best else (best, waited + 1)
        if waited >= patience:
            return index
    return None


def test_early_stopping_on_a_rising_probe_stops_when_patience_runs_out(tiny_model_dir, tmp_path):
    """Training on one set of answers with a high learning rate makes the loss of contradicting answers to the same
    questions rise; with patience 1 the run stops after the first validation that fails to improve on the best."""
    module = SFT(ModelSpec(path=str(tiny_model_dir)), optimizer=adamw(5e-2), lr_scheduler="constant")
    data = sft_data(module, tmp_path, val_extra={"forget": forget_file(tmp_path)})
    history = ValidationHistory("val_forget/loss")
    stopping = EarlyStopping(monitor="val_forget/loss", mode="min", patience=1)
    max_epochs = 12
    trainer = quiet_trainer(max_epochs=max_epochs, num_sanity_val_steps=0, callbacks=[history, stopping])
    trainer.fit(module, datamodule=data)

    assert history.values[1] > history.values[0] + 0.1  # the probe's loss rises as training goes on
    stop = validation_that_stops(history.values, patience=1)
    assert stop is not None and stop < max_epochs - 1
    assert len(history.values) == stop + 1
    assert stopping.stopped_epoch == stop == trainer.current_epoch - 1
