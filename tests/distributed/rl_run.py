"""One online-RL run on the tiny Llama for tests/distributed/test_ddp.py: `python rl_run.py MODEL_DIR OUT DEVICES ALGO`.

ALGO is ``grpo`` (token-level loss aggregation, DAPO) or ``ppo`` (adaptive KL controller). Completions are fixed
functions of their prompt (no sampling), of different lengths on each rank, so the only difference between 1 process
with the global batch and 2 processes with half of it each is how the algorithm pools across ranks. The global batch
is the same 2 prompts per step whatever DEVICES is; rank 0 writes the final weights and KL coefficient to OUT."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from lightning_ft.algorithms import GRPO, PPO
from lightning_ft.data import PromptData
from lightning_ft.data.prompts import LeftPadCollator
from lightning_ft.model.spec import ModelSpec
from tests.helpers import write_jsonl

GLOBAL_BATCH, STEPS, MAX_NEW_TOKENS, STOP = 2, 2, 6, 2  # token 2 is the tiny tokenizer's <|im_end|>
PROMPTS = ["Say hello.", "Write a haiku about autumn leaves falling on a quiet pond.", "Thank you!", "What is it?"]


def reward_length(prompts: list[str], completions: list[str], **fields: Any) -> list[float]:
    return [float(len(text)) for text in completions]


class FixedCompletions:
    """Completion ``j`` of a prompt: ``1 + (len(prompt) + 2 j) % 6`` tokens fixed by the prompt, then a stop token."""

    def sample(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, temperature: float, generations: int = 1
    ) -> tuple:
        input_ids = input_ids.repeat_interleave(generations, dim=0)
        attention_mask = attention_mask.repeat_interleave(generations, dim=0)
        rows = []
        for index, (ids, mask) in enumerate(zip(input_ids, attention_mask, strict=True)):
            prompt, j = ids[mask.bool()], index % generations
            length = 1 + (len(prompt) + 2 * j) % MAX_NEW_TOKENS
            tokens = [4 + (int(prompt.sum()) * 7 + 13 * t + j) % 300 for t in range(length)]
            rows.append((tokens + [STOP] * MAX_NEW_TOKENS)[:MAX_NEW_TOKENS])
        completions = torch.tensor(rows, device=input_ids.device)
        is_stop = completions == STOP
        completion_mask = ((is_stop.long().cumsum(dim=1) - is_stop.long()) == 0).long()
        lengths = completion_mask.sum(dim=1).tolist()
        texts = [self.tokenizer.decode(row[:n]) for row, n in zip(completions, lengths, strict=True)]
        return torch.cat([input_ids, completions], dim=1), completion_mask, texts


class FixedGRPO(FixedCompletions, GRPO):
    pass


class FixedPPO(FixedCompletions, PPO):
    pass


class RankShards(L.LightningDataModule):
    """Step k's global batch is prompts 2k, 2k+1 on any number of processes; rank r takes every world-size-th."""

    def __init__(self, tokenizer) -> None:
        super().__init__()
        self.tokenizer = tokenizer

    def train_dataloader(self) -> DataLoader:
        prompts_file = write_jsonl(Path(tempfile.mkdtemp()) / "prompts.jsonl", [{"prompt": text} for text in PROMPTS])
        data = PromptData(str(prompts_file), tokenizer=self.tokenizer, batch_size=GLOBAL_BATCH)
        data.prepare_data()
        data.setup("fit")
        prompts = list(data._prompts("train"))
        world, rank = self.trainer.world_size, self.trainer.global_rank
        collate = LeftPadCollator(self.tokenizer.pad_token_id)
        return DataLoader(prompts[rank::world], batch_size=GLOBAL_BATCH // world, shuffle=False, collate_fn=collate)


def main(model_dir: str, out: str, devices: int, algorithm: str) -> None:
    L.seed_everything(0)
    options = {
        "reward_funcs": ["tests.distributed.rl_run.reward_length"],
        "max_new_tokens": MAX_NEW_TOKENS,
        "optimizer": lambda params: torch.optim.SGD(params, lr=0.5),  # linear in the gradients
        "lr_scheduler": "constant",
    }
    spec = ModelSpec(path=model_dir)
    if algorithm == "grpo":
        module = FixedGRPO(spec, num_generations=2, beta=0.0, loss_aggregation="token", **options)
    else:
        module = FixedPPO(spec, kl_coef=0.2, target_kl=6.0, kl_horizon=10, num_minibatches=1, ppo_epochs=1, **options)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_steps=STEPS,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    trainer.fit(module, datamodule=RankShards(module.tokenizer))
    if trainer.is_global_zero:
        weights = {name: p.detach().clone() for name, p in module.model.named_parameters()}
        torch.save({"weights": weights, "kl_coef": getattr(module, "kl_coef", None)}, out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
