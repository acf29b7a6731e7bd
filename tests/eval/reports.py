"""Checks that a `lightning-ft eval` report says what its items.jsonl holds."""

from __future__ import annotations

import math
from typing import Any

import pytest

PER_ITEM = {"exact_match", "bleu", "rouge_l", "chrf"}


def check_report_matches_items(report: dict[str, Any], items: list[dict[str, Any]], roles: tuple[str, ...]) -> None:
    """Every metric of every set equals the value recomputed from the per-item lines: means of per-item scores,
    token-weighted loss, its exponential, and model minus baseline over the items both were scored on."""
    for set_name, section in report["sets"].items():
        lines = [item for item in items if item["set"] == set_name]
        assert section["counts"]["items"] == len(lines)
        assert section["counts"]["with_reference"] == sum("reference" in line for line in lines)
        for role in roles:
            for metric in PER_ITEM & set(section["metrics"]):
                scores = [line[role]["scores"][metric] for line in lines if "scores" in line[role]]
                assert section["metrics"][metric][role] == pytest.approx(sum(scores) / len(scores))
                assert section["metrics"][metric][f"{role}_items"] == len(scores)
            if "mean_token_loss" in section["metrics"]:
                losses = [line[role]["reference_loss"] for line in lines if "reference_loss" in line[role]]
                mean_loss = sum(loss["loss_sum"] for loss in losses) / sum(loss["tokens"] for loss in losses)
                assert section["metrics"]["mean_token_loss"][role] == pytest.approx(mean_loss)
                assert section["metrics"]["perplexity"][role] == pytest.approx(math.exp(mean_loss))
        if "baseline" in roles:
            for metric, entry in section["metrics"].items():
                assert entry["difference"] == pytest.approx(entry["model"] - entry["baseline"]), metric
                low, high = entry["ci95"]
                assert low - 1e-9 <= entry["difference"] <= high + 1e-9, metric
