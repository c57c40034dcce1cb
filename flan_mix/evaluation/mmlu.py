"""MMLU (Hendrycks et al., ICLR 2021) the way the original evaluate.py and the Flan papers run it.

Pure Python, no model: loading the CSVs, 5-shot prompts from the dev split, the two ways of reading an
answer (rank classification over the option letters, or the first letter a generation names), and
per-subject / per-category accuracy. The model side calls these functions.

Layout on disk (https://people.eecs.berkeley.edu/~hendrycks/data.tar, unpacked):
    {mmlu_dir}/{dev,val,test}/{subject}_{split}.csv   no header; question, A, B, C, D, answer
Fields are used verbatim (the original read them with pandas, which would have turned the 12 option
fields spelled "None", "NA", ... into "nan"; we keep the text the authors wrote).
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import json
import logging
import os
import re
from typing import Callable, Iterable, Mapping, Sequence

from flan_mix.data.data_errors import MalformedDataError, MissingDataError

logger = logging.getLogger(__name__)

SPLITS = ("dev", "val", "test")
LETTERS = ("A", "B", "C", "D")
RANDOM_BASELINE = 25.0  # four options, one right
DATA_URL = "https://people.eecs.berkeley.edu/~hendrycks/data.tar"

# The Hendrycks subject -> category mapping (categories.py of the original repository: each subject has a
# subcategory, each subcategory one of four categories). The original names the last one
# "other (business, health, misc.)"; we use the short name the papers' tables use.
_SUBJECTS_BY_CATEGORY = {
    "STEM": (
        "abstract_algebra", "astronomy", "college_biology", "college_chemistry", "college_computer_science",
        "college_mathematics", "college_physics", "computer_security", "conceptual_physics",
        "electrical_engineering", "elementary_mathematics", "high_school_biology", "high_school_chemistry",
        "high_school_computer_science", "high_school_mathematics", "high_school_physics",
        "high_school_statistics", "machine_learning"),
    "humanities": (
        "formal_logic", "high_school_european_history", "high_school_us_history", "high_school_world_history",
        "international_law", "jurisprudence", "logical_fallacies", "moral_disputes", "moral_scenarios",
        "philosophy", "prehistory", "professional_law", "world_religions"),
    "social sciences": (
        "econometrics", "high_school_geography", "high_school_government_and_politics",
        "high_school_macroeconomics", "high_school_microeconomics", "high_school_psychology", "human_sexuality",
        "professional_psychology", "public_relations", "security_studies", "sociology", "us_foreign_policy"),
    "other": (
        "anatomy", "business_ethics", "clinical_knowledge", "college_medicine", "global_facts", "human_aging",
        "management", "marketing", "medical_genetics", "miscellaneous", "nutrition", "professional_accounting",
        "professional_medicine", "virology"),
}
CATEGORY_NAMES = tuple(_SUBJECTS_BY_CATEGORY)
CATEGORIES: dict[str, str] = {s: c for c, subjects in _SUBJECTS_BY_CATEGORY.items() for s in subjects}
SUBJECTS: tuple[str, ...] = tuple(sorted(CATEGORIES))  # 57, the file names of every split

# The original header is "... (with answers) about{}" filled with " abstract algebra" (every word of the
# subject prefixed by a space), so there are two spaces after "about". Kept byte for byte: it is what
# Hendrycks' evaluate.py and evaluate_flan.py send (T5's SentencePiece collapses the run anyway).
HEADER = "The following are multiple choice questions (with answers) about {}.\n\n"


@dataclasses.dataclass(frozen=True)
class Question:
    question: str
    choices: tuple[str, str, str, str]
    answer: str  # "A".."D"


class PromptTooLongError(ValueError):
    """Even the zero-shot prompt is longer than the budget: the caller decides (skip with a count, or
    truncate); we never hand back a prompt over max_len."""


# ----------------------------------------------------------------------------------------------- loading
def _split_dir(mmlu_dir: str, split: str) -> str:
    """mmlu_dir holds dev/ val/ test/, or is the unpacked archive's parent holding data/."""
    for candidate in (os.path.join(mmlu_dir, split), os.path.join(mmlu_dir, "data", split)):
        if os.path.isdir(candidate):
            return candidate
    raise MissingDataError(
        "mmlu", f"no {split}/ directory in {mmlu_dir!r} (nor in {os.path.join(mmlu_dir, 'data')!r}); expected "
        f"the Hendrycks layout {{mmlu_dir}}/{{dev,val,test}}/{{subject}}_{{split}}.csv",
        f"Download {DATA_URL}, unpack it (tar xf data.tar) and pass the resulting data/ directory.")


