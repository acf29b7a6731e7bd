"""EDA, Easy Data Augmentation (Wei & Zou 2019, arXiv:1901.11196): four word-level edits of a text at rate
``alpha``, and where their synonyms come from.

With ``l`` words and ``n = max(1, int(alpha * l))``:

- ``synonym_replacement``: ``n`` distinct words that have synonyms (stop words never) are each replaced by one of them;
- ``random_insertion``: ``n`` times, a synonym of a word of the text is inserted at a random place;
- ``random_swap``: ``n`` disjoint pairs of words swap places (at most ``l // 2`` pairs);
- ``random_deletion``: each word is deleted with probability ``alpha``; a text of one word is kept, and when every
  word would go, one random word stays, so a text is never emptied.

Unlike the paper's code, text is not lower-cased or stripped of punctuation: words keep their punctuation and
capitalisation (a synonym takes the replaced word's), whitespace and line breaks stay where they were, and a
replacement changes one occurrence, not every occurrence of the word.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Literal

from lightning_ft.data.sources import DataError

Operation = Literal["synonym_replacement", "random_insertion", "random_swap", "random_deletion"]
OPERATIONS: tuple[Operation, ...] = ("synonym_replacement", "random_insertion", "random_swap", "random_deletion")
NEEDS_SYNONYMS = {"synonym_replacement", "random_insertion"}
Synonyms = Callable[[str], Sequence[str]]
WORD_PARTS = re.compile(r"^(\W*)(.*?)(\W*)$", re.DOTALL)
# The stop words of the paper's code (eda_nlp/code/eda.py), never replaced nor used for insertion.
STOP_WORDS = frozenset(
    """i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers herself
    it its itself they them their theirs themselves what which who whom this that these those am is are was were be
    been being have has had having do does did doing a an the and but if or because as until while of at by for with
    about against between into through during before after above below to from up down in out on off over under again
    further then once here there when where why how all any both each few more most other some such no nor not only
    own same so than too very s t can will just don should now""".split()
)


@dataclass
class Words:
    """A text as its words and the whitespace after each (``lead`` before the first), so edits keep the layout."""

    lead: str = ""
    words: list[str] = field(default_factory=list)
    spaces: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, text: str) -> Words:
        lead = text[: len(text) - len(text.lstrip())]
        pairs = re.findall(r"(\S+)(\s*)", text[len(lead) :])
        return cls(lead, [word for word, _ in pairs], [space for _, space in pairs])

    def text(self) -> str:
        return self.lead + "".join(word + space for word, space in zip(self.words, self.spaces, strict=True))

    def copy(self) -> Words:
        return Words(self.lead, list(self.words), list(self.spaces))


def changes(alpha: float, word_count: int) -> int:
    """The paper's number of edits: ``max(1, int(alpha * word_count))``."""
    return max(1, int(alpha * word_count))


def synonym_options(word: str, synonyms: Synonyms) -> list[str]:
    """The synonyms of ``word`` (its letters without surrounding punctuation, lower-cased), sorted; none for stop
    words."""
    key = WORD_PARTS.match(word).group(2).lower()
    if not key or key in STOP_WORDS:
        return []
    return sorted({option for option in synonyms(key) if option.lower() != key and option.strip()})


def matching_case(option: str, core: str) -> str:
    if len(core) > 1 and core.isupper():
        return option.upper()
    return option[0].upper() + option[1:] if core[:1].isupper() else option


def synonym_replacement(text: Words, n: int, synonyms: Synonyms, rng: random.Random) -> Words:
    """Replace ``n`` distinct words that have synonyms (all of them when fewer) by a random synonym each."""
    edited = text.copy()
    candidates = [index for index, word in enumerate(text.words) if synonym_options(word, synonyms)]
    for index in sorted(rng.sample(candidates, min(n, len(candidates)))):
        before, core, after = WORD_PARTS.match(text.words[index]).groups()
        option = rng.choice(synonym_options(text.words[index], synonyms))
        edited.words[index] = before + matching_case(option, core) + after
    return edited


def random_insertion(text: Words, n: int, synonyms: Synonyms, rng: random.Random) -> Words:
    """Insert, ``n`` times, a synonym of a random word of the text (one that has synonyms) at a random place."""
    edited = text.copy()
    candidates = [word for word in text.words if synonym_options(word, synonyms)]
    for _ in range(n if candidates else 0):
        option = rng.choice(synonym_options(rng.choice(candidates), synonyms))
        place = rng.randrange(len(edited.words) + 1)
        if place == len(edited.words):  # after the last word: it takes the text's trailing whitespace
            edited.words.append(option)
            edited.spaces.append(edited.spaces[-1])
            edited.spaces[-2] = " "
        else:
            edited.words.insert(place, option)
            edited.spaces.insert(place, " ")
    return edited


