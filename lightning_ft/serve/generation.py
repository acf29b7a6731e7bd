"""Generate the replies to a batch of jobs step by step: jobs with the same decoding options share one left-padded
``generate`` call, each row with its own adapter (peft's ``adapter_names``), length limit, stop tokens and stop
strings; every step's new text is handed out as it is made, so replies stream."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import torch
from peft import PeftModel
from torch import nn
from transformers import StoppingCriteria, StoppingCriteriaList

from lightning_ft.model.generation import without_generation_defaults
from lightning_ft.serve.jobs import GenerationJob
from lightning_ft.serve.models import BASE_ADAPTER, ModelRegistry
from lightning_ft.serve.reply import ReplyText, ReplyUpdate

_DONE = object()


class ReplyTracker(StoppingCriteria):
    """Feeds each step's new token of every row to its `ReplyText`, hands the updates to ``updates`` and tells
    ``generate`` which rows have ended (their later tokens are padding)."""

    def __init__(self, replies: list[ReplyText], updates: queue.Queue) -> None:
        self.replies = replies
        self.updates = updates

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: object) -> torch.BoolTensor:
        tokens = input_ids[:, -1].tolist()
        step = [
            ReplyUpdate() if reply.finished else reply.add(token)
            for reply, token in zip(self.replies, tokens, strict=True)
        ]
        self.updates.put(step)
        return torch.tensor([reply.finished for reply in self.replies], device=input_ids.device)


def generate_steps(
    network: nn.Module, registry: ModelRegistry, jobs: list[GenerationJob]
) -> Iterator[list[ReplyUpdate]]:
    """Per generation step, one `ReplyUpdate` per job (in order); each job's last update carries its finish
    reason and token counts. Groups of jobs with different decoding options run one after another."""
    groups: dict[tuple, list[int]] = {}
    for index, job in enumerate(jobs):
        groups.setdefault(job.batch_key(), []).append(index)
    for indices in groups.values():
        for group_step in _generate_group(network, registry, [jobs[i] for i in indices]):
            step = [ReplyUpdate() for _ in jobs]
            for index, update in zip(indices, group_step, strict=True):
                step[index] = update
            yield step


def _generate_group(
    network: nn.Module, registry: ModelRegistry, jobs: list[GenerationJob]
) -> Iterator[list[ReplyUpdate]]:
    served = [registry.get(job.model) for job in jobs]
    replies = [ReplyText(job, model.tokenizer, model.stop_ids) for job, model in zip(jobs, served, strict=True)]
    updates: queue.Queue = queue.Queue()
    failures: list[BaseException] = []
    kwargs = _generate_kwargs(network, jobs, [model.adapter for model in served])
    kwargs["stopping_criteria"] = StoppingCriteriaList([ReplyTracker(replies, updates)])

    def run() -> None:
        try:
            sampling = jobs[0].sampling
            if not sampling.greedy and sampling.seed is not None:
                torch.manual_seed(sampling.seed)
            with torch.no_grad(), without_generation_defaults(network):
                network.generate(**kwargs)
        except BaseException as error:  # noqa: BLE001 - handed to the caller's thread
            failures.append(error)
        finally:
            updates.put(_DONE)

    thread = threading.Thread(target=run, name="lightning-ft-generate", daemon=True)
    thread.start()
    while (step := updates.get()) is not _DONE:
        if any(update.content or update.finish_reason for update in step):
            yield step
    thread.join()
    if failures:
        raise failures[0]
    unfinished = [reply.finish("length") if not reply.finished else ReplyUpdate() for reply in replies]
    if any(update.finish_reason for update in unfinished):
        yield unfinished


def _generate_kwargs(network: nn.Module, jobs: list[GenerationJob], adapters: list[str | None]) -> dict:
    """Left-padded prompts, the group's decoding options, the longest length asked, and per row its adapter."""
    width = max(len(job.prompt_ids) for job in jobs)
    pad_id = 0
    input_ids = torch.full((len(jobs), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(jobs), width), dtype=torch.long)
    for row, job in enumerate(jobs):
        input_ids[row, width - len(job.prompt_ids) :] = torch.tensor(job.prompt_ids)
        attention_mask[row, width - len(job.prompt_ids) :] = 1
    device = next(network.parameters()).device
    kwargs = {
        "input_ids": input_ids.to(device),
        "attention_mask": attention_mask.to(device),
        "pad_token_id": pad_id,
        **jobs[0].sampling.decoding_kwargs(),
        "max_new_tokens": max(job.sampling.max_new_tokens for job in jobs),
    }
    if isinstance(network, PeftModel):
        kwargs["adapter_names"] = [adapter or BASE_ADAPTER for adapter in adapters]
    return kwargs