def _read_csv(path: str) -> list[Question]:
    rows = []
    # utf-8-sig: one file of the release (test/college_medicine_test.csv) starts with a byte-order mark.
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        end = 0
        for row in reader:
            # A quoted field may span lines: report where the record starts, as an editor shows it.
            start, end = end + 1, reader.line_num
            if len(row) != 6:
                got = f"got {len(row)}: {row!r}"
                raise MalformedDataError(path, f"line {start}", "expected 6 columns (question, A, B, C, D, "
                                         f"answer), {got[:200]}")
            if row[5] not in LETTERS:
                raise MalformedDataError(path, f"line {start}", f"answer must be one of A, B, C, D, "
                                         f"got {row[5]!r}")
            rows.append(Question(row[0], tuple(row[1:5]), row[5]))
    return rows


def load_split(mmlu_dir: str, split: str, subjects: Iterable[str] | None = None) -> dict[str, list[Question]]:
    """{subject: [Question, ...]} in file order, for the given subjects (default: all 57)."""
    if split not in SPLITS:
        raise ValueError(f"unknown MMLU split {split!r}; choose one of {', '.join(SPLITS)}")
    subjects = SUBJECTS if subjects is None else tuple(subjects)
    unknown = [s for s in subjects if s not in CATEGORIES]
    if unknown:
        raise ValueError(f"unknown MMLU subject(s) {unknown}; the 57 are listed in mmlu.SUBJECTS")
    directory = _split_dir(mmlu_dir, split)
    out = {}
    for subject in subjects:
        path = os.path.join(directory, f"{subject}_{split}.csv")
        if not os.path.isfile(path):
            raise MissingDataError("mmlu", f"{path} is missing", f"The {split}/ directory should hold one "
                                   f"file per subject; re-unpack {DATA_URL}.")
        out[subject] = _read_csv(path)
    return out


# ----------------------------------------------------------------------------------------------- prompts
def format_question(question: Question, with_answer: bool) -> str:
    """The original block: question, the lettered options, then "Answer:" and, for exemplars, " X\\n\\n"."""
    text = question.question + "".join(f"\n{l}. {c}" for l, c in zip(LETTERS, question.choices)) + "\nAnswer:"
    return text + f" {question.answer}\n\n" if with_answer else text


def build_prompt(subject: str, dev_examples: Sequence[Question], question: Question, k: int = 5) -> str:
    """Header, the first k dev exemplars (file order, as the original), then the question ending "Answer:"."""
    if not 0 <= k <= len(dev_examples):
        raise ValueError(f"k={k} exemplars asked for {subject!r}, {len(dev_examples)} dev examples given")
    header = HEADER.format("".join(" " + word for word in subject.split("_")))
    return header + "".join(format_question(q, True) for q in dev_examples[:k]) + format_question(question, False)


def fit_prompt(subject: str, dev: Sequence[Question], question: Question, max_len: int,
               length_fn: Callable[[str], int], k: int = 5) -> tuple[str, int]:
    """The k-shot prompt with exemplars dropped from the end, one at a time, until length_fn(prompt) <= max_len
    (the original's rule). Returns (prompt, number dropped); the caller counts drops (summarize_drops)."""
    if k < 0:
        raise ValueError(f"k={k} exemplars asked for {subject!r}; k must be >= 0")
    for shots in range(k, -1, -1):
        prompt = build_prompt(subject, dev, question, shots)
        length = length_fn(prompt)
        if length <= max_len:
            return prompt, k - shots
    raise PromptTooLongError(f"MMLU {subject!r}: the zero-shot prompt has length {length} > max_len={max_len} "
                             f"(question starts {question.question[:60]!r}); raise max_len or skip it with a count")


def summarize_drops(drops: Iterable[tuple[str, int]]) -> dict:
    """Counts over (subject, num_dropped) pairs from fit_prompt, plus a one-line message to log."""
    prompts = with_drops = total = 0
    per_subject: collections.Counter = collections.Counter()
    for subject, dropped in drops:
        prompts += 1
        if dropped:
            with_drops += 1
            total += dropped
            per_subject[subject] += dropped
    worst = ", ".join(f"{s} {n}" for s, n in per_subject.most_common(5))
    message = (f"{with_drops} of {prompts} MMLU prompts dropped exemplars to fit ({total} exemplars in all"
               + (f"; most in {worst})" if worst else ")"))
    return {"prompts": prompts, "prompts_with_drops": with_drops, "exemplars_dropped": total,
            "per_subject": dict(per_subject), "message": message}


def write_prompts(subject: str, split: str, output_jsonl: str, mmlu_dir: str, k: int = 5) -> int:
    """Writes {"task", "index", "input", "target"} per question of the split (full k-shot prompts, nothing
    dropped; index = row in the CSV file, 0-based; target = the letter). Returns the number written."""
    if split == "dev":
        raise ValueError("the dev split is where the exemplars come from; write prompts for val or test")
    dev = load_split(mmlu_dir, "dev", [subject])[subject]
    questions = load_split(mmlu_dir, split, [subject])[subject]
    os.makedirs(os.path.dirname(os.path.abspath(output_jsonl)), exist_ok=True)
    with open(output_jsonl, "w", encoding="utf-8") as f:
        for i, q in enumerate(questions):
            record = {"task": f"mmlu_{subject}", "index": i, "input": build_prompt(subject, dev, q, k),
                      "target": q.answer}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return len(questions)


