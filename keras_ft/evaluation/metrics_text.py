"""Scores for generated text against references; pure Python, no model.

- `exact_match`: equal after `normalize_text` (NFKC, lowercase, whitespace
  collapsed, surrounding whitespace and one trailing `.` removed).
- `rouge_l`: ROUGE-L F1 (Lin, 2004) from the longest common subsequence of
  word tokens. Tokens are the lowercase runs of letters and digits
  (`[^\\W_]+`), so punctuation and case do not count. With LCS length `l`,
  candidate length `c` and reference length `r`: precision = l / c,
  recall = l / r, F1 = 2PR / (P + R) (beta = 1, as in Google's
  `rouge-score`; no stemming). Empty against empty is 1, one empty side is 0.
- `check_steps`: format adherence of a step-by-step answer.
- `label_scores`: classification framed as generation.
- `length_stats`: summary statistics of lengths.
"""

from __future__ import annotations

import collections
import re
import unicodedata
from typing import Sequence

import numpy as np

_WORD = re.compile(r"[^\W_]+")
_ITEM = re.compile(r"^\s*(\d+)\.\s+\S")  # "1. Do this" (a numbered list item)
_SPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """NFKC, lowercase, collapsed whitespace, no trailing period."""
    text = _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip().lower()
    return text[:-1].rstrip() if text.endswith(".") else text


def exact_match(prediction: str, reference: str) -> bool:
    """True when both texts are equal after `normalize_text`."""
    return normalize_text(prediction) == normalize_text(reference)


def word_tokens(text: str) -> list[str]:
    """The lowercase letter/digit runs of `text` (ROUGE-L's tokens)."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).lower())


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence (O(len(a) * len(b)) time)."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-L precision, recall and F1 of `prediction` against `reference`.

    Returns:
        {"precision", "recall", "f1"}; see the module docstring.
    """
    cand, ref = word_tokens(prediction), word_tokens(reference)
    if not cand and not ref:
        return {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    lcs = lcs_length(cand, ref)
    if lcs == 0:
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    precision, recall = lcs / len(cand), lcs / len(ref)
    return {
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall),
    }


def check_steps(text: str, min_items: int = 2) -> dict:
    """Is `text` a numbered step-by-step answer with no preamble?

    It passes when the first non-blank line is item `1.`, the items are
    numbered 1, 2, 3, ... in order with no gap, and there are at least
    `min_items`. Lines between items (continuations) and text after the
    list are allowed; a line before item 1 is a conversational preamble.

    Returns:
        {"ok", "preamble", "ordered", "num_items"}: `ordered` says the items
        found anywhere count 1..n in order (a list exists, preamble or not).
    """
    lines = [line for line in text.splitlines() if line.strip()]
    numbers = [int(m.group(1)) for m in map(_ITEM.match, lines) if m]
    ordered = len(numbers) >= min_items and numbers == list(range(1, len(numbers) + 1))
    preamble = bool(lines) and not (_ITEM.match(lines[0]) and numbers[0] == 1)
    return {
        "ok": ordered and not preamble,
        "preamble": preamble,
        "ordered": ordered,
        "num_items": len(numbers),
    }


def steps_summary(texts: Sequence[str]) -> dict:
    """Adherence rates of `check_steps` over texts."""
    checks = [check_steps(t) for t in texts]
    n = max(len(checks), 1)
    return {
        "adherence": sum(c["ok"] for c in checks) / n,
        "ordered_list": sum(c["ordered"] for c in checks) / n,
        "preamble": sum(c["preamble"] for c in checks) / n,
        "mean_items": float(np.mean([c["num_items"] for c in checks])) if checks else 0.0,
    }


def match_label(prediction: str, labels: Sequence[str]) -> str | None:
    """The label `prediction` names (exactly, ignoring case/space), or None."""
    wanted = normalize_text(prediction)
    by_norm = {normalize_text(label): label for label in labels}
    return by_norm.get(wanted)


def label_scores(
    predictions: Sequence[str], references: Sequence[str], labels: Sequence[str], top: int = 10
) -> dict:
    """Accuracy and a confusion summary of generated class labels.

    A prediction counts only when, after `normalize_text`, it equals one
    label of `labels`; anything else is `invalid` (not in the label set).

    Returns:
        {"accuracy", "valid" (share in the label set), "num_labels",
        "confusions" (top [true, predicted, count] errors), "per_label"
        ({label: {"support", "recall", "precision"}} for frequent labels),
        "matrix" ({"labels", "counts"}: rows true, columns predicted, over
        the `top` most frequent references plus "other"/"invalid")}.
    """
    matched = [match_label(p, labels) for p in predictions]
    pairs = list(zip(references, matched))
    n = max(len(pairs), 1)
    errors = collections.Counter((t, p or "(invalid)") for t, p in pairs if t != p)
    frequent = [label for label, _ in collections.Counter(references).most_common(top)]
    per_label = {}
    for label in frequent:
        support = sum(t == label for t, _ in pairs)
        predicted = sum(p == label for _, p in pairs)
        hits = sum(t == p == label for t, p in pairs)
        per_label[label] = {
            "support": support,
            "recall": hits / max(support, 1),
            "precision": hits / predicted if predicted else 0.0,
        }
    axis = frequent + ["(other)", "(invalid)"]

    def column(label):
        return "(invalid)" if label is None else label if label in frequent else "(other)"

    counts = np.zeros((len(axis), len(axis)), int)
    for t, p in pairs:
        counts[axis.index(column(t)), axis.index(column(p))] += 1
    return {
        "accuracy": sum(t == p for t, p in pairs) / n,
        "valid": sum(p is not None for _, p in pairs) / n,
        "num_labels": len(set(labels)),
        "confusions": [[t, p, c] for (t, p), c in errors.most_common(top)],
        "per_label": per_label,
        "matrix": {"labels": axis, "counts": counts.tolist()},
    }


def length_stats(values: Sequence[float]) -> dict[str, float]:
    """mean, median, p90, min and max of `values` (zeros when empty)."""
    if not len(values):
        return {"mean": 0.0, "median": 0.0, "p90": 0.0, "min": 0.0, "max": 0.0}
    array = np.asarray(values, float)
    return {
        "mean": float(array.mean()),
        "median": float(np.median(array)),
        "p90": float(np.percentile(array, 90)),
        "min": float(array.min()),
        "max": float(array.max()),
    }


def text_lengths(texts: Sequence[str]) -> dict[str, dict[str, float]]:
    """Length statistics in words and characters."""
    return {
        "words": length_stats([len(t.split()) for t in texts]),
        "chars": length_stats([len(t) for t in texts]),
    }
