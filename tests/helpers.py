"""Test helpers shared between test modules: tiny batches, JSONL files, a short fit, callbacks recording the
per-step loss or reward, and the builders of the preference, online-RL, precision and strategy tests."""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
import yaml
from peft import LoraConfig
from PIL import Image
from torch.utils.data import DataLoader
from transformers import GenerationConfig

from lightning_ft.algorithms import DPO, GRPO, PPO, SFT, RewardModel
from lightning_ft.data import InstructionData, PreferenceData, PromptData
from lightning_ft.data.collate import PadCollator
from lightning_ft.data.tokenize import ConversationTokenizer
from lightning_ft.model.attention import model_inputs
from lightning_ft.model.spec import ModelSpec

if TYPE_CHECKING:
    from lightning_ft.cli import FineTuneCLI

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

CONVERSATIONS = [
    [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "The capital of France is Paris."},
    ],
    [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Convert 3 kilometres to metres."},
        {"role": "assistant", "content": "3000 metres."},
    ],
    [
        {"role": "user", "content": "Write a haiku about autumn."},
        {"role": "assistant", "content": "Autumn leaves falling on a quiet pond."},
        {"role": "user", "content": "Thank you!"},
        {"role": "assistant", "content": "Hello, goodbye!"},
    ],
]


def tokenized_examples(tokenizer, conversations: Sequence = CONVERSATIONS, max_length: int = 128) -> list[dict]:
    encode = ConversationTokenizer(tokenizer, max_length=max_length)
    return [dict(encode(conversation)) for conversation in conversations]


def repeated_batch_loader(tokenizer, steps: int, batch_size: int = 3) -> DataLoader:
    """The same examples every step, so any working method must lower the loss."""
    examples = tokenized_examples(tokenizer)[:batch_size]
    return DataLoader([examples] * steps, batch_size=None, collate_fn=PadCollator(tokenizer.pad_token_id))


def context_dependent(model: torch.nn.Module, std: float = 0.2, seed: int = 0) -> torch.nn.Module:
    """Redraw every weight matrix of a tiny random model from N(0, std²) (norm weights stay 1), in place.

    With the default initialisation (std 0.02) the tiny model's logits barely depend on the context, so a comparison
    of packed and unpacked runs could not tell attention that leaks across sequences from rounding; at std 0.2 a leak
    moves logits by several units while bf16 rounding moves them by a few hundredths
    (tests/model/test_packing_control.py measures both)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() >= 2:
                values = torch.randn(parameter.shape, generator=generator) * std
                parameter.copy_(values.to(parameter.dtype))
    return model


# |packed - alone| allowed on per-token logits in bf16 (about 8 bf16 ulps of the logits of `context_dependent`):
# attention that leaks across the packed sequences moves them by more than 5 (tests/model/test_packing_control.py).
BF16_LOGITS_ATOL = 0.25


def per_token_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``(length, vocab)`` float32 logits of a one-row batch, padded or packed, through `model_inputs` (the masks and
    positions the model trains with)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    inputs = model_inputs(batch, base.config._attn_implementation, base.dtype)
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], **inputs).logits[0].float()


def split_by_sequence(packed_row: torch.Tensor, sequence_ids: torch.Tensor) -> list[torch.Tensor]:
    """The rows of ``packed_row`` ``(length, ...)`` for each sequence of a packed row, in sequence order."""
    return [packed_row[sequence_ids == k] for k in range(int(sequence_ids.max()) + 1)]


def greedy_reply(model: torch.nn.Module, tokenizer, messages: list[dict[str, str]], max_new_tokens: int) -> str:
    """The reference for `lightning-ft chat`: plain transformers greedy decoding of the assistant turn after
    ``messages`` rendered with the tokenizer's chat template, stopped at the end-of-turn token, special tokens cut."""
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_tensors="pt", return_dict=True
    )
    return greedy_continuation(model, tokenizer, inputs, max_new_tokens)


