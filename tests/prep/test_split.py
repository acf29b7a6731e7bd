"""`split` on the real OASST, AlpacaEval and Alpaca files and on small hand-made ones: every record lands exactly once,
groups never span two splits, per-stratum sizes are the largest-remainder ones worked out in the docstrings."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from datasets import Dataset

from lightning_ft.data.sources import DataError
from lightning_ft.prep.split import largest_remainder_sizes, split
from tests.conftest import shared_data
from tests.helpers import read_jsonl, write_jsonl
from tests.prep.fitting import fit_on

SPLITS = ("train", "val", "test")


def split_records(output_dir: Path) -> dict[str, list[dict[str, Any]]]:
    return {
        name: read_jsonl(output_dir / f"{name}.jsonl") for name in SPLITS if (output_dir / f"{name}.jsonl").exists()
    }


def canonical(records: list[dict[str, Any]]) -> Counter[str]:
    return Counter(json.dumps(record, sort_keys=True) for record in records)


def test_no_oasst_tree_spans_two_splits_and_every_pair_lands_once(tmp_path: Path) -> None:
    """212 ranked pairs from 100 trees (1 to 4 pairs each), grouped by ``tree_id``: the splits hold the input's
    records exactly once, their tree sets are disjoint and cover the 100 trees, and the report's counts agree."""
    source = shared_data("preference/oasst_en100_ranked_pairs.jsonl")
    report = split(str(source), str(tmp_path), val=0.1, test=0.1, group_by="tree_id")
    outputs = split_records(tmp_path)
    assert sum(outputs.values(), []) and canonical(sum(outputs.values(), [])) == canonical(read_jsonl(source))
    trees = {name: {record["tree_id"] for record in records} for name, records in outputs.items()}
    assert not (trees["train"] & trees["val"] or trees["train"] & trees["test"] or trees["val"] & trees["test"])
    assert (report["grouped_by"], report["groups"], report["records"]) == (["tree_id"], 100, 212)
    for name, records in outputs.items():
        assert report["splits"][name]["records"] == len(records)
        assert report["splits"][name]["groups"] == len(trees[name])
        assert report["splits"][name]["fraction_obtained"] == round(len(records) / 212, 4)
    assert abs(report["splits"]["val"]["records"] - 21.2) <= 4 and abs(report["splits"]["test"]["records"] - 21.2) <= 4


def test_a_dotted_group_field_reaches_into_the_oasst_trees(tmp_path: Path) -> None:
    """``prompt.message_id`` is each tree's root message, one per record: 100 trees at 0.1 / 0.1 split exactly
    80 / 10 / 10, and the tree ids of the splits are disjoint."""
    source = shared_data("chat/oasst_en100_trees.jsonl")
    report = split(str(source), str(tmp_path), val=0.1, test=0.1, group_by="prompt.message_id")
    outputs = split_records(tmp_path)
    assert {name: len(records) for name, records in outputs.items()} == {"train": 80, "val": 10, "test": 10}
    assert report["layout"] == "records" and report["groups"] == 100
    ids = [record["message_tree_id"] for records in outputs.values() for record in records]
    assert len(set(ids)) == 100 and canonical(sum(outputs.values(), [])) == canonical(read_jsonl(source))


def test_stratified_sizes_hold_per_stratum(tmp_path: Path) -> None:
    """AlpacaEval by ``dataset`` at 0.8 / 0.1 / 0.1, largest remainder per stratum (ties: train, val, test):
    selfinstruct 252: 201.6 / 25.2 / 25.2 -> 201 / 25 / 25, one left to train -> 202 / 25 / 25;
    oasst 188: 150.4 / 18.8 / 18.8 -> 150 / 18 / 18, two left to val and test -> 150 / 19 / 19;
    koala 156: 124.8 / 15.6 / 15.6 -> 124 / 15 / 15, two left to train, then val (tie with test) -> 125 / 16 / 15;
    helpful_base 129: 103.2 / 12.9 / 12.9 -> 103 / 13 / 13; vicuna 80: 64 / 8 / 8 exactly."""
    source = shared_data("eval/alpaca_eval_805.jsonl")
    report = split(str(source), str(tmp_path), val=0.1, test=0.1, stratify_by="dataset")
    expected = {
        "selfinstruct": (202, 25, 25),
        "oasst": (150, 19, 19),
        "koala": (125, 16, 15),
        "helpful_base": (103, 13, 13),
        "vicuna": (64, 8, 8),
    }
    outputs = split_records(tmp_path)
    for stratum, sizes in expected.items():
        assert tuple(report["strata"][stratum][name] for name in SPLITS) == sizes
        assert tuple(sum(r["dataset"] == stratum for r in outputs[name]) for name in SPLITS) == sizes
    assert {name: len(records) for name, records in outputs.items()} == {"train": 644, "val": 81, "test": 80}


