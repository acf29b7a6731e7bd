"""Chunked cross-entropy: the same loss and gradients as plain cross-entropy, with LoRA, full weights and tied
embeddings, on packed and padded batches."""

from __future__ import annotations

import functools

import peft
import pytest
import torch
from transformers import LlamaForCausalLM

from lightning_ft.algorithms import SFT
from lightning_ft.data.collate import PadCollator
from lightning_ft.data.packing import PackingCollator
from lightning_ft.losses import chunked_cross_entropy, cross_entropy
from lightning_ft.model import ModelSpec
from tests.conftest import build_tiny_llama, build_tiny_tokenizer
from tests.helpers import tokenized_examples


@pytest.fixture(scope="module")
def tied_model_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tied-llama")
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_llama(len(tokenizer))
    model.config.tie_word_embeddings = True
    LlamaForCausalLM(model.config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def loss_and_gradients(model_dir, adapter, loss_fn, batch):
    torch.manual_seed(0)
    module = SFT(ModelSpec(path=str(model_dir)), peft=adapter, loss_fn=loss_fn)
    module.configure_model()
    loss_sum, count = module.loss_sum(batch)
    loss_sum.backward()
    return loss_sum.detach(), count, {n: p.grad for n, p in module.model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("adapter", ["full", "lora"])
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_chunked_equals_plain(adapter, tied, packed, tiny_model_dir, tied_model_dir, tiny_tokenizer):
    model_dir = tied_model_dir if tied else tiny_model_dir
    lora = peft.LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)
    examples = tokenized_examples(tiny_tokenizer)
    if packed:
        batch = PackingCollator(tiny_tokenizer.pad_token_id)(
            [{"input_ids": [e["input_ids"] for e in examples], "labels": [e["labels"] for e in examples]}]
        )
    else:
        batch = PadCollator(tiny_tokenizer.pad_token_id)(examples)
    chunked = functools.partial(chunked_cross_entropy, chunk_size=5)  # several chunks, the last one partial
    config = lora if adapter == "lora" else None
    plain_loss, plain_count, plain_grads = loss_and_gradients(model_dir, config, cross_entropy, batch)
    chunk_loss, chunk_count, chunk_grads = loss_and_gradients(model_dir, config, chunked, batch)
    assert plain_count == chunk_count and plain_count > 5
    torch.testing.assert_close(chunk_loss, plain_loss, atol=1e-5, rtol=1e-6)
    assert plain_grads.keys() == chunk_grads.keys()
    for name, gradient in plain_grads.items():
        torch.testing.assert_close(chunk_grads[name], gradient, atol=1e-6, rtol=1e-5, msg=name)
    if tied and adapter == "full":
        assert any("embed_tokens" in name for name in chunk_grads)  # the head's gradient reaches the embedding


def test_chunked_loss_never_projects_untrained_positions():
    """Hidden 2, vocab 3, projection counts the rows it is given: only the 2 trained targets are projected."""
    projected_rows = []
    weight = torch.randn(3, 2)

    def projection(hidden):
        projected_rows.append(hidden.shape[0])
        return hidden @ weight.T

    hidden = torch.randn(1, 6, 2)
    labels = torch.tensor([[-100, -100, -100, 1, -100, 2]])
    loss_sum, count = chunked_cross_entropy(hidden, projection, labels, chunk_size=1)
    assert count == 2 and projected_rows == [1, 1]
    reference, _ = cross_entropy(hidden, lambda h: h @ weight.T, labels)
    torch.testing.assert_close(loss_sum, reference)
