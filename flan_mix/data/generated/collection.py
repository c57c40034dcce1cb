"""The offline generated mini-collection behind the embedded default (`python run.py`).

Twenty-five small tasks over ten abilities, generated from a seed, so that the default run needs no files and
no network. Each task is sized for a tiny T5 trained for minutes on a CPU (a few thousand examples per task):
short inputs, answers of a few tokens, a small regular vocabulary, small number ranges (single-digit sums,
numbers up to 30, ten letters, offsets of a few days), and a real skill (add two numbers, sort three words,
count letters, follow a two-fact deduction, trace three lines of code, ...).

The examples come from flan_mix.data.generated.generators; this module lists the tasks and draws their splits.

Splits. Whether a question belongs to "train" or "validation" is a fixed function of (task, question text), the
same for every seed, so no validation question ever appears in a train split. Within a split, examples are
unique (question and options) and drawn by a `random.Random` seeded from sha256(seed, task, split).

Held-out tasks (`held_out=True`) are kept out of the training mixture for zero-shot evaluation. Each is a new
phrasing or a new multiple-choice variant of a trained skill, so transfer is plausible.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import random
from typing import Callable

from flan_mix.data.generated import generators as gen

SPLITS = ("train", "validation")
# One question in VALIDATION_MODULUS (by hash of the question text) belongs to the validation split.
VALIDATION_MODULUS = 5


@dataclasses.dataclass(frozen=True)
class GeneratedTask:
    """A generated task: its name, the ability it tests, its template family and its example generator.

    family: "generic_qa" (free-form) or "generic_mc" (multiple choice). Tasks with `has_cot` also render with
    the "cot" family (rationale + answer) for their chain-of-thought variants.
    generate: rng -> example (question, answer, options, rationale); split membership is applied on top.
    """

    name: str
    ability: str
    family: str
    held_out: bool
    has_cot: bool
    description: str
    generate: Callable[[random.Random], dict] = dataclasses.field(repr=False, compare=False)

    @property
    def is_mc(self) -> bool:
        return self.family == "generic_mc"


def derive_seed(*parts) -> int:
    """A 63-bit seed from any parts, stable across processes and Python versions (never Python's hash())."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def split_of(task_name: str, question: str) -> str:
    """The split a question belongs to: a fixed function of the task and the question text, not of the seed."""
    digest = hashlib.sha256(f"split|{task_name}|{question}".encode("utf-8")).digest()
    return "validation" if int.from_bytes(digest[:4], "big") % VALIDATION_MODULUS == 0 else "train"


def _task(name, ability, family, generate, description, held_out=False, has_cot=False):
    return GeneratedTask(name=name, ability=ability, family=family, held_out=held_out, has_cot=has_cot,
                         description=description, generate=generate)


_QA, _MC = "generic_qa", "generic_mc"
GENERATED_TASKS: dict[str, GeneratedTask] = {t.name: t for t in (
    _task("add_word_problem", "arithmetic", _QA, gen.add_word_problem, "add two one-digit numbers in a story",
          has_cot=True),
    _task("sub_word_problem", "arithmetic", _QA, gen.sub_word_problem, "subtract (answer 1-9) in a story",
          has_cot=True),
    _task("two_step_word_problem", "arithmetic", _QA, gen.two_step_word_problem, "add then subtract in a story",
          has_cot=True),
    _task("bare_addition", "arithmetic", _QA, gen.bare_addition, "add two one-digit numbers, no story", held_out=True),
    _task("larger_number_mc", "comparison", _MC, gen.larger_number_mc, "pick the larger of two numbers"),
    _task("max_of_list", "comparison", _QA, gen.max_of_list, "largest of 3-4 numbers up to 30"),
    _task("sort_words", "sorting", _QA, gen.sort_words, "sort 3-4 words alphabetically"),
    _task("sort_numbers", "sorting", _QA, gen.sort_numbers, "sort 3-4 one-digit numbers ascending"),
    _task("first_alphabetically_mc", "sorting", _MC, gen.first_alphabetically_mc,
          "which word comes first alphabetically", held_out=True),
    _task("count_letter", "counting", _QA, gen.count_letter, "occurrences of a letter in a spelled word"),
    _task("word_length", "counting", _QA, gen.word_length, "number of letters in a spelled word"),
    _task("count_category", "counting", _QA, gen.count_category, "how many list items are animals/fruits/colors",
          has_cot=True),
    _task("weekday_offset", "dates", _QA, gen.weekday_offset, "weekday 1-4 days later", has_cot=True),
    _task("month_after_mc", "dates", _MC, gen.month_after_mc, "month 1-3 months later"),
    _task("weekday_offset_mc", "dates", _MC, gen.weekday_offset_mc, "weekday k days later, multiple choice",
          held_out=True),
    _task("boolean_expression", "boolean_logic", _QA, gen.boolean_expression, "evaluate and/or/not over True/False"),
    _task("boolean_expression_mc", "boolean_logic", _MC, gen.boolean_expression_mc,
          "evaluate a boolean expression, multiple choice", held_out=True),
    _task("reverse_letters", "string_edit", _QA, gen.reverse_letters, "reverse 3-4 spelled letters"),
    _task("uppercase_letters", "string_edit", _QA, gen.uppercase_letters, "upper-case 3-4 spelled letters"),
    _task("table_lookup", "table_lookup", _QA, gen.table_lookup, "read a cell of a 3-row table"),
    _task("table_lookup_mc", "table_lookup", _MC, gen.table_lookup_mc, "read a cell, multiple choice",
          held_out=True),
    _task("syllogism_mc", "entailment", _MC, gen.syllogism_mc, "yes/no/can't tell from two generated facts"),
    _task("ranking_chain", "entailment", _QA, gen.ranking_chain, "who is tallest/shortest from two facts",
          has_cot=True),
    _task("trace_assign", "code_tracing", _QA, gen.trace_assign, "trace x = 3; x += 2; print(x)", has_cot=True),
    _task("trace_if_mc", "code_tracing", _MC, gen.trace_if_mc, "trace a conditional print"),
)}

TRAIN_TASK_NAMES: tuple[str, ...] = tuple(n for n, t in GENERATED_TASKS.items() if not t.held_out)
HELD_OUT_TASK_NAMES: tuple[str, ...] = tuple(n for n, t in GENERATED_TASKS.items() if t.held_out)
ABILITIES: tuple[str, ...] = tuple(sorted({t.ability for t in GENERATED_TASKS.values()}))


def get_generated_task(name: str) -> GeneratedTask:
    if name not in GENERATED_TASKS:
        close = difflib.get_close_matches(name, list(GENERATED_TASKS), n=5, cutoff=0.4)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise KeyError(f"Unknown generated task '{name}' (flan_mix/data/generated/collection.py).{hint} "
                       f"Known: {', '.join(GENERATED_TASKS)}.")
    return GENERATED_TASKS[name]


def generate_split(task_name: str, split: str, num_examples: int, seed: int = 0) -> list[dict]:
    """`num_examples` unique examples of `task_name` from `split` ("train" or "validation"), determined by seed.

    Raises ValueError when the task's question space runs out of unique examples of the split.
    """
    task = get_generated_task(task_name)
    if split not in SPLITS:
        raise ValueError(f"Unknown split '{split}' for generated task '{task_name}'; use one of {SPLITS}.")
    if num_examples < 0:
        raise ValueError(f"num_examples must be >= 0, got {num_examples} (task '{task_name}', split '{split}').")
    rng = random.Random(derive_seed("generated", seed, task_name, split))
    seen, out = set(), []
    misses, max_misses = 0, 20_000  # consecutive draws that were repeats or in the other split
    while len(out) < num_examples:
        ex = task.generate(rng)
        key = (ex["question"], ex["options"])
        if key in seen or split_of(task_name, ex["question"]) != split:
            misses += 1
            if misses > max_misses:
                raise ValueError(
                    f"Generated task '{task_name}' ran out of unique '{split}' questions after {len(out)} examples "
                    f"(asked for {num_examples}): its question space is too small. Ask for fewer examples "
                    f"(register_generated_tasks(num_train=..., num_validation=...)).")
            continue
        misses = 0
        seen.add(key)
        out.append(ex)
    return out
