"""Weighted mixing of training sources: draws follow the weights, are reproducible by seed, use each source's items
without repeats until all are used, and work for every data module (SFT with raw-text replay, preference pairs)."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from lightning_ft.data import InstructionData, MixSource, PreferenceData
from lightning_ft.data.mixing import MixedItems, WeightedMixSampler, mix_sources
from tests.conftest import build_tiny_tokenizer
from tests.helpers import write_jsonl

SOURCES = [0] * 3 + [1] * 50 + [2]  # items 0-2 from source 0, 3-52 from source 1, 53 from source 2
WEIGHTS = [0.7, 0.2, 0.1]


def test_shares_over_10000_draws_are_within_sampling_error():
    sampler = WeightedMixSampler(SOURCES, WEIGHTS, seed=5, num_samples=10_000)
    counts = Counter(SOURCES[item] for item in sampler)
    for source, weight in enumerate(WEIGHTS):
        sigma = math.sqrt(10_000 * weight * (1 - weight))  # binomial standard deviation of the count
        assert abs(counts[source] - 10_000 * weight) < 4 * sigma, (source, counts)
    assert sampler.source_counts(epoch=0) == [counts[0], counts[1], counts[2]]


def test_same_seed_same_draws_and_items_cycle_without_repeats():
    first, again = WeightedMixSampler(SOURCES, WEIGHTS, seed=1), WeightedMixSampler(SOURCES, WEIGHTS, seed=1)
    assert list(first) == list(again)
    assert list(WeightedMixSampler(SOURCES, WEIGHTS, seed=1)) != list(WeightedMixSampler(SOURCES, WEIGHTS, seed=9))
    assert list(first) != list(WeightedMixSampler(SOURCES, WEIGHTS, seed=1))  # epoch 1 (first moved on) is new
    order = WeightedMixSampler(SOURCES, WEIGHTS, seed=3, num_samples=2_000).order(epoch=0)
    drawn_from_0 = [item for item in order if SOURCES[item] == 0]
    for start in range(0, len(drawn_from_0) - 2, 3):  # each run of 3 draws from source 0 is a permutation of it
        assert sorted(drawn_from_0[start : start + 3]) == [0, 1, 2]


def test_a_stopped_sampler_resumes_mid_epoch():
    sampler = WeightedMixSampler(SOURCES, WEIGHTS, seed=4)
    full = list(sampler)
    stopped = WeightedMixSampler(SOURCES, WEIGHTS, seed=4)
    iterator = iter(stopped)
    head = [next(iterator) for _ in range(20)]
    resumed = WeightedMixSampler(SOURCES, WEIGHTS, seed=4)
    resumed.load_state_dict(stopped.state_dict())
    assert head + list(resumed) == full


def test_mix_sources_are_checked():
    assert mix_sources("a.jsonl") == [MixSource("a.jsonl")]
    assert mix_sources([{"path": "a.jsonl", "weight": 2, "kind": "text"}]) == [MixSource("a.jsonl", 2, "text")]
    with pytest.raises(ValueError, match=r"train\[1\] \(b\.jsonl\): weight must be a positive number, got 0"):
        mix_sources([{"path": "a.jsonl"}, {"path": "b.jsonl", "weight": 0}])
    with pytest.raises(ValueError, match=r"train\[0\]: expected keys path, weight, kind; got \['paht'\]"):
        mix_sources([{"paht": "a.jsonl"}])
    with pytest.raises(ValueError, match=r"kind must be 'records' or 'text', got 'chat'"):
        mix_sources([{"path": "a.jsonl", "kind": "chat"}])


def test_sft_mix_with_raw_text_replay(tmp_path):
    tokenizer = build_tiny_tokenizer()
    domain = write_jsonl(tmp_path / "domain.jsonl", [{"instruction": f"Say {i}.", "output": "ok"} for i in range(12)])
    general = write_jsonl(tmp_path / "general.jsonl", [{"text": "hello world " * 20} for _ in range(4)])
    data = InstructionData(
        [{"path": str(domain), "weight": 0.75}, {"path": str(general), "weight": 0.25, "kind": "text"}],
        tokenizer=tokenizer,
        max_length=32,
        val_fraction=0.25,
        batch_size=2,
    )
    data.prepare_data()
    data.setup("fit")
    assert data.stats[f"train:{domain}"]["records"] == 9 and data.stats[f"val:{domain}"]["records"] == 3
    assert data.stats[f"train:{general}"]["records"] == 3 and data.stats[f"val:{general}"]["records"] == 1
    loader = data.train_dataloader()
    items = loader.dataset
    assert isinstance(items, MixedItems) and isinstance(loader.sampler, WeightedMixSampler)
    text_blocks = items.datasets[1]
    text_tokens = 3 * len(tokenizer("hello world " * 20)["input_ids"] + [tokenizer.eos_token_id])
    assert len(text_blocks) == -(-text_tokens // 32)
    assert text_blocks[0]["labels"] == text_blocks[0]["input_ids"]
    batch = next(iter(loader))
    assert batch["input_ids"].shape[0] == 2 and "sequence_ids" in batch
    assert len(list(iter(data.val_dataloader()))) > 0
    data.packing = False  # padded batches take the text as flat blocks
    assert set(next(iter(data.train_dataloader()))) == {"input_ids", "attention_mask", "labels"}


def test_preference_mix_and_text_refused(tmp_path):
    tokenizer = build_tiny_tokenizer()
    pairs = [{"prompt": f"Say {i}.", "chosen": "yes", "rejected": "no"} for i in range(6)]
    first, second = write_jsonl(tmp_path / "a.jsonl", pairs), write_jsonl(tmp_path / "b.jsonl", pairs[:2])
    data = PreferenceData([{"path": str(first), "weight": 1}, {"path": str(second), "weight": 3}], tokenizer=tokenizer)
    data.prepare_data()
    data.setup("fit")
    loader = data.train_dataloader()
    assert isinstance(loader.sampler, WeightedMixSampler) and loader.sampler.weights.tolist() == [0.25, 0.75]
    assert "source" not in next(iter(loader))
    text = PreferenceData([{"path": str(first)}, {"path": str(second), "kind": "text"}], tokenizer=tokenizer)
    with pytest.raises(ValueError, match="PreferenceData cannot train raw-text sources"):
        text.prepare_data()
