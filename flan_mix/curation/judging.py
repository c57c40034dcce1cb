"""Judging answers for TAPIR: the judge prompt, reading a score out of a judge's reply, and an offline judge.

A judge is any Oracle (flan_mix.curation.oracle). It sees the instruction, the reference answer (the record's
output) and the answer to grade, and replies with "Score: N" on a 1..MAX_SCORE scale. Replies are free text, so
parse_score accepts the common shapes ("Score: 7", "7/10", "Rating: 8 out of 10", a bare "6") and returns None
when it finds none; the caller records such a reply as unscored rather than dropping the record.
"""
from __future__ import annotations

import re
from typing import Optional, Sequence

from flan_mix.curation.oracle import OracleError
from flan_mix.curation.records import prompt_text

MAX_SCORE = 10
REFERENCE_HEADER = "Reference answer:"
ANSWER_HEADER = "Answer to grade:"
JUDGE_SYSTEM = ("You grade answers to instructions. Compare the answer with the reference answer and the "
                f"instruction, then reply with one line 'Score: N', N an integer from 1 (useless) to {MAX_SCORE} "
                "(as good as the reference).")

_LABELLED = re.compile(r"\b(?:score|rating|grade)\b\s*(?:is|of)?\s*[:=]?\s*(-?\d+(?:\.\d+)?)"
                       r"(?:\s*(?:/|out of)\s*(\d+))?", re.IGNORECASE)
_FRACTION = re.compile(r"(-?\d+(?:\.\d+)?)\s*(?:/|out of)\s*(\d+)", re.IGNORECASE)
_BARE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*\.?\s*$")


def judge_messages(record: dict, answer: str) -> list[dict]:
    """The chat that asks a judge to grade `answer` to the record's instruction against its output."""
    user = (f"Instruction:\n{prompt_text(record)}\n\n{REFERENCE_HEADER}\n{record['output']}\n\n"
            f"{ANSWER_HEADER}\n{answer}\n\nReply with 'Score: N' (1-{MAX_SCORE}).")
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def parse_score(reply: str, max_score: int = MAX_SCORE) -> Optional[float]:
    """The score in a judge's reply on the 0..max_score scale, or None when the reply holds no usable score.

    A labelled score ("Score: 7", "rating of 8/10") wins over a bare fraction ("7/10") and a reply that is
    only a number ("6"). A score on another scale ("4/5") is rescaled; one outside the scale is no score.
    """
    for pattern in (_LABELLED, _FRACTION, _BARE):
        m = pattern.search(reply or "")
        if not m:
            continue
        value = float(m.group(1))
        scale = float(m.group(2)) if m.lastindex and m.lastindex >= 2 and m.group(2) else float(max_score)
        if scale <= 0:
            return None
        value = value * max_score / scale
        return value if 0 <= value <= max_score else None
    return None


def _tokens(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def overlap_f1(answer: str, reference: str) -> float:
    """Token F1 of answer against reference (bag of lower-cased word tokens), 0..1."""
    a, r = _tokens(answer), _tokens(reference)
    if not a or not r:
        return float(a == r)
    common = sum(min(a.count(t), r.count(t)) for t in set(a))
    if not common:
        return 0.0
    precision, recall = common / len(a), common / len(r)
    return 2 * precision * recall / (precision + recall)


class ReferenceOverlapJudge:
    """An offline judge (the Oracle protocol): scores the graded answer by token F1 against the reference
    answer, 1 + 9 * F1, rounded to one decimal. Deterministic and free, for runs without an LLM judge; the
    TAPIR paper's judge is a strong LLM, which grades meaning, not word overlap. Conversations that are not
    judge prompts (e.g. a task-type question) get a reply without a score, which the caller records as such."""

    name = "reference-overlap-judge"

    def complete(self, messages: Sequence[dict], *, max_tokens: int = 256, temperature: float = 0.0,
                 seed: Optional[int] = None) -> str:
        text = messages[-1]["content"] if messages else ""
        if REFERENCE_HEADER not in text or ANSWER_HEADER not in text:
            return "I only grade answers against a reference answer."
        reference = text.split(REFERENCE_HEADER, 1)[1].split(ANSWER_HEADER, 1)[0].strip()
        answer = text.split(ANSWER_HEADER, 1)[1].rsplit("\n\nReply with", 1)[0].strip()
        return f"Score: {1 + 9 * overlap_f1(answer, reference):.1f}"

    def complete_many(self, conversations: Sequence[Sequence[dict]], *, max_tokens: int = 256,
                      temperature: float = 0.0, seed: Optional[int] = None) -> list[str | OracleError]:
        return [self.complete(c, max_tokens=max_tokens) for c in conversations]
