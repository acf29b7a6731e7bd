"""Elastic weight consolidation: the diagonal Fisher (by hand and on the tiny model), the penalty's gradient in the
optimiser step equal to the penalty in the loss, anchors kept near, the Fisher file, checkpoints, a non-SFT
algorithm, sharded strategies refused, and the YAML."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.strategies import FSDPStrategy
from torch.utils.data import DataLoader

from lightning_ft.algorithms import EWC, SFT, FineTuneModule
from lightning_ft.algorithms.ewc import check_unsharded, diagonal_fisher, replay_rows, trainable_parameters
from lightning_ft.cli import FineTuneCLI
from lightning_ft.data import ChatData
from lightning_ft.data.collate import PadCollator
from lightning_ft.losses.ewc import ewc_penalty
from lightning_ft.model.spec import ModelSpec
from tests.helpers import (
    CONVERSATIONS,
    build_dpo,
    dpo_trainer,
    lora,
    quiet_trainer,
    repeated_batch_loader,
    tokenized_examples,
    write_jsonl,
)


def replay_file(tmp_path: Path) -> str:
    return str(write_jsonl(tmp_path / "replay.jsonl", [{"messages": messages} for messages in CONVERSATIONS]))


def replay(tmp_path: Path, batch_size: int = 2) -> ChatData:
    """The helpers' three conversations, one per row (no packing); no tokenizer: EWC gives it the model's."""
    return ChatData(replay_file(tmp_path), batch_size=batch_size, max_length=64, packing=False)


class UnreadReplay(L.LightningDataModule):
    """Replay data that fails when read: shows a Fisher came from a file or a checkpoint."""

    tokenizer = None

    def prepare_data(self) -> None:
        raise AssertionError("the replay data was read")

    def setup(self, stage: str) -> None:
        raise AssertionError("the replay data was read")


def sft(model_dir: Path, ewc: EWC | None, optimizer=None, **options) -> SFT:
    optimizer = optimizer or (lambda params: torch.optim.SGD(params, lr=0.1))
    return SFT(ModelSpec(path=str(model_dir)), optimizer=optimizer, lr_scheduler="constant", ewc=ewc, **options)


def trainable_copy(module: SFT) -> dict[str, torch.Tensor]:
    return {name: parameter.detach().clone() for name, parameter in trainable_parameters(module.model).items()}


# Fisher


def test_fisher_is_the_mean_squared_per_example_gradient():
    """loss_n = 1/2 (a x_n + b - y_n)^2 at a = 2, b = 1 on (x, y) = (1, 2), (2, 3), (-1, 0).
    Residuals r_n = a x_n + b - y_n: 2+1-2 = 1, 4+1-3 = 2, -2+1-0 = -1.
    d loss_n / da = r_n x_n = 1, 4, 1;  d loss_n / db = r_n = 1, 2, -1.
    F_a = (1 + 16 + 1) / 3 = 6;  F_b = (1 + 4 + 1) / 3 = 2;  c takes no part: F_c = 0.
    (The squared mean gradient would give (6/3)^2 = 4 and (2/3)^2 = 4/9 instead.)"""
    a, b, c = (torch.tensor(value, requires_grad=True) for value in (2.0, 1.0, 5.0))
    points = [(1.0, 2.0), (2.0, 3.0), (-1.0, 0.0)]

    def example_loss(x: float, y: float):
        return lambda: 0.5 * (a * x + b - y) ** 2

    fisher = diagonal_fisher({"a": a, "b": b, "c": c}, [example_loss(x, y) for x, y in points])
    assert {name: value.item() for name, value in fisher.items()} == {"a": 6.0, "b": 2.0, "c": 0.0}
    assert a.grad is None and b.grad is None


def test_fisher_needs_an_example():
    with pytest.raises(ValueError, match="at least one example"):
        diagonal_fisher({"a": torch.zeros(1, requires_grad=True)}, [])


class CheckModelUntouched(L.Callback):
    """After the Fisher is estimated (module `on_fit_start`): train mode back on and no gradient left behind."""

    def on_train_start(self, trainer: L.Trainer, module: SFT) -> None:
        assert module.model.training
        assert all(parameter.grad is None for parameter in module.model.parameters())


def test_fisher_of_the_tiny_model_is_the_mean_of_per_row_squared_gradients(tiny_model_dir, tiny_tokenizer, tmp_path):
    """Replay rows in loader order, batches of 2, capped at 3 examples (so across two batches): the Fisher is the mean
    over those rows of each row's squared gradient of its mean token NLL, recomputed here with `.backward()` one row
    at a time."""
    ewc = EWC(replay(tmp_path), num_examples=3, normalize=False)
    module = sft(tiny_model_dir, ewc)
    loader = repeated_batch_loader(tiny_tokenizer, steps=1)
    quiet_trainer(max_steps=1, callbacks=[CheckModelUntouched()]).fit(module, train_dataloaders=loader)
    assert ewc.replay.tokenizer is module.tokenizer
    assert ewc.fisher_examples == 3

    reference = sft(tiny_model_dir, None)
    reference.configure_model()
    parameters = trainable_parameters(reference.model)
    expected = {name: torch.zeros_like(parameter) for name, parameter in parameters.items()}
    data = replay(tmp_path)
    data.tokenizer = reference.tokenizer
    data.setup("fit")
    batches = list(data.train_dataloader())
    assert [len(batch["input_ids"]) for batch in batches] == [2, 1]
    for batch in batches:
        for row in range(len(batch["input_ids"])):
            reference.model.zero_grad()
            loss_sum, num_tokens = reference.loss_sum({key: value[row : row + 1] for key, value in batch.items()})
            (loss_sum / num_tokens).backward()
            for name, parameter in parameters.items():
                expected[name] += parameter.grad.square() / 3
    for name, value in expected.items():
        torch.testing.assert_close(ewc.fisher[name], value, atol=1e-9, rtol=1e-5, msg=name)


def test_replay_rows_skip_rows_without_trained_tokens_and_are_dealt_out_between_devices():
    """Labels are unshifted: a row whose only label is at position 0 trains nothing. Of rows 0..4 (row 1 untrained)
    the first 3 trained ones are 0, 2, 3; on 2 devices rank 0 takes the 1st and 3rd of them, rank 1 the 2nd."""
    labels = torch.tensor([[-100, 7], [7, -100], [-100, 7], [-100, 7], [-100, 7]])
    batches = [{"input_ids": torch.arange(5)[:, None].expand(5, 2), "labels": labels}]
    first_tokens = {
        rank: [int(row["input_ids"][0, 0]) for row in replay_rows(batches, 3, rank, world_size=2)] for rank in (0, 1)
    }
    assert first_tokens == {0: [0, 3], 1: [2]}
    assert [int(row["input_ids"][0, 0]) for row in replay_rows(batches, 10)] == [0, 2, 3, 4]


# The penalty in training


def test_penalty_gradient_in_the_step_equals_the_penalty_in_the_loss(tiny_model_dir, tiny_tokenizer, tmp_path):
    """One SGD step (lr 0.1) from theta0 with anchors theta* = theta0 + 0.01 * noise (as if restored):
    theta1 = theta0 - 0.1 * (grad of the batch's token-mean NLL at theta0 + strength * F * (theta0 - theta*)),
    with F the normalised Fisher the run estimated; the logged penalty is strength / 2 * sum F (theta0 - theta*)^2."""
    strength, lr = 0.5, 0.1
    ewc = EWC(replay(tmp_path), strength=strength)
    module = sft(tiny_model_dir, ewc)
    module.configure_model()
    start = trainable_copy(module)
    generator = torch.Generator().manual_seed(0)
    anchors = {name: value + 0.01 * torch.randn(value.shape, generator=generator) for name, value in start.items()}
    ewc.anchors = dict(anchors)
    batch = PadCollator(tiny_tokenizer.pad_token_id)(tokenized_examples(tiny_tokenizer))
    trainer = quiet_trainer(max_steps=1)
    trainer.fit(module, train_dataloaders=DataLoader([batch], batch_size=None))

    reference = sft(tiny_model_dir, None)
    reference.configure_model()
    loss_sum, num_tokens = reference.loss_sum(batch)
    (loss_sum / num_tokens).backward()
    for name, parameter in trainable_parameters(reference.model).items():
        penalty_gradient = strength * ewc.fisher[name] * (start[name] - anchors[name])
        expected = start[name] - lr * (parameter.grad + penalty_gradient)
        torch.testing.assert_close(trainable_copy(module)[name], expected, atol=1e-6, rtol=1e-5, msg=name)
    penalty = ewc_penalty(start, anchors, ewc.fisher, strength)
    torch.testing.assert_close(trainer.callback_metrics["train/ewc_penalty"], penalty)


def max_deviation(model_dir: Path, tokenizer, ewc: EWC | None, steps: int) -> float:
    module = sft(model_dir, ewc, optimizer=lambda params: torch.optim.Adam(params, lr=1e-2))
    module.configure_model()
    start = trainable_copy(module)
    L.seed_everything(0)
    trainer = quiet_trainer(max_steps=steps)
    trainer.fit(module, train_dataloaders=repeated_batch_loader(tokenizer, steps))
    if ewc is not None:
        assert trainer.callback_metrics["train/ewc_penalty"] > 0
    return max(float((value - start[name]).abs().max()) for name, value in trainable_copy(module).items())


def test_a_strong_penalty_keeps_the_weights_near_their_anchors(tiny_model_dir, tiny_tokenizer, tmp_path):
    """Adam (lr 0.01) for 30 steps on the replay conversations themselves, so every weight the training moves has
    Fisher information. Adam's first step moves every weight by the learning rate with or without EWC (the penalty's
    gradient is 0 at the anchors); without EWC the weights drift on, with a strong EWC they are pulled back to within
    1% of the drift.
    (Plain SGD cannot show a strong penalty: it diverges once lr * strength * max F > 2, and the normalised Fisher
    of this model peaks near 1000.)"""
    free = max_deviation(tiny_model_dir, tiny_tokenizer, None, steps=30)
    held = max_deviation(tiny_model_dir, tiny_tokenizer, EWC(replay(tmp_path), strength=1e8), steps=30)
    assert free > 0.2  # about 0.30; held about 0.0016
    assert held < free / 100


# Fisher file and checkpoints


def test_fisher_file_is_written_then_reused_and_refused_for_other_parameters(tiny_model_dir, tiny_tokenizer, tmp_path):
    fisher_file = tmp_path / "fisher" / "ewc.pt"
    loader = repeated_batch_loader(tiny_tokenizer, steps=1)
    first = EWC(replay(tmp_path), fisher_file=str(fisher_file), num_examples=3)
    quiet_trainer(max_steps=1).fit(sft(tiny_model_dir, first), train_dataloaders=loader)
    saved = torch.load(fisher_file, weights_only=True)
    assert saved["num_examples"] == 3 and saved["normalized"] is True
    assert saved["parameters"] == {name: list(value.shape) for name, value in first.fisher.items()}
    assert list(fisher_file.parent.iterdir()) == [fisher_file]  # no temporary file left

    second = EWC(UnreadReplay(), fisher_file=str(fisher_file))
    quiet_trainer(max_steps=1).fit(sft(tiny_model_dir, second), train_dataloaders=loader)
    for name, value in first.fisher.items():
        assert torch.equal(second.fisher[name], value)

    adapter = sft(tiny_model_dir, EWC(UnreadReplay(), fisher_file=str(fisher_file)), peft=lora())
    adapter.configure_model()
    first_adapter_weight = next(iter(trainable_parameters(adapter.model)))
    with pytest.raises(ValueError, match=rf"{fisher_file}.*{first_adapter_weight} is trainable but not in"):
        quiet_trainer(max_steps=1).fit(adapter, train_dataloaders=loader)


class SaveAt(L.Callback):
    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_end(self, trainer: L.Trainer, module: SFT) -> None:
        trainer.save_checkpoint(self.path)


def test_a_resumed_run_keeps_the_anchors_and_fisher_of_its_checkpoint(tiny_model_dir, tiny_tokenizer, tmp_path):
    """Anchors are the weights before the first run, not the resumed (trained) weights; the Fisher is not
    estimated again (the second run's replay data is never read)."""
    checkpoint = tmp_path / "run.ckpt"
    ewc = EWC(replay(tmp_path), strength=1.0)
    module = sft(tiny_model_dir, ewc)
    module.configure_model()
    start = trainable_copy(module)
    quiet_trainer(max_steps=2, callbacks=[SaveAt(checkpoint)]).fit(
        module, train_dataloaders=repeated_batch_loader(tiny_tokenizer, steps=2)
    )
    saved = torch.load(checkpoint, weights_only=True)["ewc"]
    for name, value in start.items():
        assert torch.equal(saved["anchors"][name], value)

    resumed = EWC(UnreadReplay(), strength=1.0)
    module = sft(tiny_model_dir, resumed)
    quiet_trainer(max_steps=3).fit(
        module, train_dataloaders=repeated_batch_loader(tiny_tokenizer, steps=3), ckpt_path=checkpoint
    )
    for name, value in start.items():
        assert torch.equal(resumed.anchors[name], value)
        assert torch.equal(resumed.fisher[name], ewc.fisher[name])
    assert resumed.fisher_examples == ewc.fisher_examples == len(CONVERSATIONS)
    assert any(not torch.equal(value, start[name]) for name, value in trainable_copy(module).items())


# Other algorithms, strategies, configuration


def test_dpo_with_lora_adds_the_penalty(tiny_model_dir, tmp_path):
    """Anchors are the adapter's initialisation; after the first step the penalty is positive."""
    ewc = EWC(replay(tmp_path), strength=10.0)
    module, data = build_dpo(tiny_model_dir, tmp_path, peft=lora(), ewc=ewc)
    trainer = dpo_trainer(steps=2)
    trainer.fit(module, datamodule=data)
    assert set(ewc.anchors) == set(trainable_parameters(module.model))
    assert all("lora_" in name for name in ewc.anchors)
    assert trainer.callback_metrics["train/ewc_penalty"] > 0


def test_sharded_strategies_are_refused():
    with pytest.raises(ValueError, match="FSDPStrategy shards them"):
        check_unsharded(FSDPStrategy())


def test_ewc_configures_from_yaml(tiny_model_dir, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"instruction": "a", "output": "b"}])
    general = write_jsonl(tmp_path / "general.jsonl", [{"instruction": "Say hello.", "output": "hello"}])
    config = tmp_path / "sft_ewc.yaml"
    config.write_text(
        f"""
model:
  class_path: lightning_ft.algorithms.SFT
  init_args:
    model:
      path: {tiny_model_dir}
    ewc:
      class_path: lightning_ft.algorithms.EWC
      init_args:
        strength: 100.0
        num_examples: 16
        fisher_file: {tmp_path / "fisher.pt"}
        replay:
          class_path: lightning_ft.data.InstructionData
          init_args:
            train: {general}
            packing: false
            max_length: 256
data:
  class_path: lightning_ft.data.InstructionData
  init_args:
    train: {train}
"""
    )
    args = ["--config", str(config), "--trainer.default_root_dir", str(tmp_path)]
    cli = FineTuneCLI(
        FineTuneModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True, run=False, args=args
    )
    ewc = cli.model.ewc
    assert isinstance(ewc, EWC)
    assert (ewc.strength, ewc.num_examples, ewc.fisher_file, ewc.normalize) == (
        100.0,
        16,
        str(tmp_path / "fisher.pt"),
        True,
    )
    assert ewc.replay.train == str(general) and ewc.replay.packing is False and ewc.replay.max_length == 256