def test_the_same_seed_gives_the_same_split(tmp_path: Path) -> None:
    source = shared_data("sft_alpaca/stanford_alpaca_first200.jsonl")
    for run, seed in (("a", 3), ("b", 3), ("c", 4)):
        split(str(source), str(tmp_path / run), val=0.1, test=0.1, seed=seed)
    for name in SPLITS:
        assert (tmp_path / "a" / f"{name}.jsonl").read_bytes() == (tmp_path / "b" / f"{name}.jsonl").read_bytes()
    assert (tmp_path / "a" / "val.jsonl").read_bytes() != (tmp_path / "c" / "val.jsonl").read_bytes()


def test_augmented_copies_stay_with_their_original(tmp_path: Path) -> None:
    """12 originals, each with 2 augmented copies sharing its ``augment_group`` (36 records), and 12 records never
    augmented (no such field): 24 units. Each family lands whole in one split."""
    records = []
    for family in range(12):
        records += [
            {"instruction": f"task {family} v{copy}", "output": "x", "augment_group": f"f{family}"} for copy in range(3)
        ]
        records.append({"instruction": f"plain {family}", "output": "y"})
    source = write_jsonl(tmp_path / "augmented.jsonl", records)
    report = split(str(source), str(tmp_path / "out"), val=0.2, test=0.2, seed=1)
    assert (report["grouped_by"], report["groups"], report["records"]) == (["augment_group"], 24, 48)
    side_of_family: dict[str, set[str]] = defaultdict(set)
    for name, split_part in split_records(tmp_path / "out").items():
        for record in split_part:
            if record.get("augment_group"):
                side_of_family[record["augment_group"]].add(name)
    assert len(side_of_family) == 12 and all(len(sides) == 1 for sides in side_of_family.values())


def test_group_by_and_augment_group_join_transitively(tmp_path: Path) -> None:
    """Record 0 (tree a) and record 1 (tree b) are one augmented family, so trees a and b are one unit, with
    record 2 (tree b): 3 records in one unit; records 3..5 (trees c, d, e) are units of their own."""
    rows = [("a", "f1"), ("b", "f1"), ("b", None), ("c", None), ("d", None), ("e", None)]
    source = write_jsonl(
        tmp_path / "trees.jsonl",
        [{"text": f"t{i}", "tree": tree, "augment_group": family} for i, (tree, family) in enumerate(rows)],
    )
    for seed in range(5):
        report = split(str(source), str(tmp_path / f"s{seed}"), val=0.2, test=0.2, group_by="tree", seed=seed)
        assert (report["grouped_by"], report["groups"]) == (["tree", "augment_group"], 4)
        texts = [{record["text"] for record in part} for part in split_records(tmp_path / f"s{seed}").values()]
        assert [bool(part & {"t0", "t1", "t2"}) for part in texts].count(True) == 1


def test_a_group_mixing_strata_counts_under_its_most_common_value(tmp_path: Path) -> None:
    """Groups g0..g9 of two records; g0 holds one ``en`` and one ``de`` record (a tie: sorted first, ``de``), g1
    two ``de`` records, the rest two ``en``: strata de = 2 groups (4 records), en = 8 groups (16 records).
    At 0.5 / 0.25 / 0.25, de's sizes are 2 / 1 / 1 records, met in whole groups of 2: the first group to train (all
    splits empty: ties go to train), the second to val (now furthest below its size) -> 2 / 2 / 0. en's sizes
    8 / 4 / 4 are met exactly (4 / 2 / 2 groups)."""
    records = []
    for group in range(10):
        langs = ["en", "de"] if group == 0 else ["de", "de"] if group == 1 else ["en", "en"]
        records += [{"text": f"g{group}-{i}", "group": f"g{group}", "lang": lang} for i, lang in enumerate(langs)]
    source = write_jsonl(tmp_path / "mixed.jsonl", records)
    report = split(str(source), str(tmp_path / "out"), val=0.25, test=0.25, group_by="group", stratify_by="lang")
    assert report["groups_mixing_strata"] == 1
    assert report["strata"]["en"] == {"records": 16, "train": 8, "val": 4, "test": 4}
    assert report["strata"]["de"] == {"records": 4, "train": 2, "val": 2, "test": 0}


