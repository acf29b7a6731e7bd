"""From per-item results to the report: each metric's value, and with a baseline the paired difference and its
bootstrap confidence interval, over the items both models were scored on (paired by item id)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from lightning_ft.eval.bootstrap import paired_bootstrap
from lightning_ft.eval.items import EvalItem
from lightning_ft.eval.metrics import GENERATION_METRICS
from lightning_ft.eval.scoring import SetScores

# item id -> (numerator, denominator); a metric over items is sum(numerators) / sum(denominators), then transformed.
ItemValues = dict[str, tuple[float, float]]
Transform = Callable[[float], float]


def _identity(value: float) -> float:
    return value


def _exp(value: float) -> float:
    return math.exp(value) if value < 700 else math.inf


def item_values(scores: SetScores) -> dict[str, tuple[ItemValues, Transform]]:
    """Every metric the scores hold, as per-item (numerator, denominator) pairs and the transform of their ratio."""
    metrics: dict[str, tuple[ItemValues, Transform]] = {}
    for name in GENERATION_METRICS:
        values = {item: (row[name], 1.0) for item, row in scores.scores.items() if name in row}
        if values:
            metrics[name] = (values, _identity)
    if scores.losses:
        losses = {item: (row["loss_sum"], float(row["tokens"])) for item, row in scores.losses.items()}
        metrics["mean_token_loss"] = (losses, _identity)
        metrics["perplexity"] = (losses, _exp)
    for name, key in (("choice_accuracy", "acc"), ("choice_accuracy_norm", "acc_norm")):
        if scores.choices:
            metrics[name] = ({item: (float(row[key]), 1.0) for item, row in scores.choices.items()}, _identity)
    judged = {item: (float(v["score"]), 1.0) for item, v in scores.judge.items() if v.get("status") == "ok"}
    if judged:
        metrics["judge_score"] = (judged, _identity)
    return metrics


def ratio(values: ItemValues, ids: list[str], transform: Transform) -> float:
    numerator = sum(values[i][0] for i in ids)
    denominator = sum(values[i][1] for i in ids)
    return transform(numerator / denominator) if denominator else math.nan


def compare_metric(
    model: tuple[ItemValues, Transform], baseline: tuple[ItemValues, Transform], samples: int, seed: int
) -> dict[str, Any]:
    """Model minus baseline on the items both were scored on, with a paired bootstrap 95% interval."""
    (values_a, transform), (values_b, _) = model, baseline
    paired = sorted(set(values_a) & set(values_b))
    if not paired:
        return {"paired_items": 0}

    def statistic(values: ItemValues) -> Callable[[np.ndarray], float]:
        numerators = np.array([values[i][0] for i in paired])
        denominators = np.array([values[i][1] for i in paired])
        return lambda indices: transform(float(numerators[indices].sum() / denominators[indices].sum()))

    interval = paired_bootstrap(statistic(values_a), statistic(values_b), len(paired), samples, seed=seed)
    return {
        "paired_items": len(paired),
        "difference": interval["difference"],
        "ci95": [interval["low"], interval["high"]],
        "p_value": interval["p_value"],
    }


def set_report(
    items: list[EvalItem],
    results: dict[str, SetScores],
    samples: int,
    seed: int,
) -> dict[str, Any]:
    """The report of one set: counts, each metric per model (``results`` is keyed by role: ``model``,
    ``baseline``), and the model-minus-baseline comparison when there is a baseline."""
    open_items = [item for item in items if item.choices is None]
    counts = {
        "items": len(items),
        "open_ended": len(open_items),
        "multiple_choice": len(items) - len(open_items),
        "with_reference": sum(item.reference is not None for item in open_items),
    }
    per_role = {role: item_values(scores) for role, scores in results.items()}
    metrics: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(name for values in per_role.values() for name in values):
        entry: dict[str, Any] = {}
        for role, values in per_role.items():
            if name in values:
                entry[role] = ratio(values[name][0], list(values[name][0]), values[name][1])
                entry[f"{role}_items"] = len(values[name][0])
        model, baseline = per_role.get("model", {}), per_role.get("baseline", {})
        if name in model and name in baseline:
            entry.update(compare_metric(model[name], baseline[name], samples, seed))
        metrics[name] = entry
    truncated = {
        role: sum(row["truncated"] for row in scores.losses.values())
        for role, scores in results.items()
        if scores.losses
    }
    skipped = {"no_reference": counts["open_ended"] - counts["with_reference"]}
    return {"counts": counts, "skipped": skipped, "truncated_references": truncated, "metrics": metrics}


def format_table(report: dict[str, Any]) -> str:
    """A short text table: one row per set and metric, model vs baseline with the difference's interval."""
    lines = []
    has_baseline = "baseline" in report["models"]
    header = f"{'set':<16} {'metric':<22} {'model':>10}"
    if has_baseline:
        header += f" {'baseline':>10} {'diff':>10}  {'95% CI':<22}"
    lines.append(header)
    for set_name, section in report["sets"].items():
        for metric, entry in section["metrics"].items():
            row = f"{set_name[:16]:<16} {metric[:22]:<22} {_number(entry.get('model')):>10}"
            if has_baseline:
                interval = entry.get("ci95")
                shown = f"[{_number(interval[0])}, {_number(interval[1])}]" if interval else ""
                row += f" {_number(entry.get('baseline')):>10} {_number(entry.get('difference')):>10}  {shown:<22}"
            lines.append(row)
        pairwise = section.get("pairwise_judge")
        if pairwise and pairwise.get("win_rate") is not None:
            interval = pairwise.get("ci95") or [math.nan, math.nan]
            lines.append(
                f"{set_name[:16]:<16} {'judge win rate':<22} {_number(pairwise['win_rate']):>10}  "
                f"[{_number(interval[0])}, {_number(interval[1])}] (0.5 = no preference)"
            )
    return "\n".join(lines)


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    return f"{value:.4f}"
