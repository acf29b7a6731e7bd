"""`leak_check` on the overlaps ../shared/data/README.md documents, each count checked against an independent brute
force (the training side's n-grams in one set, where the tool indexes the eval side), and on small hand-made files
whose shares are worked out in the docstrings."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from datasets import Dataset

from lightning_ft.prep.leak import leak_check
from lightning_ft.prep.records import normalise
from tests.conftest import shared_data
from tests.helpers import read_jsonl, write_jsonl
from tests.prep.fitting import fit_on

HH_HUMAN_TURN = re.compile(r"\n\nHuman: (.*?)(?=\n\nAssistant: |\n\nHuman: |\Z)", re.S)


def alpaca_text(record: dict[str, Any]) -> str:
    return " ".join([record["instruction"], record.get("input") or "", record.get("output") or ""])


def alpaca_prompt(record: dict[str, Any]) -> str:
    return " ".join([record["instruction"], record.get("input") or ""])


def hh_human_turns(record: dict[str, Any]) -> list[str]:
    return HH_HUMAN_TURN.findall(record["chosen"])


def brute_force_ngram_hits(train_texts: list[str], eval_prompts: list[str], n: int = 13, min_words: int = 8) -> set:
    """Eval items (by position) with an n-gram in some training text, or, at min_words..n-1 words, found whole."""
    train_words = [normalise(text).split() for text in train_texts]
    train_grams = {" ".join(words[i : i + n]) for words in train_words for i in range(len(words) - n + 1)}
    corpus = "\n".join(f" {' '.join(words)} " for words in train_words)
    hits = set()
    for position, prompt in enumerate(eval_prompts):
        words = normalise(prompt).split()
        if len(words) >= n and any(" ".join(words[i : i + n]) in train_grams for i in range(len(words) - n + 1)):
            hits.add(position)
        elif min_words <= len(words) < n and f" {' '.join(words)} " in corpus:
            hits.add(position)
    return hits


def contaminated_lines(report: dict[str, Any], eval_path: Path, kind: str | None = None) -> set[int]:
    """1-based JSONL lines of the contaminated items of one eval file (the files have no blank lines)."""
    return {
        entry["item"] + 1
        for entry in report["contaminated"]
        if entry["eval"] == str(eval_path) and (kind is None or entry["kind"] == kind)
    }


@pytest.fixture(scope="module")
def alpaca_eval_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """AlpacaEval as the training file, Vicuna-bench and hh-rlhf helpful-base test as evals, with --drop."""
    out = tmp_path_factory.mktemp("leak") / "alpaca_eval_clean.jsonl"
    paths = {
        "train": shared_data("eval/alpaca_eval_805.jsonl"),
        "vicuna": shared_data("eval/vicuna_bench_questions.jsonl"),
        "hh": shared_data("preference/hh_rlhf_helpful_base_test.jsonl"),
    }
    report = leak_check(str(paths["train"]), [str(paths["vicuna"]), str(paths["hh"])], drop=str(out))
    return {"report": report, "paths": paths, "out": out}


def test_every_vicuna_bench_prompt_is_in_alpaca_eval(alpaca_eval_run: dict[str, Any]) -> None:
    """README: AlpacaEval contains all 80 Vicuna-bench prompts; each is matched exactly, by the AlpacaEval record of
    dataset ``vicuna`` with the same normalised instruction."""
    report, paths = alpaca_eval_run["report"], alpaca_eval_run["paths"]
    train, vicuna = read_jsonl(paths["train"]), read_jsonl(paths["vicuna"])
    assert report["evals"][str(paths["vicuna"])] == {
        "layout": "turns",
        "items": 80,
        "contaminated": 80,
        "exact": 80,
        "ngram_only": 0,
        "exact_match_only_checked": 0,
    }
    instructions = {normalise(record["instruction"]) for record in train}
    assert sum(normalise(record["turns"][0]) in instructions for record in vicuna) == 80  # brute force
    for entry in report["contaminated"]:
        if entry["eval"] == str(paths["vicuna"]):
            (match,) = [match for match in entry["training"] if match["kind"] == "exact"]
            assert train[match["record"]]["dataset"] == "vicuna"
            assert match["where"] == f"{paths['train']}:{match['record'] + 1}"


def test_hh_rlhf_first_turns_in_alpaca_eval_are_exact_matches(alpaca_eval_run: dict[str, Any]) -> None:
    """README: 129 first-turn prompts of the hh-rlhf helpful-base test are AlpacaEval prompts. Some prompts open
    several pairs, so 135 pairs (items) match exactly, 129 distinct prompts, all of AlpacaEval's 129 ``helpful_base``
    records."""
    report, paths = alpaca_eval_run["report"], alpaca_eval_run["paths"]
    train, hh = read_jsonl(paths["train"]), read_jsonl(paths["hh"])
    instructions = {normalise(record["instruction"]) for record in train}
    first_turns = [normalise(hh_human_turns(record)[0]) for record in hh]
    expected = {line for line, turn in enumerate(first_turns, start=1) if turn in instructions}
    assert len(expected) == 135 and len({first_turns[line - 1] for line in expected}) == 129
    assert contaminated_lines(report, paths["hh"], kind="exact") == expected
    exact_records = {
        match["record"]
        for entry in report["contaminated"]
        if entry["eval"] == str(paths["hh"])
        for match in entry["training"]
        if match["kind"] == "exact"
    }
    assert Counter(train[record]["dataset"] for record in exact_records) == {"helpful_base": 129}


def test_hh_rlhf_ngram_only_items_share_the_dinner_guests_template(alpaca_eval_run: dict[str, Any]) -> None:
    """Beyond the exact matches, 48 hh-rlhf items share 13-grams with AlpacaEval: all open with the recipe-request
    template ("I like to host guests at my home from time to time, ...") that 15 AlpacaEval prompts use with other
    dishes, so each matches those 15 records, with a share below 1. The brute force finds the same 135 + 48 items."""
    report, paths = alpaca_eval_run["report"], alpaca_eval_run["paths"]
    train, hh = read_jsonl(paths["train"]), read_jsonl(paths["hh"])
    counts = report["evals"][str(paths["hh"])]
    assert (counts["items"], counts["contaminated"], counts["exact"], counts["ngram_only"]) == (2354, 183, 135, 48)
    ngram_only = [
        entry for entry in report["contaminated"] if entry["eval"] == str(paths["hh"]) and entry["kind"] == "ngram"
    ]
    assert all(
        entry["snippet"].startswith("I like to host guests at my home from time to time") for entry in ngram_only
    )
    assert {entry["training_records"] for entry in ngram_only} == {15}
    assert all(0 < entry["ngram_share"] < 1 for entry in ngram_only)
    brute_force = brute_force_ngram_hits([alpaca_text(r) for r in train], [" ".join(hh_human_turns(r)) for r in hh])
    exact = contaminated_lines(report, paths["hh"], kind="exact")
    assert contaminated_lines(report, paths["hh"]) == {position + 1 for position in brute_force} | exact


def test_drop_writes_alpaca_eval_without_the_leaking_records(alpaca_eval_run: dict[str, Any]) -> None:
    """The dropped records are exactly AlpacaEval's 80 ``vicuna`` and 129 ``helpful_base`` records (the 48 template
    items overlap helpful_base records only): 805 - 209 = 596 kept, in file order, and checking the output again
    finds nothing."""
    report, paths, out = alpaca_eval_run["report"], alpaca_eval_run["paths"], alpaca_eval_run["out"]
    train = read_jsonl(paths["train"])
    dropped = report["dropped"]
    assert (dropped["count"], dropped["kept"], dropped["output"]) == (209, 596, str(out))
    assert Counter(train[entry["record"]]["dataset"] for entry in dropped["records"]) == {
        "vicuna": 80,
        "helpful_base": 129,
    }
    dropped_numbers = {entry["record"] for entry in dropped["records"]}
    assert read_jsonl(out) == [record for number, record in enumerate(train) if number not in dropped_numbers]
    assert json.loads(Path(f"{out}.report.json").read_text())["dropped"]["count"] == 209
    again = leak_check(str(out), [str(paths["vicuna"]), str(paths["hh"])], report=str(out.with_suffix(".again.json")))
    assert again["contaminated"] == []


def test_the_alpaca_pair_shares_three_instructions_and_the_dropped_file_trains(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """README: stanford_alpaca_first200 and alpaca_gpt4_en_demo share 3 instructions (lines 46, 104, 169 of the
    first, same inputs); nothing else overlaps. Line 104 ("Generate a password of 8 characters.", 6 words) is
    checked by exact match only; the other two also match whole. Alpaca-GPT4 is the training side: 996 kept."""
    train_path, eval_path = (
        shared_data("sft_alpaca/alpaca_gpt4_en_demo.jsonl"),
        shared_data("sft_alpaca/stanford_alpaca_first200.jsonl"),
    )
    out = tmp_path / "alpaca_gpt4_clean.jsonl"
    report = leak_check(str(train_path), [str(eval_path)], drop=str(out))
    train, evals = read_jsonl(train_path), read_jsonl(eval_path)
    prompts = {normalise(alpaca_prompt(record)) for record in train}
    expected = {line for line, record in enumerate(evals, start=1) if normalise(alpaca_prompt(record)) in prompts}
    assert expected == {46, 104, 169}
    assert brute_force_ngram_hits([alpaca_text(r) for r in train], [alpaca_prompt(r) for r in evals]) == {45, 168}
    assert contaminated_lines(report, eval_path, kind="exact") == contaminated_lines(report, eval_path) == expected
    assert (report["dropped"]["count"], report["dropped"]["kept"]) == (3, 996)
    assert len(read_jsonl(out)) == 996
    export = fit_on(out, "alpaca", tiny_model_dir, tmp_path / "fit")
    assert (export / "adapter_model.safetensors").exists()


def test_gsm8k_train_and_test_share_no_question_but_three_templates(tmp_path: Path) -> None:
    """README: GSM8K train and test are disjoint, and no test question is a training question. Three test problems
    are templated twins of training problems with other numbers, which 13-grams find (the brute force agrees):
    line 582 (two movies, 1 h 30 min), 603 (3 hours at the same rate, 2 training twins), 633 (snowflake stamps)."""
    train_path, eval_path = shared_data("sft_alpaca/gsm8k_train_alpaca.jsonl"), shared_data("eval/gsm8k_test.jsonl")
    report = leak_check(str(train_path), [str(eval_path)], report=str(tmp_path / "gsm8k.json"))
    train, evals = read_jsonl(train_path), read_jsonl(eval_path)
    questions = {normalise(record["instruction"]) for record in train}
    assert not any(normalise(record["question"]) in questions for record in evals)
    counts = report["evals"][str(eval_path)]
    assert (counts["items"], counts["exact"], counts["ngram_only"]) == (1319, 0, 3)
    assert contaminated_lines(report, eval_path) == {582, 603, 633}
    brute_force = brute_force_ngram_hits([alpaca_text(r) for r in train], [r["question"] for r in evals])
    assert {position + 1 for position in brute_force} == {582, 603, 633}
    matched = {
        entry["item"] + 1: [match["record"] + 1 for match in entry["training"]] for entry in report["contaminated"]
    }
    assert matched == {582: [407], 603: [1315, 5163], 633: [21]}


def test_share_of_ngrams_and_short_items(tmp_path: Path) -> None:
    """n = 5, min_words = 3. Eval items (alpaca):
    0: "a b c d e f g" (7 words, 3 5-grams); training record 0 holds "a b c d e f" -> 2 of 3 found: share 0.6667.
    1: "x y z w" (4 words: matched whole, as a 4-gram): training record 1's response holds "X, y z w!" -> share 1.
    2: "p q" (2 words, exact only): record 1's "p q r" does not count; record 2's prompt "P. Q?" is an exact match.
    3: "m n o" (3 words, matched whole): nowhere."""
    train = write_jsonl(
        tmp_path / "train.jsonl",
        [
            {"instruction": "Say a b c d e f.", "input": "", "output": "ok"},
            {"instruction": "p q r", "input": "", "output": "It is X, y z w!"},
            {"instruction": "P. Q?", "input": "", "output": "done"},
        ],
    )
    evals = write_jsonl(
        tmp_path / "eval.jsonl",
        [{"instruction": text, "output": ""} for text in ["a b c d e f g", "x y z w", "p q", "m n o"]],
    )
    report = leak_check(str(train), [str(evals)], n=5, min_words=3)
    summary = {
        entry["item"]: (entry["kind"], entry["ngram_share"], entry["training"]) for entry in report["contaminated"]
    }
    assert summary == {
        0: ("ngram", 0.6667, [{"record": 0, "where": f"{train}:1", "kind": "ngram", "shared_ngrams": 2}]),
        1: ("ngram", 1.0, [{"record": 1, "where": f"{train}:2", "kind": "ngram", "shared_ngrams": 1}]),
        2: ("exact", None, [{"record": 2, "where": f"{train}:3", "kind": "exact", "shared_ngrams": 0}]),
    }
    assert report["evals"][str(evals)]["exact_match_only_checked"] == 1
    assert json.loads((tmp_path / "train.jsonl.leak-check.json").read_text()) == report


def test_exact_match_on_any_user_turn_of_a_chat_and_drop_to_parquet(tmp_path: Path) -> None:
    """An MT-bench style item's first turn equals the second user turn of a training chat (case and punctuation
    differ): exact. The dropped file keeps the chat layout in OUT's file type."""
    chats = [
        [{"role": "user", "content": "Hello there"}, {"role": "assistant", "content": "Hi"}],
        [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "what's the capital of france"},
            {"role": "assistant", "content": "Paris"},
        ],
    ]
    train = write_jsonl(tmp_path / "chats.jsonl", [{"messages": chat} for chat in chats])
    evals = write_jsonl(tmp_path / "mt.jsonl", [{"turns": ["What's the capital of France?", "And of Spain?"]}])
    out = tmp_path / "clean.parquet"
    report = leak_check(str(train), [str(evals)], drop=str(out))
    assert [(entry["where"], entry["kind"]) for entry in report["contaminated"]] == [(f"{evals}:1", "exact")]
    assert report["dropped"]["records"] == [{"record": 1, "where": f"{train}:2"}]
    assert Dataset.from_parquet(str(out)).to_list() == [{"messages": chats[0]}]


def test_bad_options_are_refused(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", [{"instruction": "a", "output": "b"}])
    with pytest.raises(ValueError, match="n and min_words must be at least 1"):
        leak_check(str(train), [str(train)], n=0)
    with pytest.raises(ValueError, match="at least one eval file"):
        leak_check(str(train), [])