def greedy_image_reply(model: torch.nn.Module, processor, prompt: str, image_path: Path, max_new_tokens: int) -> str:
    """The reference for `lightning-ft chat --image`: the image first in the one user turn (``<image>`` before the
    prompt), rendered with the chat template, expanded by the processor, decoded greedily by plain transformers."""
    tokenizer = processor.tokenizer
    messages = [{"role": "user", "content": f"{processor.image_token}{prompt}"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    image = Image.open(image_path).convert("RGB")
    inputs = processor(text=text, images=[image], return_tensors="pt", add_special_tokens=False)
    return greedy_continuation(model, tokenizer, inputs, max_new_tokens)


def greedy_continuation(model: torch.nn.Module, tokenizer, inputs: Any, max_new_tokens: int) -> str:
    """Plain transformers greedy decoding of ``inputs``, stopped at EOS or ``<|im_end|>``, special tokens cut."""
    stop = sorted({tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")})
    config = GenerationConfig(
        do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=stop, pad_token_id=tokenizer.pad_token_id
    )
    with torch.no_grad():
        output = model.generate(**inputs, generation_config=config)
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


class LossRecorder(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if "train/loss" in trainer.callback_metrics:
            self.losses.append(float(trainer.callback_metrics["train/loss"]))


class HangAfterStep(L.Callback):
    """Stands still once ``step`` optimiser steps are done (and their checkpoint written), after writing ``marker``,
    so a test can kill the process at a known point."""

    def __init__(self, step: int, marker: str) -> None:
        self.step = step
        self.marker = marker

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_step >= self.step:
            Path(self.marker).write_text(str(trainer.global_step))
            time.sleep(600)


def quiet_trainer(**trainer_kwargs) -> L.Trainer:
    """A CPU trainer without logger, checkpoints, progress bar or summary."""
    defaults = {
        "accelerator": "cpu",
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return L.Trainer(**{**defaults, **trainer_kwargs})


def short_fit(module: L.LightningModule, loader: DataLoader, steps: int, **trainer_kwargs) -> LossRecorder:
    recorder = LossRecorder()
    quiet_trainer(max_steps=steps, callbacks=[recorder], **trainer_kwargs).fit(module, train_dataloaders=loader)
    return recorder


def adamw(lr: float):
    return lambda params: torch.optim.AdamW(params, lr=lr)


def recipe_cli(recipe: str, model_dir: Path, train: Path | str, val: Path | str, root: Path) -> FineTuneCLI:
    """A recipe from configs/ (e.g. ``rm/minilm_hh_rlhf.yaml``) through the CLI, with the public overrides for the
    model, training and held-out data, and a run directory; nothing run yet."""
    from lightning_ft.algorithms.base import FineTuneModule
    from lightning_ft.cli import FineTuneCLI

    args = ["--config", str(CONFIGS / recipe)]
    args += ["--model.model.path", str(model_dir), "--data.train", str(train), "--data.val", str(val)]
    args += ["--data.val_fraction", "0", "--trainer.default_root_dir", str(root)]
    args += ["--trainer.enable_progress_bar", "false"]
    return FineTuneCLI(
        FineTuneModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True, run=False, args=args
    )


def write_jsonl(path: Path, records: Iterable[Any]) -> Path:
    """One JSON document per line; returns ``path``."""
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSONL file, blank lines skipped (as the data loaders skip them). Split on newlines only:
    text such as GSM8K's holds U+2028, which ``splitlines`` would also split on."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def identical_pairs(records: Sequence[dict[str, Any]]) -> list[int]:
    """Indices of the preference records whose chosen and rejected are the same (reported and dropped as identical)."""
    return [
        index for index, record in enumerate(records) if "chosen" in record and record["chosen"] == record["rejected"]
    ]


# Preference pairs (DPO, KTO, reward models): (prompt, chosen, rejected).
PAIRS = [
    ("What is the capital of France?", "The capital of France is Paris.", "No."),
    ("Say hello.", "hello world", "goodbye"),
    ("Write a haiku about autumn.", "autumn leaves falling on a quiet pond", "the a of and"),
    ("Convert 3 kilometres to metres.", "3000 metres.", "3 metres."),
]
KTO_EXAMPLES = [(prompt, good, True) for prompt, good, _ in PAIRS] + [(prompt, bad, False) for prompt, _, bad in PAIRS]


def pair_file(tmp_path: Path) -> str:
    return str(write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS]))


def kto_file(tmp_path: Path) -> str:
    records = [
        {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": c}], "label": label}
        for p, c, label in KTO_EXAMPLES
    ]
    return str(write_jsonl(tmp_path / "kto.jsonl", records))


def dpo_lora() -> LoraConfig:
    return LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1, target_modules="all-linear")


def build_dpo(
    tiny_model_dir: Path,
    tmp_path: Path,
    peft: LoraConfig | None = None,
    lr: float = 1e-2,
    packing: bool = False,
    **options,
) -> tuple[DPO, PreferenceData]:
    """DPO (``options`` such as ``loss_type``) on the `PAIRS` (or `KTO_EXAMPLES`) as one batch; val = train."""
    module = DPO(
        ModelSpec(path=str(tiny_model_dir)), peft=peft, optimizer=adamw(lr), lr_scheduler="constant", **options
    )
    kto = options.get("loss_type") == "kto"
    train = kto_file(tmp_path) if kto else pair_file(tmp_path)
    data = PreferenceData(
        train,
        val=train,
        format="kto" if kto else "pairs",
        tokenizer=module.tokenizer,
        batch_size=len(KTO_EXAMPLES) if kto else len(PAIRS),
        max_length=64,
        packing=packing,
    )
    return module, data


def dpo_trainer(steps: int) -> L.Trainer:
    return quiet_trainer(max_steps=steps, num_sanity_val_steps=0, limit_val_batches=1)


# Online RL (PPO, GRPO): a rule reward, loaded by its import path, that a random policy already earns sometimes.
TARGET = "a"  # dense enough that a random policy samples it: the reward has a signal from step 1
REWARD = "tests.helpers.reward_target_letter"


def reward_target_letter(prompts: list[str], completions: list[str], **fields: Any) -> list[float]:
    """How often the completion writes the target letter (the rule reward the policy must learn)."""
    return [float(text.count(TARGET)) for text in completions]


def prompt_file(tmp_path: Path, count: int = 8) -> str:
    records = [{"prompt": f"Say something {i}.", "answer": str(i)} for i in range(count)]
    return str(write_jsonl(tmp_path / "prompts.jsonl", records))


class RewardRecorder(L.Callback):
    def __init__(self) -> None:
        self.rewards: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        self.rewards.append(float(trainer.callback_metrics["train/reward"]))


def build_ppo(tiny_model_dir: Path, **options) -> PPO:
    """PPO with the `REWARD` rule, short completions and two epochs of two minibatches; ``options`` override."""
    defaults = {
        "reward_funcs": [REWARD],
        "max_new_tokens": 12,
        "kl_coef": 0.01,
        "ppo_epochs": 2,
        "num_minibatches": 2,
        "optimizer": adamw(1e-2),
        "lr_scheduler": "constant",
    }
    return PPO(ModelSpec(path=str(tiny_model_dir)), **{**defaults, **options})


# Every algorithm with LoRA on the same tiny data (the precision matrix, on CPU and CUDA).
ALGORITHMS = ["sft", "dpo", "kto", "reward", "grpo", "ppo"]
PRECISIONS = ["32-true", "bf16-mixed", "bf16-true", "16-mixed"]


def lora(**options) -> LoraConfig:
    """LoRA r=4 on every linear layer, B initialised randomly so the adapter changes the outputs from step 0."""
    return LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False, **options)


def build_algorithm(algorithm: str, model_dir: Path, tmp_path: Path) -> tuple[L.LightningModule, L.LightningDataModule]:
    """One of `ALGORITHMS` with `lora` and its data module (train = val), for a two-step fit."""
    spec = ModelSpec(path=str(model_dir))
    common = {"peft": lora(), "optimizer": adamw(1e-2)}
    if algorithm == "sft":
        module = SFT(spec, **common)
        data = InstructionData(
            pair_file(tmp_path),
            val=pair_file(tmp_path),
            fields={"instruction": "prompt", "output": "chosen"},
            tokenizer=module.tokenizer,
            batch_size=2,
            max_length=64,
        )
    elif algorithm in ("dpo", "kto"):
        loss_type = {"loss_type": "kto"} if algorithm == "kto" else {}
        module, data = build_dpo(model_dir, tmp_path, peft=lora(), **loss_type)
    elif algorithm == "reward":
        _, data = build_dpo(model_dir, tmp_path)  # the same pairs, tokenized alike
        module = RewardModel(spec, **common)
    else:
        options = {"reward_funcs": [REWARD], "max_new_tokens": 6, **common}
        module = PPO(spec, ppo_epochs=1, **options) if algorithm == "ppo" else GRPO(spec, num_generations=2, **options)
        prompts = prompt_file(tmp_path, count=4)
        data = PromptData(prompts, val=prompts, tokenizer=module.tokenizer, batch_size=2)
    return module, data


def strategy_from(fragment: str):
    """The strategy a fragment of configs/strategies/ describes, built as jsonargparse builds it:
    class_path(**init_args)."""
    spec = yaml.safe_load((CONFIGS / "strategies" / fragment).read_text())["trainer"]["strategy"]
    module_name, _, class_name = spec["class_path"].rpartition(".")
    return getattr(importlib.import_module(module_name), class_name)(**spec.get("init_args", {}))
