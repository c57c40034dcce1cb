"""Answer extraction for few-shot benchmarks prompted the Flan/BBH way (BBH now, MMLU next).

Both benchmarks prompt with "Q: ...\\nA: ..." exemplars. A chain-of-thought (CoT) exemplar ends with
"So the answer is X.", a direct exemplar is just "A: X". A model imitates that, so:

- CoT: the answer is the text after the LAST "the answer is" (case-insensitive: a model may restart a
  sentence with "The answer is"; the last one wins because models do revise themselves mid-reasoning),
  up to the end of that line, without surrounding whitespace and one final period.
- direct: the stripped generation up to its first blank line (the exemplar separator).

Both first cut the generation at a line starting with "Q:": a model that runs on writes the next
exemplar, and an answer inside an invented question must not count.

Matching is exact after stripping whitespace, nothing more: BBH targets are "(B)", "True", "valid",
"] } ]", sorted word lists, and the exemplars show exactly that form, so "B" or "(b)" is not "(B)".
(The held-in tasks use the lenient `metrics.normalize_answer`; benchmarks are scored as published.)
"""
from __future__ import annotations

import json
import re
from typing import Iterator

from flan_mix.data.data_errors import MalformedDataError

MODES = ("cot", "direct")

_ANSWER_IS = re.compile(r"the answer is", re.IGNORECASE)
_NEXT_QUESTION = re.compile(r"\nQ:")
_BLANK_LINE = re.compile(r"\n[ \t\r]*\n")


def cut_at_next_question(generation: str) -> str:
    """The generation before a line that starts a new "Q:" exemplar (the whole text if none)."""
    match = _NEXT_QUESTION.search(generation)
    return generation[: match.start()] if match else generation


def extract_direct_answer(generation: str) -> str:
    """The stripped generation up to its first blank line (and before any invented next question)."""
    text = cut_at_next_question(generation.strip())
    return _BLANK_LINE.split(text, maxsplit=1)[0].strip()


def extract_cot_answer(generation: str) -> str:
    """The text after the last "the answer is" on its line, stripped, without one final period.

    Without any "the answer is" the generation is read as a direct answer: a model that skips the
    reasoning and answers "(B)" has still answered (and a bare rationale will not match a target).
    """
    text = cut_at_next_question(generation)
    matches = list(_ANSWER_IS.finditer(text))
    if not matches:
        return extract_direct_answer(text)
    answer = text[matches[-1].end():].split("\n", 1)[0].strip()
    return answer[:-1].rstrip() if answer.endswith(".") else answer


def extract_answer(generation: str, mode: str) -> str:
    """extract_cot_answer or extract_direct_answer, by mode ("cot" or "direct")."""
    if mode == "cot":
        return extract_cot_answer(generation)
    if mode == "direct":
        return extract_direct_answer(generation)
    raise ValueError(f"unknown answer mode {mode!r}; expected one of {MODES}")


def answer_matches(prediction: str, target: str) -> bool:
    """Exact match after stripping surrounding whitespace (see the module docstring for why only that)."""
    return prediction.strip() == target.strip()


PREDICTION_FIELDS = ("task", "prediction", "target")


def read_prediction_lines(path: str) -> Iterator[tuple[int, dict]]:
    """(line number, record) of a predictions JSONL whose lines hold string task, prediction and
    target; blank lines are skipped, anything else fails naming the file and line."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise MalformedDataError(path, f"{lineno}:{e.colno}", f"invalid JSON: {e.msg}") from None
            if not isinstance(rec, dict):
                raise MalformedDataError(path, str(lineno), "expected a JSON object")
            missing = [k for k in PREDICTION_FIELDS if not isinstance(rec.get(k), str)]
            if missing:
                raise MalformedDataError(path, str(lineno), f"missing or non-string field(s) {missing}")
            yield lineno, rec