def test_zero_fraction_writes_no_file_and_file_types_are_kept(tmp_path: Path) -> None:
    """20 records, val 0.25, test 0: train 15, val 5, no test file; parquet in, parquet out."""
    source = tmp_path / "data.parquet"
    records = [{"text": f"record {i}"} for i in range(20)]
    Dataset.from_list(records).to_parquet(str(source))
    report = split(str(source), str(tmp_path / "out"), val=0.25, test=0)
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [
        "split.report.json",
        "train.parquet",
        "val.parquet",
    ]
    assert report["splits"]["test"] == {
        "file": None,
        "records": 0,
        "groups": 0,
        "fraction_requested": 0.0,
        "fraction_obtained": 0.0,
    }
    parts = [Dataset.from_parquet(str(tmp_path / "out" / f"{name}.parquet")).to_list() for name in ("train", "val")]
    assert [len(part) for part in parts] == [15, 5]
    assert sorted(parts[0] + parts[1], key=lambda r: int(r["text"].split()[1])) == records


def test_largest_remainder_sizes() -> None:
    """805 at 0.9 / 0.05 / 0.05: 724.5 / 40.25 / 40.25 -> 724 / 40 / 40, one left to train; 10 at the same:
    9 / 0.5 / 0.5 -> 9 / 0 / 0, one left to val (tie with test); 3 at 0.6 / 0.2 / 0.2: 1.8 / 0.6 / 0.6 -> 2 / 1 / 0."""
    fractions = {"train": Fraction(9, 10), "val": Fraction(1, 20), "test": Fraction(1, 20)}
    assert largest_remainder_sizes(805, fractions) == {"train": 725, "val": 40, "test": 40}
    assert largest_remainder_sizes(10, fractions) == {"train": 9, "val": 1, "test": 0}
    fractions = {"train": Fraction(3, 5), "val": Fraction(1, 5), "test": Fraction(1, 5)}
    assert largest_remainder_sizes(3, fractions) == {"train": 2, "val": 1, "test": 0}


def test_the_train_split_trains(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Stanford Alpaca's first 200 at 0.05 / 0.05: 180 / 10 / 10, and `fit` runs on the train split."""
    report = split(str(shared_data("sft_alpaca/stanford_alpaca_first200.jsonl")), str(tmp_path / "out"))
    assert [report["splits"][name]["records"] for name in SPLITS] == [180, 10, 10]
    export = fit_on(tmp_path / "out" / "train.jsonl", "alpaca", tiny_model_dir, tmp_path / "fit")
    assert (export / "adapter_model.safetensors").exists()


@pytest.mark.parametrize(("val", "test"), [(-0.1, 0.1), (0.1, -0.01), (0.5, 0.5), (0.7, 0.4), (1.0, 0.0)])
def test_bad_fractions_are_refused(tmp_path: Path, val: float, test: float) -> None:
    source = write_jsonl(tmp_path / "data.jsonl", [{"text": "a"}, {"text": "b"}])
    with pytest.raises(ValueError, match=r"val and test must each be in \[0, 1\) with val \+ test < 1"):
        split(str(source), str(tmp_path / "out"), val=val, test=test)
    assert not (tmp_path / "out").exists()


def test_a_missing_group_value_names_the_line_and_field(tmp_path: Path) -> None:
    source = write_jsonl(
        tmp_path / "pairs.jsonl", [{"text": "a", "tree_id": "t1"}, {"text": "b", "tree_id": None}, {"text": "c"}]
    )
    with pytest.raises(DataError, match=rf"^{re.escape(str(source))}:2: missing field 'tree_id'$"):
        split(str(source), str(tmp_path / "out"), group_by="tree_id")
    with pytest.raises(
        DataError, match=rf"^{re.escape(str(source))}:1: missing field 'message_tree_id' \(the records have"
    ):
        split(str(source), str(tmp_path / "out"), group_by="message_tree_id")
    with pytest.raises(DataError, match=rf"^{re.escape(str(source))}:1: missing field 'tree_id.root'$"):
        split(str(source), str(tmp_path / "out"), group_by="tree_id.root")
