"""GRPO on a tiny Llama: prompts left-padded with their fields kept, completions cut at their first stop token,
and a rule reward (emitting one word) rising within a bounded number of seeded steps."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from peft import LoraConfig

from lightning_ft.algorithms import GRPO
from lightning_ft.algorithms.online import through_first_stop
from lightning_ft.data import DataError, PromptData
from lightning_ft.model.spec import ModelSpec
from tests.helpers import REWARD, RewardRecorder, adamw, prompt_file, quiet_trainer, write_jsonl

LORA_LAYERS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def test_prompts_are_left_padded_and_keep_their_fields(tiny_tokenizer, tmp_path):
    records = [{"question": "Hi", "answer": "1"}, {"question": "What is the capital of France?", "answer": "2"}]
    path = write_jsonl(tmp_path / "q.jsonl", records)
    data = PromptData(str(path), fields={"prompt": "question"}, tokenizer=tiny_tokenizer, batch_size=2)
    data.prepare_data()
    data.setup("fit")
    batch = next(iter(data.val_dataloader() or data._loader(data._prompts("train"), 2, False, data.collator())))
    assert batch["answer"] == ["1", "2"]
    assert batch["prompt_text"][0].endswith("<|im_start|>assistant\n")
    short = batch["attention_mask"][0]
    assert short[0] == 0 and short[-1] == 1  # left padding
    assert (batch["attention_mask"][1] == 1).all()
    assert tiny_tokenizer.decode(batch["input_ids"][0][short.bool()]) == batch["prompt_text"][0]


def test_completion_mask_runs_through_the_first_stop_token():
    completions = torch.tensor([[5, 6, 2, 7, 2], [5, 5, 5, 5, 5], [2, 9, 9, 9, 9]])
    assert through_first_stop(completions, [2]).tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]


# LoRA includes lm_head: sampling from the policy's full softmax (no hidden top-k), only the output layer moves the
# random model's near-uniform next-token distribution within these steps (as in the PPO test).
LORA_WITH_HEAD = LoraConfig(r=8, lora_alpha=16, target_modules=[*LORA_LAYERS, "lm_head"])


@pytest.mark.parametrize("peft", [None, LORA_WITH_HEAD], ids=["full", "lora"])
def test_rule_reward_rises(tiny_model_dir, tmp_path, peft):
    L.seed_everything(0)
    module = GRPO(
        ModelSpec(path=str(tiny_model_dir)),
        reward_funcs=[REWARD],
        num_generations=8,
        max_new_tokens=12,
        beta=0.01,
        peft=peft,
        optimizer=adamw(1e-1 if peft else 1e-2),
        lr_scheduler="constant",
    )
    data = PromptData(prompt_file(tmp_path), tokenizer=module.tokenizer, batch_size=4, max_length=64)
    recorder = RewardRecorder()
    quiet_trainer(max_steps=30, callbacks=[recorder], num_sanity_val_steps=0).fit(module, datamodule=data)
    first, last = sum(recorder.rewards[:5]) / 5, sum(recorder.rewards[-5:]) / 5
    assert last > first + 1.0, recorder.rewards


def test_reward_functions_and_options_are_checked(tiny_model_dir):
    spec = ModelSpec(path=str(tiny_model_dir))
    with pytest.raises(ValueError, match="Cannot import reward function 'tests.nope.fn'"):
        GRPO(spec, reward_funcs=["tests.nope.fn"])
    with pytest.raises(ValueError, match="1 reward_weights for 2 reward_funcs"):
        GRPO(spec, reward_funcs=["lightning_ft.rewards.answer_in_tags"] * 2, reward_weights=[1.0])
    with pytest.raises(ValueError, match="num_generations must be at least 2"):
        GRPO(spec, reward_funcs=["lightning_ft.rewards.answer_in_tags"], num_generations=1)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"question": "Hi"}, r"bad\.jsonl:2: missing field 'prompt'"),
        (
            {"prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]},
            r"bad\.jsonl:2: field 'prompt' must end with a user turn",
        ),
    ],
)
def test_bad_prompt_records_name_the_record_and_field(tiny_tokenizer, tmp_path, record, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "Say hello."}, record])
    data = PromptData(str(path), tokenizer=tiny_tokenizer)
    with pytest.raises(DataError, match=message):
        data.prepare_data()
