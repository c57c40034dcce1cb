"""Answer normalization and the metrics the evaluators report."""
from __future__ import annotations

import collections
import re
from typing import Sequence

_SPACES = re.compile(r"\s+")


def normalize_answer(text: str) -> str:
    """Case-folded, whitespace-collapsed, without a trailing period: formatting is not the answer."""
    text = _SPACES.sub(" ", text.strip().lower())
    return text[:-1].rstrip() if text.endswith(".") else text


def exact_match(predictions: Sequence[str], targets: Sequence[str]) -> float:
    """Percentage of predictions equal to their target after normalize_answer."""
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
    if not targets:
        return 0.0
    hits = sum(normalize_answer(p) == normalize_answer(t) for p, t in zip(predictions, targets))
    return 100.0 * hits / len(targets)


def majority_answer(targets: Sequence[str]) -> str:
    """The most frequent normalized target (ties broken by first appearance)."""
    if not targets:
        raise ValueError("majority_answer of an empty target list")
    counts = collections.Counter(normalize_answer(t) for t in targets)
    return counts.most_common(1)[0][0]
