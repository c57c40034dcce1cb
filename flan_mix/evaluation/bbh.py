"""BIG-Bench Hard (Suzgun et al., 2022) the way its authors and the Flan papers run it.

Data: the BIG-Bench-Hard repository layout, `<bbh_dir>/bbh/<task>.json` ({"examples": [{"input",
"target"}]}) and `<bbh_dir>/cot-prompts/<task>.txt` (a canary header, a "-----" line, an optional task
description, then three "Q: ...\\nA: Let's think step by step.\\n... So the answer is X." exemplars).

Prompts: the text after "-----", stripped, exactly as the authors used it. CoT appends
"\\n\\nQ: {input}\\nA: Let's think step by step."; direct turns every exemplar into "Q: ...\\nA: X" (X from
its "So the answer is X.") and appends "\\n\\nQ: {input}\\nA:". Scores are exact-match accuracy per task
and the UNWEIGHTED mean over tasks (Flan's BBH number); answers.py says how answers are read.

Data quirks handled (found in the 27 files): sports_understanding's rationale continues on the
"A: Let's think step by step." line; snarks has a two-paragraph description; tasks have 146 to 250
examples (6,511 in all); option counts vary within a task; three examples have options split at a comma
so their target is no option ("Monsters, Inc"; ruin_names' "dearth, wind, & fire", "rita, sue and bob poo").
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Iterable, Sequence

from flan_mix.data.data_errors import MalformedDataError, MissingDataError
from flan_mix.evaluation.answers import (MODES, PREDICTION_FIELDS, answer_matches, extract_answer, extract_cot_answer,
                                        read_prediction_lines)

BBH_URL = "https://github.com/suzgunmirac/BIG-Bench-Hard"
BBH_TASKS = (
    "boolean_expressions", "causal_judgement", "date_understanding", "disambiguation_qa",
    "dyck_languages", "formal_fallacies", "geometric_shapes", "hyperbaton",
    "logical_deduction_five_objects", "logical_deduction_seven_objects",
    "logical_deduction_three_objects", "movie_recommendation", "multistep_arithmetic_two", "navigate",
    "object_counting", "penguins_in_a_table", "reasoning_about_colored_objects", "ruin_names",
    "salient_translation_error_detection", "snarks", "sports_understanding", "temporal_sequences",
    "tracking_shuffled_objects_five_objects", "tracking_shuffled_objects_seven_objects",
    "tracking_shuffled_objects_three_objects", "web_of_lies", "word_sorting",
)
# Answers are free text (a bracket sequence, a number, a sorted word list): a random guess scores 0.
FREE_FORM_TASKS = frozenset({"dyck_languages", "multistep_arithmetic_two", "object_counting", "word_sorting"})

COT_ANSWER_START = "A: Let's think step by step."
_EXEMPLAR_START = re.compile(r"\n\n(?=Q:)")  # exemplars hold no blank line; a blank line + "Q:" starts one
_OPTION = re.compile(r"^(?:(\([A-Z]\))(?:\s|$)|-\s*(.+?)\s*$)")  # "(A) text" -> "(A)";  "- valid " -> "valid"


@dataclasses.dataclass(frozen=True)
class Example:
    input: str
    target: str


def _check_task(task: str) -> None:
    if task not in BBH_TASKS:
        raise ValueError(f"unknown BBH task {task!r}; the 27 tasks are: {', '.join(BBH_TASKS)}")


def _task_file(bbh_dir: str, folder: str, task: str, ext: str) -> str:
    """The path of a task file; says which layout was expected, and where to get it, when absent."""
    path = os.path.join(bbh_dir, folder, task + ext)
    if not os.path.isfile(path):
        hint = ""
        if os.path.isfile(os.path.join(bbh_dir, task + ".json")):
            hint = f" {bbh_dir} looks like the inner bbh/ folder: pass its parent."
        raise MissingDataError(
            f"bbh/{task}", f"{path} not found",
            f"Expected the BIG-Bench-Hard repository layout: {bbh_dir}/bbh/<task>.json and "
            f"{bbh_dir}/cot-prompts/<task>.txt. Get it with `git clone {BBH_URL}` and pass the clone's "
            f"root.{hint}")
    return path


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise MalformedDataError(path, f"{e.lineno}:{e.colno}", f"invalid JSON: {e.msg}") from None


def load_task(bbh_dir: str, task: str) -> list[Example]:
    """The examples of one task, in file order."""
    _check_task(task)
    path = _task_file(bbh_dir, "bbh", task, ".json")
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("examples"), list):
        raise MalformedDataError(path, "top level", 'expected an object with an "examples" list')
    examples = []
    for i, ex in enumerate(data["examples"]):
        if not (isinstance(ex, dict) and isinstance(ex.get("input"), str) and isinstance(ex.get("target"), str)):
            raise MalformedDataError(path, f"examples[{i}]", 'expected {"input": str, "target": str}')
        examples.append(Example(ex["input"], ex["target"]))
    return examples


def load_bbh(bbh_dir: str, tasks: Sequence[str] = BBH_TASKS) -> dict[str, list[Example]]:
    """{task: examples} for every task (all 27 by default)."""
    return {task: load_task(bbh_dir, task) for task in tasks}


def load_task_prompt(bbh_dir: str, task: str) -> str:
    """The task's few-shot CoT prompt: the text after the "-----" line, stripped (as the authors did)."""
    _check_task(task)
    path = _task_file(bbh_dir, "cot-prompts", task, ".txt")
    with open(path, encoding="utf-8") as f:
        parts = f.read().split("-----")
    if len(parts) != 2:
        raise MalformedDataError(path, "header", f'expected one "-----" line after the header, found {len(parts) - 1}')
    text = parts[1].strip()
    for i, exemplar in enumerate(_split_prompt(text)[1]):  # checked here, where the file can be named
        if f"\n{COT_ANSWER_START}" not in exemplar or not re.search("so the answer is", exemplar, re.I):
            raise MalformedDataError(path, f"exemplar {i}", f'expected "{COT_ANSWER_START}" and "So the answer is"')
    return text


