"""Per-item scores of a completion against a reference: exact match (with a final-answer extractor for GSM8K-style
answers), BLEU, ROUGE-L and chrF (torchmetrics). Each is a plain function ``(completion, reference) -> float`` in
[0, 1]; a metric over a set is the mean of its items' scores, so paired bootstrap intervals apply to every one.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable

from torchmetrics.functional.text import bleu_score, chrf_score, rouge_score

_FINAL_ANSWER_PATTERNS = (
    re.compile(r"####\s*(.+?)\s*$", re.MULTILINE),  # GSM8K's reference answers
    re.compile(r"\\boxed\{([^{}]+)\}"),
    re.compile(r"answer is[:\s]*\$?\s*(-?\d[\d,]*(?:\.\d+)?)", re.IGNORECASE),
)
_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?|-?\.\d+")  # 1,000.5 but not 1,8
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_text(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (the SQuAD normalisation)."""
    text = text.lower()
    text = "".join(char for char in text if char not in string.punctuation)
    return " ".join(_ARTICLES.sub(" ", text).split())


def normalize_number(text: str) -> str | None:
    """``"$1,000.50"`` -> ``"1000.5"``, ``"18."`` -> ``"18"``; None when ``text`` holds no number."""
    match = _NUMBER.search(text.replace("$", ""))
    if match is None:
        return None
    value = match.group().replace(",", "")
    if "." in value:
        value = value.rstrip("0").rstrip(".")
    return value if value not in ("", "-") else "0"


def extract_final_answer(text: str) -> str | None:
    """The final answer of a worked solution: after GSM8K's ``####``, inside ``\\boxed{}``, after "The answer is",
    else the last number in the text; None when there is none."""
    for pattern in _FINAL_ANSWER_PATTERNS:
        matches = pattern.findall(text)
        if matches:
            return matches[-1].strip()
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def exact_match(completion: str, reference: str) -> float:
    """1.0 when the completion gives the reference's answer.

    A reference with a final-answer marker (``#### 18``, ``\\boxed{18}``, "The answer is 18") is compared on the
    final answer (numbers normalised: ``$1,000`` equals ``1000``); any other reference on the whole normalised text.
    """
    if any(pattern.search(reference) for pattern in _FINAL_ANSWER_PATTERNS):
        expected, given = extract_final_answer(reference), extract_final_answer(completion)
        if expected is None or given is None:
            return 0.0
        expected_number, given_number = normalize_number(expected), normalize_number(given)
        if expected_number is not None and given_number is not None:
            return float(expected_number == given_number)
        return float(normalize_text(expected) == normalize_text(given))
    return float(normalize_text(completion) == normalize_text(reference))


def bleu(completion: str, reference: str) -> float:
    """Sentence BLEU-4 with add-one smoothing of the 2- to 4-gram precisions (torchmetrics), in [0, 1]; a text of
    fewer than four words has no 4-grams and scores 0."""
    return float(bleu_score([completion], [[reference]], n_gram=4, smooth=True))


def rouge_l(completion: str, reference: str) -> float:
    """ROUGE-L F-measure (torchmetrics), in [0, 1]."""
    return float(rouge_score(completion, reference, rouge_keys="rougeL")["rougeL_fmeasure"])


def chrf(completion: str, reference: str) -> float:
    """chrF (character n-grams up to 6, no word n-grams, beta 2: sacreBLEU's default; torchmetrics), in [0, 1]."""
    return float(chrf_score([completion], [[reference]], n_char_order=6, n_word_order=0, beta=2.0))


GENERATION_METRICS: dict[str, Callable[[str, str], float]] = {
    "exact_match": exact_match,
    "bleu": bleu,
    "rouge_l": rouge_l,
    "chrf": chrf,
}
