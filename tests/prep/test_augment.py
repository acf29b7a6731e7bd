"""`augment`: EDA's four operations with exact, seeded expectations; only the prompt side changes; originals and
copies linked by `augment_group`; back-translation through a scripted endpoint, the tiny causal model and a tiny
encoder-decoder; the output trains."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from datasets import Dataset
from transformers import T5Config, T5ForConditionalGeneration

from lightning_ft.data.sources import DataError
from lightning_ft.prep.augment import augment
from lightning_ft.prep.eda import (
    Words,
    changes,
    eda,
    random_deletion,
    random_insertion,
    synonym_replacement,
    synonyms_from_file,
    wordnet_synonyms,
)
from tests.conftest import build_tiny_tokenizer, shared_data
from tests.helpers import read_jsonl
from tests.prep.fitting import fit_on
from tests.prep.stub_endpoint import EndpointStub, running_stub

SYNONYMS = {"quick": ["fast", "speedy"], "happy": ["glad", "cheerful"], "dog": ["hound"], "the": ["a"]}
TWENTY = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa quebec "
TWENTY += "romeo sierra tango"


def lookup(word: str) -> list[str]:
    return SYNONYMS.get(word, [])


@pytest.fixture
def synonyms_file(tmp_path: Path) -> Path:
    path = tmp_path / "synonyms.json"
    path.write_text(json.dumps({"describe": ["explain", "depict"], "write": ["compose"], "give": ["provide"]}))
    return path


@pytest.fixture
def alpaca_file(tmp_path: Path) -> Path:
    lines = shared_data("sft_alpaca/alpaca_gpt4_en_demo.jsonl").read_text(encoding="utf-8").splitlines()[:12]
    path = tmp_path / "alpaca.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def stub() -> Iterator[EndpointStub]:
    with running_stub() as server:
        yield server


def test_number_of_edits_is_alpha_times_words_at_least_one() -> None:
    assert [changes(0.1, count) for count in (1, 9, 10, 19, 20, 25)] == [1, 1, 1, 1, 2, 2]
    assert changes(0.3, 20) == 6 and changes(0.0, 50) == 1


@pytest.mark.parametrize(("alpha", "swapped"), [(0.1, 4), (0.3, 12), (1.0, 20)])
def test_random_swap_moves_exactly_two_words_per_swap(alpha: float, swapped: int) -> None:
    """20 distinct words: n = max(1, int(20·alpha)) = 2, 6, 20 disjoint swaps, capped at 20 // 2 = 10 pairs, move
    4, 12 and 20 words."""
    text = TWENTY.replace("echo ", "echo\n")  # a line break stays where it was
    for seed in range(5):
        edited = eda(text, "random_swap", alpha, lookup, random.Random(seed))
        before, after = Words.of(text), Words.of(edited)
        assert sum(a != b for a, b in zip(before.words, after.words, strict=True)) == swapped
        assert sorted(after.words) == sorted(before.words) and after.spaces == before.spaces


def test_synonym_replacement_replaces_only_words_with_synonyms() -> None:
    """14 words, 3 with synonyms (quick, dog, happy; "the" has one but is a stop word): alpha 0.1 gives n = 1
    replacement; alpha 0.5 gives n = 7, capped at the 3 candidates."""
    text = "The quick brown fox jumps over the lazy dog and the Happy cat sleeps."
    for seed in range(5):
        one = Words.of(eda(text, "synonym_replacement", 0.1, lookup, random.Random(seed))).words
        changed = [(a, b) for a, b in zip(Words.of(text).words, one, strict=True) if a != b]
        assert len(changed) == 1
        ((old, new),) = changed
        assert new.lower() in SYNONYMS[old.lower()]
    every = eda(text, "synonym_replacement", 0.5, lookup, random.Random(0))
    changed = [(a, b) for a, b in zip(Words.of(text).words, Words.of(every).words, strict=True) if a != b]
    assert [old for old, _ in changed] == ["quick", "dog", "Happy"]
    assert changed[1][1] == "hound" and changed[2][1] in ("Glad", "Cheerful")  # capitalisation kept
    assert eda("Nothing here has any.", "synonym_replacement", 0.5, lookup, random.Random(0)) == "Nothing here has any."


def test_synonym_keeps_punctuation_around_the_word() -> None:
    edited = synonym_replacement(Words.of("A (dog), indeed"), 1, lookup, random.Random(0))
    assert edited.text() == "A (hound), indeed"


def test_random_insertion_adds_n_synonyms_and_keeps_the_words_in_order() -> None:
    """10 words at alpha 0.2: n = 2 insertions, each a synonym of quick, dog or happy."""
    text = "the quick dog was happy to run in the park"
    assert len(text.split()) == 10 and changes(0.2, 10) == 2
    for seed in range(5):
        after = eda(text, "random_insertion", 0.2, lookup, random.Random(seed)).split()
        assert len(after) == 12
        remaining = iter(after)
        assert all(word in remaining for word in text.split())  # the original words, in order
        inserted = Counter(after) - Counter(text.split())
        assert sum(inserted.values()) == 2
        assert all(word in {"fast", "speedy", "glad", "cheerful", "hound"} for word in inserted)
    end = random_insertion(Words.of("dog\n"), 3, lookup, random.Random(1)).text()
    assert end.endswith("\n") and sorted(end.split()) == ["dog", "hound", "hound", "hound"]


def test_random_deletion_follows_its_draws_and_never_empties_a_text() -> None:
    """Word i goes when the i-th draw of ``Random(seed)`` is at most alpha; all words going leaves one."""
    words = TWENTY.split()
    for seed in range(5):
        draws = random.Random(seed)
        expected = [word for word in words if draws.random() > 0.3]
        assert eda(TWENTY, "random_deletion", 0.3, lookup, random.Random(seed)).split() == expected
    for seed in range(5):
        assert len(eda(TWENTY, "random_deletion", 1.0, lookup, random.Random(seed)).split()) == 1
    assert eda("Alone", "random_deletion", 1.0, lookup, random.Random(0)) == "Alone"
    assert eda("   ", "random_deletion", 1.0, lookup, random.Random(0)) == "   "


def test_random_deletion_keeps_the_line_breaks_of_deleted_words() -> None:
    text = Words.of("keep gone\nnext last")
    rng = random.Random()
    rng.random = iter([0.9, 0.1, 0.9, 0.9]).__next__  # type: ignore[method-assign]
    assert random_deletion(text, 0.5, rng).text() == "keep\nnext last"
    rng.random = iter([0.9, 0.9, 0.9, 0.1]).__next__  # type: ignore[method-assign]
    assert random_deletion(Words.of("a b c d\n"), 0.5, rng).text() == "a b c\n"


def test_eda_augment_changes_only_the_prompt_side_and_links_copies(
    alpaca_file: Path, synonyms_file: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    output = tmp_path / "augmented.jsonl"
    report = augment(str(alpaca_file), str(output), copies=2, alpha=0.2, synonyms=str(synonyms_file), seed=3)

    originals, records = read_jsonl(alpaca_file), read_jsonl(output)
    assert report["originals"] == 12 and report["records_written"] == len(records)
    assert report["copies_written"] + sum(report["dropped_copies"].values()) == 24
    assert sum(report["operations_used"].values()) == 24
    by_group: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_group.setdefault(record["augment_group"], []).append(record)
    assert list(by_group) == [f"alpaca.jsonl:{line}" for line in range(1, 13)]  # each original, then its copies
    for original, group in zip(originals, by_group.values(), strict=True):
        assert group[0] == {**original, "augment_group": group[0]["augment_group"]}  # JSON leaves nulls out
        for copy in group[1:]:
            assert copy["augmented_by"] == "eda"
            assert copy["output"] == original["output"] and copy["input"] == original["input"]  # byte-identical
            assert copy["instruction"] != original["instruction"]
        assert len({copy["instruction"] for copy in group}) == len(group)
    assert json.loads((tmp_path / "augmented.jsonl.report.json").read_text()) == report

    again = tmp_path / "again.jsonl"
    augment(str(alpaca_file), str(again), copies=2, alpha=0.2, synonyms=str(synonyms_file), seed=3)
    assert again.read_bytes() == output.read_bytes()
    assert fit_on(output, "alpaca", tiny_model_dir, tmp_path / "fit").is_dir()


def test_eda_on_chats_rewords_user_turns_only_into_the_outputs_file_type(tmp_path: Path) -> None:
    lines = shared_data("chat/oasst_en100_messages.jsonl").read_text(encoding="utf-8").splitlines()[:6]
    source = tmp_path / "chats.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    output = tmp_path / "augmented.parquet"

    report = augment(str(source), str(output), operations=["random_swap", "random_deletion"], alpha=0.3)

    records = Dataset.from_parquet(str(output)).to_list()
    assert report["layout"] == "messages" and len(records) == report["records_written"]
    assert set(report["operations_used"]) <= {"random_swap", "random_deletion"} and report["synonyms"] is None
    originals = {record["augment_group"]: record for record in records if record["augmented_by"] is None}
    copies = [record for record in records if record["augmented_by"] == "eda"]
    assert len(originals) == 6 and len(copies) == report["copies_written"] >= 5
    for copy in copies:
        original = originals[copy["augment_group"]]
        pairs = list(zip(original["messages"], copy["messages"], strict=True))
        assert all(a == b for a, b in pairs if a["role"] != "user")
        assert any(a["content"] != b["content"] for a, b in pairs if a["role"] == "user")


def test_unknown_method_operation_and_layout_are_refused(alpaca_file: Path, tmp_path: Path) -> None:
    output = str(tmp_path / "out.jsonl")
    with pytest.raises(ValueError, match="Unknown method 'synonyms'; valid: eda, back_translation"):
        augment(str(alpaca_file), output, method="synonyms")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Unknown EDA operation 'shuffle'; valid: synonym_replacement, random_inser"):
        augment(str(alpaca_file), output, operations=["shuffle"])  # type: ignore[list-item]
    text = tmp_path / "text.jsonl"
    text.write_text('{"text": "Plain text has no prompt side."}\n')
    with pytest.raises(DataError, match="'text' records have no prompt side"):
        augment(str(text), output, operations=["random_swap"])
    with pytest.raises(ValueError, match="copies=0"):
        augment(str(alpaca_file), output, copies=0)


def test_synonyms_come_from_a_file_or_a_clear_wordnet_error(tmp_path: Path, alpaca_file: Path) -> None:
    tsv = tmp_path / "synonyms.tsv"
    tsv.write_text("Quick\tfast\tspeedy\n\ndog\thound\n")
    assert synonyms_from_file(str(tsv))("quick") == ["fast", "speedy"] and synonyms_from_file(str(tsv))("cat") == []
    bad = tmp_path / "bad.tsv"
    bad.write_text("quick\tfast\nlonely\n")
    with pytest.raises(DataError, match=f"{bad}:2: expected word<TAB>synonym"):
        synonyms_from_file(str(bad))
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"quick": "fast"}')
    with pytest.raises(DataError, match="synonyms of 'quick' must be a list of strings"):
        synonyms_from_file(str(bad_json))
    try:
        lookup_wordnet = wordnet_synonyms()
    except LookupError as error:  # nltk is installed here, its WordNet corpus is not
        assert "nltk.downloader wordnet" in str(error) and "pass `synonyms`" in str(error)
        with pytest.raises(LookupError, match="WordNet corpus is not installed"):
            augment(str(alpaca_file), str(tmp_path / "out.jsonl"))
    else:
        assert "fast" in lookup_wordnet("quick")


def test_back_translation_through_an_endpoint_replaces_the_prompt_with_the_round_trip(
    alpaca_file: Path, stub: EndpointStub, tmp_path: Path
) -> None:
    """12 instructions, one request each: requests 1-12 go to French; request 2 fails (HTTP 500), so 13-23 bring
    the other 11 back. The reply to 13 (instruction 1 on its way back) is garbage, which a translation cannot tell
    from text: it is kept. 11 copies are written."""
    stub.script = {2: "error", 13: "garbage"}
    output = tmp_path / "augmented.jsonl"

    report = augment(str(alpaca_file), str(output), method="back_translation", endpoint=stub.url, endpoint_model="stub")

    originals, records = read_jsonl(alpaca_file), read_jsonl(output)
    assert report["copies_written"] == 11 and report["dropped_copies"] == {"to_pivot_http_500": 1}
    copies = {record["augment_group"]: record for record in records if record.get("augmented_by") == "back_translation"}
    assert "alpaca.jsonl:2" not in copies
    for line, original in enumerate(originals, start=1):
        if line in (1, 2):
            continue
        copy = copies[f"alpaca.jsonl:{line}"]
        assert copy["instruction"] == f"[English] [French] {original['instruction']}"
        assert copy["output"] == original["output"] and copy["input"] == original["input"]
    assert copies["alpaca.jsonl:1"]["instruction"] == "Input: ???"
    assert stub.requests[0]["messages"][0]["content"].startswith("Translate to French. Reply with the translation")
    assert stub.requests[12]["messages"][0]["content"].startswith("Translate to English.")
    with pytest.raises(ValueError, match="exactly one of `translate_model`.*got neither"):
        augment(str(alpaca_file), str(output), method="back_translation")
    with pytest.raises(ValueError, match="temperature 0 would translate every copy alike"):
        augment(
            str(alpaca_file), str(output), method="back_translation", endpoint=stub.url, endpoint_model="m", copies=2
        )


def test_back_translation_with_the_tiny_model_gives_every_original_its_copies(
    alpaca_file: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The tiny model's translations are random text: what is tested is that each of 6 originals gets its 2 copies
    (sampled at temperature 1, so they differ; an empty reply would be counted), with the prompt replaced and the
    response kept; the output takes the output's file type (JSON)."""
    source = tmp_path / "six.jsonl"
    source.write_text("".join(alpaca_file.read_text().splitlines(keepends=True)[:6]))
    output = tmp_path / "augmented.json"
    report = augment(
        str(source),
        str(output),
        method="back_translation",
        translate_model=str(tiny_model_dir),
        copies=2,
        temperature=1.0,
        max_new_tokens=8,
    )

    originals, records = read_jsonl(source), json.loads(output.read_text())
    assert report["copies_written"] + sum(report["dropped_copies"].values()) == 12
    assert set(report["dropped_copies"]) <= {"from_pivot_empty_reply", "to_pivot_empty_reply", "duplicate"}
    assert report["copies_written"] >= 10
    assert len(records) == 6 + report["copies_written"]
    by_group = {record["augment_group"]: record for record in records if "augmented_by" not in record}
    assert [by_group[f"six.jsonl:{line}"]["instruction"] for line in range(1, 7)] == [
        original["instruction"] for original in originals
    ]
    for record in records:
        original = by_group[record["augment_group"]]
        assert record["output"] == original["output"] and record["input"] == original["input"]
        if "augmented_by" in record:
            assert record["augmented_by"] == "back_translation" and record["instruction"] != original["instruction"]


def test_back_translation_with_an_encoder_decoder_model(alpaca_file: Path, tmp_path: Path) -> None:
    """A tiny random T5 (recognised by ``is_encoder_decoder``) translates without a chat prompt, both ways."""
    tokenizer = build_tiny_tokenizer()
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=16,
        d_kv=4,
        d_ff=32,
        num_layers=1,
        num_heads=2,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    model_dir = tmp_path / "tiny-t5"
    T5ForConditionalGeneration(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)

    report = augment(
        str(alpaca_file),
        str(tmp_path / "out.jsonl"),
        method="back_translation",
        translate_model=str(model_dir),
        temperature=1.0,
        max_new_tokens=6,
    )

    assert report["copies_written"] + sum(report["dropped_copies"].values()) == 12
    assert report["copies_written"] >= 9