def random_swap(text: Words, n: int, rng: random.Random) -> Words:
    """Swap ``n`` disjoint pairs of random words (at most ``len // 2``); the whitespace stays in place."""
    edited = text.copy()
    pairs = min(n, len(text.words) // 2)
    places = rng.sample(range(len(text.words)), 2 * pairs)
    for first, second in zip(places[0::2], places[1::2], strict=True):
        edited.words[first], edited.words[second] = edited.words[second], edited.words[first]
    return edited


def random_deletion(text: Words, probability: float, rng: random.Random) -> Words:
    """Delete each word with ``probability``; one word is never deleted, and one random word survives when all
    would go. A deleted word's line break moves to the word before it."""
    if len(text.words) <= 1:
        return text.copy()
    kept = {index for index in range(len(text.words)) if rng.random() > probability}
    if not kept:
        kept = {rng.randrange(len(text.words))}
    edited = Words(text.lead)
    for index, (word, space) in enumerate(zip(text.words, text.spaces, strict=True)):
        if index in kept:
            edited.words.append(word)
            edited.spaces.append(space)
        elif edited.spaces and space.count("\n") > edited.spaces[-1].count("\n"):
            edited.spaces[-1] = space
    if max(kept) < len(text.words) - 1:  # the last word went: the text ends as it did
        edited.spaces[-1] = text.spaces[-1]
    return edited


def eda(text: str, operation: Operation, alpha: float, synonyms: Synonyms, rng: random.Random) -> str:
    """``text`` edited by one EDA ``operation`` at rate ``alpha``."""
    words = Words.of(text)
    if not words.words:
        return text
    n = changes(alpha, len(words.words))
    if operation == "synonym_replacement":
        return synonym_replacement(words, n, synonyms, rng).text()
    if operation == "random_insertion":
        return random_insertion(words, n, synonyms, rng).text()
    if operation == "random_swap":
        return random_swap(words, n, rng).text()
    return random_deletion(words, alpha, rng).text()


def synonyms_from_file(path: str) -> Synonyms:
    """Synonyms from a JSON object ``{word: [synonym, ...]}`` or a TSV file of ``word<TAB>synonym<TAB>...`` lines;
    words are looked up lower-cased."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"{path}: no such synonyms file")
    table: dict[str, list[str]] = {}
    if file.suffix.lower() == ".json":
        try:
            content = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{error.lineno}: malformed JSON ({error.msg})") from None
        if not isinstance(content, dict):
            raise DataError(f"{path}: expected a JSON object {{word: [synonym, ...]}}")
        for word, options in content.items():
            if not isinstance(options, list) or not all(isinstance(option, str) for option in options):
                raise DataError(f"{path}: the synonyms of {word!r} must be a list of strings")
            table[word.lower()] = options
    else:
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
            columns = [column.strip() for column in line.split("\t")]
            if not line.strip():
                continue
            if len(columns) < 2 or not all(columns):
                raise DataError(f"{path}:{number}: expected word<TAB>synonym[<TAB>synonym...]")
            table.setdefault(columns[0].lower(), []).extend(columns[1:])
    return lambda word: table.get(word, [])


def wordnet_synonyms() -> Synonyms:
    """Synonyms from WordNet through nltk (lemma names of the word's synsets, as the paper's code), when nltk and its
    WordNet corpus are installed."""
    advice = "pass `synonyms` (a JSON or TSV file of synonyms), or install WordNet"
    try:
        from nltk.corpus import wordnet
    except ImportError:
        raise ImportError(
            f"EDA's synonym edits need synonyms: {advice} (`pip install nltk`, then "
            "`python -m nltk.downloader wordnet`)"
        ) from None
    try:
        wordnet.synsets("good")
    except LookupError:
        raise LookupError(
            f"EDA's synonym edits need synonyms, and nltk's WordNet corpus is not installed: {advice} "
            "(`python -m nltk.downloader wordnet`)"
        ) from None

    @cache
    def lookup(word: str) -> tuple[str, ...]:
        names = {
            lemma.name().replace("_", " ").replace("-", " ").lower()
            for synset in wordnet.synsets(word)
            for lemma in synset.lemmas()
        }
        cleaned = {"".join(char for char in name if char.isalpha() or char == " ").strip() for name in names}
        return tuple(sorted(name for name in cleaned if name and name != word))

    return lookup
