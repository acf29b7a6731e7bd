"""`GenerationEval` on the tiny Llama: the logged exact-match rate is the one greedy decoding of the same seeded
sample gives, the sample is the same at every validation, samples reach TensorBoard as text, and bad options are
refused with the valid ones."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import lightning as L
import pytest
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util

from lightning_ft.algorithms import SFT
from lightning_ft.algorithms.base import FineTuneModule
from lightning_ft.callbacks import GenerationEval
from lightning_ft.cli import FineTuneCLI
from lightning_ft.data import InstructionData
from lightning_ft.eval.metrics import exact_match
from lightning_ft.model.generation import generate_replies
from lightning_ft.model.spec import ModelSpec
from tests.helpers import CONFIGS, adamw, quiet_trainer, write_jsonl

SYSTEM = "Answer briefly."
QUESTIONS = [
    "What is the capital of France?",
    "Say hello.",
    "Convert 3 kilometres to metres.",
    "Write a haiku about autumn.",
    "Thank you!",
    "What is the capital of Paris?",
]
MAX_NEW_TOKENS = 6


def conversation(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


def val_file_with_half_the_model_answers(module: SFT, tmp_path) -> str:
    """Each question's reference is the untrained model's own greedy reply (each prompt decoded alone, system prompt
    included) for even positions and a sentence it never writes for odd ones."""
    replies = generate_replies(
        module.model, module.tokenizer, [conversation(q) for q in QUESTIONS], MAX_NEW_TOKENS, batch_size=1
    )
    records = [
        {"instruction": question, "output": reply if index % 2 == 0 else "no such answer at all"}
        for index, (question, reply) in enumerate(zip(QUESTIONS, replies, strict=True))
    ]
    return str(write_jsonl(tmp_path / "val.jsonl", records))


@pytest.fixture
def module(tiny_model_dir) -> SFT:
    module = SFT(ModelSpec(path=str(tiny_model_dir)), optimizer=adamw(1e-2), lr_scheduler="constant")
    module.configure_model()
    return module


def text_events(log_dir: str, tag: str) -> list[tuple[int, str]]:
    events = EventAccumulator(log_dir, size_guidance={"tensors": 0})
    events.Reload()
    if f"{tag}/text_summary" not in events.Tags()["tensors"]:
        return []
    return [
        (event.step, tensor_util.make_ndarray(event.tensor_proto).item().decode())
        for event in events.Tensors(f"{tag}/text_summary")
    ]


def test_logged_exact_match_is_the_rate_of_the_same_sampled_items(module, tmp_path):
    val = val_file_with_half_the_model_answers(module, tmp_path)
    data = InstructionData(val, val=val, system_prompt=SYSTEM, tokenizer=module.tokenizer, max_length=64)
    callback = GenerationEval(num_samples=4, seed=3, max_new_tokens=MAX_NEW_TOKENS, batch_size=2)
    trainer = quiet_trainer(callbacks=[callback])
    trainer.validate(module, datamodule=data, verbose=False)

    picked = sorted(random.Random(3).sample(range(len(QUESTIONS)), 4))
    assert [item.prompt for item in callback.items] == [conversation(QUESTIONS[i]) for i in picked]
    references = [item.reference for item in callback.items]
    completions = generate_replies(
        module.model, module.tokenizer, [conversation(QUESTIONS[i]) for i in picked], MAX_NEW_TOKENS, batch_size=2
    )
    expected = sum(exact_match(c, r) for c, r in zip(completions, references, strict=True)) / 4
    assert 0 < expected < 1  # 4 of 6 items, 3 with the model's own answer: at least one hit and one miss
    assert float(trainer.callback_metrics["val/exact_match"]) == pytest.approx(expected)
    assert 0 <= float(trainer.callback_metrics["val/rouge_l"]) <= 1
    assert module.model.training  # back in train mode


def test_same_items_every_validation_and_samples_as_tensorboard_text(module, tmp_path):
    val = val_file_with_half_the_model_answers(module, tmp_path)
    data = InstructionData(val, val=val, tokenizer=module.tokenizer, batch_size=3, max_length=64)
    callback = GenerationEval(num_samples=3, max_new_tokens=MAX_NEW_TOKENS, log_samples=2, metrics=["chrf"])
    logger = TensorBoardLogger(tmp_path / "logs", name="", version=0)
    trainer = quiet_trainer(max_epochs=2, logger=logger, callbacks=[callback], log_every_n_steps=1)
    trainer.fit(module, datamodule=data)

    assert callback.validations == 2  # the sanity check is not counted
    for index in range(2):
        events = text_events(logger.log_dir, f"val/sample_{index}")
        assert [step for step, _ in events] == [2, 4]  # one text per validation, at its step
        prompts = [text.split("**completion**")[0] for _, text in events]
        assert prompts[0] == prompts[1]  # the same item both times
        assert callback.items[index].prompt[-1]["content"] in prompts[0]
        assert f"**reference**\n\n    {callback.items[index].reference}" in events[0][1]
    assert text_events(logger.log_dir, "val/sample_2") == []  # log_samples: 2
    assert "val/chrf" in trainer.callback_metrics


class EpochsGeneratedAt(GenerationEval):
    """Records the epoch of each generation."""

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.epochs: list[int] = []

    def generate(self, trainer, pl_module) -> list[str]:
        self.epochs.append(trainer.current_epoch)
        return super().generate(trainer, pl_module)


def test_every_n_validations_skips_the_others(module, tmp_path):
    val = val_file_with_half_the_model_answers(module, tmp_path)
    data = InstructionData(val, val=val, tokenizer=module.tokenizer, batch_size=6, max_length=64)
    callback = EpochsGeneratedAt(num_samples=2, max_new_tokens=2, every_n_validations=2)
    quiet_trainer(max_epochs=4, num_sanity_val_steps=0, callbacks=[callback]).fit(module, datamodule=data)
    assert callback.epochs == [1, 3]


def test_unknown_metric_is_refused_with_the_valid_ones():
    with pytest.raises(
        ValueError, match=r"Unknown generation metrics \['meteor'\]; valid: bleu, chrf, exact_match, rouge_l"
    ):
        GenerationEval(metrics=["exact_match", "meteor"])


def test_without_data_or_a_val_file_it_says_what_to_give(module, tmp_path):
    train = str(write_jsonl(tmp_path / "train.jsonl", [{"instruction": "a", "output": "b"}] * 4))
    data = InstructionData(train, val_fraction=0.25, tokenizer=module.tokenizer)
    with pytest.raises(ValueError, match="GenerationEval needs `data`"):
        GenerationEval().setup(SimpleNamespace(datamodule=data), module, "fit")


def test_the_default_data_is_read_with_the_data_modules_format_and_fields(module, tmp_path):
    records = [{"prompt": "Say hello.", "chosen": "hello world", "rejected": "goodbye"}]
    val = str(write_jsonl(tmp_path / "pairs.jsonl", records))
    fields = {"instruction": "prompt", "output": "chosen"}
    data = InstructionData(val, val=val, fields=fields, system_prompt=SYSTEM, tokenizer=module.tokenizer)
    callback = GenerationEval()
    callback.setup(SimpleNamespace(datamodule=data), module, "fit")
    assert [(item.prompt, item.reference) for item in callback.items] == [(conversation("Say hello."), "hello world")]


def test_vision_language_modules_are_refused(module):
    vision = SimpleNamespace(processor=object(), model=module.model, tokenizer=module.tokenizer)
    with pytest.raises(TypeError, match="text only"):
        GenerationEval(data="val.jsonl").setup(SimpleNamespace(datamodule=None), vision, "fit")


def test_lora_eval_recipe_logs_the_probe_and_generation_metrics_beside_early_stopping(tiny_model_dir, tmp_path):
    """configs/sft/lora_eval.yaml as it is, on the tiny model: its callbacks, extra set and monitor work together."""
    records = [{"instruction": f"Say {word}.", "output": word} for word in ("hello", "world", "autumn", "pond")]
    train = write_jsonl(tmp_path / "train.jsonl", records * 2)
    val = write_jsonl(tmp_path / "val.jsonl", records)
    general = write_jsonl(
        tmp_path / "general.jsonl", [{"instruction": "What is the capital of France?", "output": "Paris."}]
    )
    overrides = {
        "model.model.path": tiny_model_dir,
        "model.optimizer.init_args.lr": 0.05,
        "data.train": train,
        "data.val": val,
        "data.val_extra": json.dumps({"general": str(general)}),
        "data.max_length": 64,
        "trainer.default_root_dir": tmp_path / "run",
        "trainer.max_epochs": 2,
        "trainer.enable_progress_bar": "false",
    }
    args = ["--config", str(CONFIGS / "sft" / "lora_eval.yaml")]
    args += [item for key, value in overrides.items() for item in (f"--{key}", str(value))]
    cli = FineTuneCLI(
        FineTuneModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True, run=False, args=args
    )
    callbacks = {type(callback).__name__: callback for callback in cli.trainer.callbacks}
    assert callbacks["EarlyStopping"].monitor == "val/loss"
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    metrics = cli.trainer.callback_metrics
    assert {"val/loss", "val_general/loss", "val_general/ppl", "val/exact_match", "val/rouge_l"} <= set(metrics)
    assert callbacks["GenerationEval"].validations == cli.trainer.current_epoch