def _split_prompt(prompt_text: str) -> tuple[str, list[str]]:
    """(description, exemplars): the description is what precedes the first "Q:" (snarks has two paragraphs)."""
    pieces = _EXEMPLAR_START.split(prompt_text.strip())
    if pieces[0].startswith("Q:"):
        return "", pieces
    return pieces[0], pieces[1:]


def few_shot_exemplars(prompt_text: str, mode: str) -> list[str]:
    """The prompt's exemplars: whole for "cot"; "Q: ...\\nA: X" for "direct"."""
    _, exemplars = _split_prompt(prompt_text)
    if mode == "cot":
        return exemplars
    if mode != "direct":
        raise ValueError(f"unknown prompt mode {mode!r}; expected one of {MODES}")
    direct = []
    for i, exemplar in enumerate(exemplars):
        if "\n" + COT_ANSWER_START not in exemplar:
            raise ValueError(f'exemplar {i} has no "{COT_ANSWER_START}" line: {exemplar[:80]!r}')
        question = exemplar[: exemplar.index("\n" + COT_ANSWER_START)]
        direct.append(f"{question}\nA: {extract_cot_answer(exemplar)}")
    return direct


def build_prompt(prompt_text: str, input: str, mode: str) -> str:
    """The full model input: description, the exemplars of `mode`, then the question."""
    description, _ = _split_prompt(prompt_text)
    shots = few_shot_exemplars(prompt_text, mode)
    suffix = f"Q: {input}\nA: Let's think step by step." if mode == "cot" else f"Q: {input}\nA:"
    return "\n\n".join(([description] if description else []) + shots + [suffix])


def write_prompts(task: str, mode: str, output_jsonl: str, bbh_dir: str) -> int:
    """Writes one {"task", "index", "input" (the full prompt), "target"} line per example; returns the count."""
    prompt_text = load_task_prompt(bbh_dir, task)
    examples = load_task(bbh_dir, task)
    os.makedirs(os.path.dirname(os.path.abspath(output_jsonl)), exist_ok=True)
    with open(output_jsonl, "w", encoding="utf-8") as f:
        for i, ex in enumerate(examples):
            row = {"task": task, "index": i, "input": build_prompt(prompt_text, ex.input, mode), "target": ex.target}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(examples)


def options(input: str) -> list[str]:
    """The answer labels of an input's "Options:" block: "(A)", "(B)", ... or the "- Yes" texts."""
    if "\nOptions:\n" not in input:
        return []
    lines = input.rsplit("\nOptions:\n", 1)[1].split("\n")
    return [m.group(1) or m.group(2) for m in map(_OPTION.match, lines) if m]


def random_baseline(task: str, examples: Sequence[Example]) -> float:
    """Expected accuracy (%) of guessing uniformly among the answer options: 0 for free-form tasks.

    Per example 100/k over its k listed options (0 where the target is not among them: 3 examples whose
    options were split at a comma), averaged over the task; option counts vary within a task (e.g.
    reasoning_about_colored_objects has 2 to 18). Tasks without an Options block (boolean_expressions,
    sports_understanding, web_of_lies) guess among the task's distinct targets: 50%.
    """
    _check_task(task)
    if task in FREE_FORM_TASKS:
        return 0.0
    if not examples:
        raise ValueError(f"random_baseline({task!r}) needs the task's examples, got none")
    distinct = {ex.target for ex in examples}
    total = 0.0
    for ex in examples:
        labels = options(ex.input) or distinct
        total += 100.0 / len(labels) if ex.target in labels else 0.0
    return total / len(examples)


