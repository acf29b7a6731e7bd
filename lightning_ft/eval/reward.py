"""Score preference pairs with a reward model export: pairwise accuracy and margins, per pair and overall."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torchmetrics import MeanMetric

from lightning_ft.data.preference import PreferenceData
from lightning_ft.data.preference_formats import PreferenceFormat
from lightning_ft.errors import UsageError
from lightning_ft.model.reward_model import load_reward_model


@torch.no_grad()
def score_pairs(
    model: str | Path,
    data: str,
    format: PreferenceFormat = "pairs",
    fields: dict[str, str] | None = None,
    max_length: int | None = None,
    add_special_tokens: bool | None = None,
    batch_size: int = 16,
    output: str | Path | None = None,
) -> dict[str, Any]:
    """Score preference pairs with a reward model: pairwise accuracy and mean margin (``lightning-ft score``).

    ``model`` is a `RewardModel` export or any one-output ``AutoModelForSequenceClassification`` directory.

    Inputs are built as in training: the chat template saved with the tokenizer, and ``max_length`` and
    ``add_special_tokens`` from the export's manifest unless given (else at most 1024 tokens, within the model's
    limit). With ``output``, one JSON line per pair: ``{"record", "chosen", "rejected"}``.

    Args:
        model: A reward-model export (``.../hf/final`` of a RewardModel run) or a one-output sequence classifier.
        data: Preference pairs (.jsonl/.json/.parquet/.csv or hub id).
        format: ``pairs``, ``hh_rlhf`` or ``sharegpt``.
        fields: Rename fields, as in `PreferenceData`.
        max_length: Longest prompt + response.
        add_special_tokens: Wrap inputs in the tokenizer's special tokens.
        batch_size: Pairs per batch.
        output: Write one JSON line per pair here.

    Returns:
        ``{"pairs", "accuracy", "mean_margin", "dropped"}``: accuracy is the fraction of pairs whose chosen reward is
        higher; ``dropped`` counts records left out (identical responses, too long under ``overlong: drop``).
    """
    if format == "kto":
        raise UsageError("score scores preference pairs; the kto format holds unpaired examples")
    network, tokenizer, max_length, add_special_tokens = load_reward_model(model, max_length, add_special_tokens)
    pairs = PreferenceData(
        data,
        format=format,
        fields=fields,
        max_length=max_length,
        add_special_tokens=add_special_tokens,
        eval_batch_size=batch_size,
        tokenizer=tokenizer,
    )
    pairs.prepare_data()
    pairs.setup("predict")
    accuracy, margin = MeanMetric(), MeanMetric()
    lines = []
    for batch in pairs.predict_dataloader():
        rewards = network(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
        chosen, rejected = rewards.float().chunk(2)
        accuracy.update((chosen > rejected).float())
        margin.update(chosen - rejected)
        lines += [
            {"record": int(record), "chosen": float(c), "rejected": float(r)}
            for record, c, r in zip(batch["record"], chosen, rejected, strict=True)
        ]
    if output is not None:
        Path(output).write_text("".join(json.dumps(line) + "\n" for line in lines))
    dropped = sum(len(records) for records in pairs.dropped["train"].values())
    return {
        "pairs": len(lines),
        "accuracy": float(accuracy.compute()),
        "mean_margin": float(margin.compute()),
        "dropped": dropped,
    }