# ------------------------------------------------------------------------------------- reading an answer
def option_targets(leading_space: bool = False) -> list[str]:
    """The continuations whose log-likelihoods rank classification compares after a prompt ending "Answer:".

    Flan (t5x rank classification) and Hendrycks' evaluate_flan.py score the bare letter as the T5 decoder
    target ("A"; SentencePiece encodes it as "▁A"). For a decoder-only model continuing the prompt text, the
    original evaluate.py read the logprob of " A" (GPT-3 tokens carry the space): pass leading_space=True.
    The prediction is the option with the highest summed log-likelihood (t5x's rank classification); in the
    T5 vocabulary each letter is one token, so sum and mean agree there.
    """
    return [(" " if leading_space else "") + letter for letter in LETTERS]


# The letter given after "answer is" (chain-of-thought endings: "So the answer is (C).").
_ANSWER_IS = re.compile(r"(?i:answer is):?\s*[(\[]?([A-D])(?![A-Za-z0-9])")
# The whole output is a letter, maybe bracketed or followed by "." ")" ":" -- then any case will do.
_BARE = re.compile(r"[(\[]?([A-Da-d])[)\].:]?")
# A standalone capital: after start, whitespace or an opening bracket/quote, and before the end, whitespace or
# punctuation. Not the "A" of "U.S.A." nor the "D" of "I'd".
_STANDALONE = re.compile(r"(?:^|(?<=[\s(\[\"*]))([A-D])(?=$|[\s).,:;\]!?\"*])")


def extract_choice(generation: str) -> str | None:
    """The option letter a generation picks, or None. In order:
    1. the whole stripped output is one letter, any case, maybe "(b)", "[B]", "B.", "B)", "B:";
    2. the letter right after the last "answer is" (chain-of-thought endings);
    3. the first standalone capital A-D (so "B. Paris" and "The answer: C" work).
    Limitation of 3: a sentence opening with the article "A" ("A cat is ...") reads as option A; direct-answer
    prompts ending "Answer:" make models emit the letter first, which is what this is for.
    """
    text = generation.strip()
    bare = _BARE.fullmatch(text)
    if bare:
        return bare.group(1).upper()
    said = list(_ANSWER_IS.finditer(text))
    if said:
        return said[-1].group(1).upper()
    first = _STANDALONE.search(text)
    return first.group(1) if first else None


# ------------------------------------------------------------------------------------------------ scoring
SCORE_COLUMNS = ("name", "kind", "category", "n", "correct", "no_answer", "accuracy_examples",
                 "accuracy_subject_mean", "random")


def score(records: Iterable[Mapping]) -> list[dict]:
    """Accuracy rows from records {"subject", "target", "prediction"} (prediction: a letter or None, which
    counts as wrong and is counted in no_answer).

    Rows: each subject present (SUBJECTS order), each category present, then "ALL". Two averages, named by
    what they weigh: accuracy_examples = correct / examples (the original's category and overall figures,
    and what Flan reports as MMLU), accuracy_subject_mean = the plain mean of the subject accuracies (every
    subject counts once; for a subject row both are the same). Percentages; random is the 25% baseline.
    """
    counts: dict[str, list[int]] = {}  # subject -> [n, correct, no_answer]
    for i, r in enumerate(records):
        subject, target, prediction = r["subject"], r["target"], r["prediction"]
        if subject not in CATEGORIES:
            raise ValueError(f"record {i}: unknown MMLU subject {subject!r}")
        if target not in LETTERS or prediction not in (*LETTERS, None):
            raise ValueError(f"record {i} ({subject}): target {target!r} and prediction {prediction!r} must be "
                             f"letters A-D (prediction may be None)")
        c = counts.setdefault(subject, [0, 0, 0])
        c[0] += 1
        c[1] += prediction == target
        c[2] += prediction is None

    def row(name, kind, category, subjects):
        n, correct, missing = (sum(counts[s][j] for s in subjects) for j in range(3))
        means = [100.0 * counts[s][1] / counts[s][0] for s in subjects]
        return {"name": name, "kind": kind, "category": category, "n": n, "correct": correct,
                "no_answer": missing, "accuracy_examples": 100.0 * correct / n,
                "accuracy_subject_mean": sum(means) / len(means), "random": RANDOM_BASELINE}

    present = [s for s in SUBJECTS if s in counts]
    rows = [row(s, "subject", CATEGORIES[s], [s]) for s in present]
    for category in CATEGORY_NAMES:
        members = [s for s in present if CATEGORIES[s] == category]
        if members:
            rows.append(row(category, "category", category, members))
    if present:
        rows.append(row("ALL", "overall", "", present))
    return rows