def score_predictions(records: Iterable[dict[str, Any]], mode: str | None = None,
                      baselines: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """Per-task accuracy rows (BBH_TASKS order) and a final "MEAN" row, the unweighted mean over tasks.

    records: {"task", "prediction", "target"}. mode=None scores predictions as given (already answers);
    "cot"/"direct" first extracts the answer from raw generations. With baselines ({task: % from
    random_baseline}) rows also carry `random` and `normalized` = 100 (acc - random) / (100 - random),
    BIG-bench's normalized score, which the Flan papers average. The mean is over the tasks present;
    `num_tasks` says how many (27 for the BBH number).
    """
    hits: dict[str, list[bool]] = {}
    for i, rec in enumerate(records):
        missing = [k for k in ("task", "prediction", "target") if not isinstance(rec.get(k), str)]
        if missing:
            raise ValueError(f"record {i}: missing or non-string field(s) {missing}")
        _check_task(rec["task"])
        pred = rec["prediction"] if mode is None else extract_answer(rec["prediction"], mode)
        hits.setdefault(rec["task"], []).append(answer_matches(pred, rec["target"]))
    rows = []
    for task in (t for t in BBH_TASKS if t in hits):
        row = {"task": task, "n": len(hits[task]), "correct": sum(hits[task]),
               "accuracy": 100.0 * sum(hits[task]) / len(hits[task])}
        if baselines is not None:
            if task not in baselines:
                raise ValueError(f"no random baseline for task {task!r} (baselines has {len(baselines)} tasks)")
            row["random"] = baselines[task]
            row["normalized"] = 100.0 * (row["accuracy"] - row["random"]) / (100.0 - row["random"])
        rows.append(row)
    if rows:
        mean = {"task": "MEAN", "n": sum(r["n"] for r in rows), "num_tasks": len(rows)}
        for key in ("accuracy", "random", "normalized"):
            if key in rows[0]:
                mean[key] = sum(r[key] for r in rows) / len(rows)
        rows.append(mean)
    return rows


def read_predictions_jsonl(path: str) -> list[dict[str, str]]:
    """Records from a JSONL file of {"task", "prediction", "target"} lines; errors name file and line."""
    records = []
    for lineno, rec in read_prediction_lines(path):
        if rec["task"] not in BBH_TASKS:
            raise MalformedDataError(path, str(lineno), f"unknown BBH task {rec['task']!r}")
        records.append({k: rec[k] for k in PREDICTION_FIELDS})
    return records


def task_from_filename(path: str) -> str:
    """The BBH task a repository output file is named after: "<task>.json" or "<task>_<anything>.json"."""
    stem = os.path.splitext(os.path.basename(path))[0]
    found = [t for t in BBH_TASKS if stem == t or stem.startswith(t + "_")]
    if not found:
        raise MalformedDataError(path, "file name", "names no BBH task (expected <task>.json or <task>_*.json)")
    return max(found, key=len)


def read_bbh_outputs(path: str) -> list[dict[str, str]]:
    """Records from the BBH repository's output files ({"outputs": [{"input", "prediction", "target"}]}),
    the task taken from each file name. `path` is one file or a directory (its *.json files, sorted).
    The predictions are raw generations: score them with mode="cot" or "direct"."""
    if os.path.isdir(path):
        files = sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".json"))
        if not files:
            raise MissingDataError("bbh outputs", f"no *.json output files in {path}",
                                   "Pass a directory of <task>*.json files or one such file.")
    elif os.path.isfile(path):
        files = [path]
    else:
        raise MissingDataError("bbh outputs", f"{path} not found", "Pass a <task>*.json output file or its directory.")
    records = []
    for file in files:
        task = task_from_filename(file)
        data = _read_json(file)
        if not isinstance(data, dict) or not isinstance(data.get("outputs"), list):
            raise MalformedDataError(file, "top level", 'expected an object with an "outputs" list')
        for i, out in enumerate(data["outputs"]):
            out = out if isinstance(out, dict) else {}
            missing = [k for k in ("prediction", "target") if not isinstance(out.get(k), str)]
            if missing:
                raise MalformedDataError(file, f"outputs[{i}]", f"missing or non-string field(s) {missing}")
            records.append({"task": task, "prediction": out["prediction"], "target": out["target"]})
    return records
