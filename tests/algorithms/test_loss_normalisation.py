"""Gradient accumulation with token normalisation equals one big batch of the same tokens."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from lightning_ft.algorithms import SFT
from lightning_ft.data.collate import PadCollator
from lightning_ft.model import ModelSpec
from tests.helpers import short_fit, tokenized_examples


def sgd(params):
    return torch.optim.SGD(params, lr=1.0)


def one_step(model_dir, batches, accumulate: int) -> tuple[dict[str, torch.Tensor], float]:
    torch.manual_seed(0)
    module = SFT(ModelSpec(path=str(model_dir)), optimizer=sgd, lr_scheduler="constant")
    loader = DataLoader(batches, batch_size=None)
    recorder = short_fit(module, loader, steps=1, accumulate_grad_batches=accumulate)
    return {n: p.detach().clone() for n, p in module.model.named_parameters()}, recorder.losses[0]


def test_accumulated_micro_batches_equal_one_big_batch(tiny_model_dir, tiny_tokenizer):
    examples = tokenized_examples(tiny_tokenizer)
    collate = PadCollator(tiny_tokenizer.pad_token_id)
    small, large = examples[1:2], [examples[0], examples[2]]  # micro-batches with very different token counts
    tokens = [sum(sum(t != -100 for t in e["labels"][1:]) for e in part) for part in (small, large)]
    assert tokens[0] * 2 < tokens[1]

    accumulated, accumulated_loss = one_step(tiny_model_dir, [collate(small), collate(large)], accumulate=2)
    big, big_loss = one_step(tiny_model_dir, [collate(small + large)], accumulate=1)

    assert abs(accumulated_loss - big_loss) < 1e-5
    for name, value in big.items():
        torch.testing.assert_close(accumulated[name], value, atol=1e-6, rtol=1e-5, msg=name)


def test_mean_of_micro_batch_means_would_differ(tiny_model_dir, tiny_tokenizer):
    """Guards the test above: with these micro-batches the naive normalisation gives a different loss."""
    examples = tokenized_examples(tiny_tokenizer)
    collate = PadCollator(tiny_tokenizer.pad_token_id)
    module = SFT(ModelSpec(path=str(tiny_model_dir)))
    module.configure_model()
    with torch.no_grad():
        parts = [module.loss_sum(collate(part)) for part in (examples[1:2], [examples[0], examples[2]])]
    mean_of_means = sum(s / n for s, n in parts) / 2
    token_mean = sum(s for s, _ in parts) / sum(n for _, n in parts)
    assert abs(float(mean_of_means - token_mean)) > 1e-3
