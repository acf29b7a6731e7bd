"""End to end on real data and a real backbone: the MiniLM reward recipe trains on hh-rlhf pairs and scores held-out
pairs clearly above chance; the export, scored by `lightning-ft score`, agrees with the validation metric."""

from __future__ import annotations

import json

import pytest

from lightning_ft.cli import main
from tests.conftest import shared_data
from tests.helpers import identical_pairs, recipe_cli

pytestmark = pytest.mark.slow
TRAIN_PAIRS = 400  # hh-rlhf records 0-399
HELD_OUT = 350  # records 2004-2353
ASSISTANT = "\n\nAssistant:"


def empty_responses(records: list[dict]) -> list[int]:
    """Indices of the hh-rlhf records whose chosen or rejected transcript ends on an empty assistant turn: no response
    token to score (hh-rlhf transcripts share everything up to their last assistant turn)."""
    return [
        index
        for index, record in enumerate(records)
        if any(not record[side].rpartition(ASSISTANT)[2].strip() for side in ("chosen", "rejected"))
    ]


def test_minilm_reward_model_beats_chance_on_held_out_hh_rlhf(minilm_dir, tmp_path, capsys):
    records = shared_data("preference/hh_rlhf_helpful_base_test.jsonl").read_text().splitlines(keepends=True)
    train, held_out = tmp_path / "train.jsonl", tmp_path / "held_out.jsonl"
    train.write_text("".join(records[:TRAIN_PAIRS]))
    held_out.write_text("".join(records[-HELD_OUT:]))
    cli = recipe_cli("rm/minilm_hh_rlhf.yaml", minilm_dir, train, held_out, tmp_path / "run")
    before = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    after = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    assert cli.datamodule.stats["val"]["records"] == HELD_OUT
    # identical responses (record 2168) and an empty one (record 2063: no response tokens) are reported, not scored
    held_out_records = [json.loads(line) for line in records[-HELD_OUT:]]
    identical = identical_pairs(held_out_records)
    empty = [index for index in empty_responses(held_out_records) if index not in identical]
    assert identical and empty  # the held-out slice exercises both
    assert cli.datamodule.dropped["val"] == {"dropped_identical": identical, "dropped_no_trainable": empty}
    scored = HELD_OUT - len(identical) - len(empty)
    with capsys.disabled():  # the figure for the record: pytest -s shows it
        print(
            f"\nheld-out pairwise accuracy ({scored} pairs): "
            f"{before['val/accuracy']:.3f} -> {after['val/accuracy']:.3f}"
        )
    assert after["val/accuracy"] >= 0.56
    assert after["val/accuracy"] > before["val/accuracy"] + 0.04

    export = next((tmp_path / "run").rglob("hf/final"))
    main(["score", "--model", str(export), "--data", str(held_out), "--format", "hh_rlhf"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["pairs"] == scored and summary["dropped"] == len(identical) + len(empty)
    assert summary["accuracy"] == pytest.approx(after["val/accuracy"], abs=1e-6)
