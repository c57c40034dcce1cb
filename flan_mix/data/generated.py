"""The offline generated mini-collection behind the embedded default (`python run.py`).

Twenty-five small tasks over ten abilities, generated from a seed, so that the default run needs no files and
no network. Each task is sized for a tiny T5 trained for minutes on a CPU (a few thousand examples per task):
short inputs, answers of a few tokens, a small regular vocabulary, small number ranges (single-digit sums,
numbers up to 30, ten letters, offsets of a few days), and a real skill (add two numbers, sort three words,
count letters, follow a two-fact deduction, trace three lines of code, ...).

An example is a dict::

    {"question": str, "answer": str, "options": tuple[str, ...], "rationale": str}

`options` is empty for free-form tasks; for multiple-choice tasks `answer` is one of `options` and the question
names the candidates itself, so the question stays answerable when a template drops the options block.
`rationale` is a worked chain of thought for tasks with `has_cot`, else "".

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

Example = dict
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
    generate: Callable[[random.Random], Example] = dataclasses.field(repr=False, compare=False)

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


# ----------------------------------------------------------------------------------------------------------
# Small, regular word lists.
NAMES = ("Ann", "Ben", "Cal", "Dan", "Eva", "Fay", "Gus", "Hal", "Ivy", "Jon", "Kim", "Leo", "Mia", "Ned",
         "Pam", "Rex", "Sam", "Tom", "Uma", "Val", "Wes", "Zoe")
OBJECTS = ("apples", "pens", "books", "cards", "coins", "shells", "stickers", "marbles", "cookies", "stamps",
           "balls", "cups")
# Distinct first letters, so alphabetical order is decided by the first letter.
SORT_WORDS = ("apple", "bird", "cat", "dog", "egg", "fish", "goat", "hat", "ink", "jar", "kite", "lamp", "moon",
              "nest", "owl", "pen", "queen", "rose", "sun", "tree", "urn", "van", "wolf", "yarn", "zoo")
CATEGORIES = {
    "animals": ("cat", "dog", "cow", "pig", "fox", "owl", "hen", "bee"),
    "fruits": ("apple", "pear", "plum", "lime", "fig", "kiwi", "grape", "melon"),
    "colors": ("red", "blue", "green", "pink", "gray", "black", "white", "brown"),
}
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
EVENTS = ("party", "trip", "test", "game", "visit", "concert", "picnic", "meeting")
LETTERS = "abcdefghijklmnopqrstuvwxyz"
SMALL_ALPHABET = "abcdefghij"
NONCE_KINDS = ("wug", "dax", "blick", "fep", "zorp", "toma", "lorp", "kiki")
PROPERTIES = ("red", "blue", "tall", "small", "fast", "loud", "soft", "cold")
TABLE_COLUMNS = {
    "age": tuple(str(n) for n in range(18, 70)),
    "city": ("Paris", "Rome", "Oslo", "Lima", "Cairo", "Delhi", "Tokyo", "Quito", "Vienna", "Dublin"),
    "pet": ("cat", "dog", "fish", "bird", "horse", "rabbit", "turtle", "snake"),
    "color": ("red", "blue", "green", "pink", "gray", "black", "white", "brown"),
}
COMPARATIVES = (("taller", "tallest", "shortest"), ("older", "oldest", "youngest"),
                ("faster", "fastest", "slowest"))
CODE_VARS = ("x", "y", "n", "a", "b", "total", "count")
CODE_WORD_PAIRS = (("big", "small"), ("yes", "no"), ("hot", "cold"), ("high", "low"), ("win", "lose"),
                   ("on", "off"))
NO_ANSWER = "it is not possible to tell"


def _mc(question: str, options, answer: str, rationale: str = "") -> Example:
    options = tuple(options)
    assert answer in options, (question, options, answer)
    return {"question": question, "answer": answer, "options": options, "rationale": rationale}


def _qa(question: str, answer: str, rationale: str = "") -> Example:
    return {"question": question, "answer": answer, "options": (), "rationale": rationale}


def _spaced(s: str) -> str:
    return " ".join(s)


def _random_letters(rng: random.Random, lo: int, hi: int, alphabet: str = LETTERS) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(lo, hi)))


def _join_or(items) -> str:
    items = list(items)
    return ", ".join(items[:-1]) + " or " + items[-1]


def _join_and(items) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# ----------------------------------------------------------------------------------------------------------
# arithmetic
def _add_word_problem(rng):
    name, obj = rng.choice(NAMES), rng.choice(OBJECTS)
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    frame = rng.randrange(3)
    if frame == 0:
        q = f"{name} has {a} {obj} and gets {b} more. How many {obj} does {name} have now?"
    elif frame == 1:
        q = f"{name} had {a} {obj}. A friend gave {name} {b} more {obj}. How many {obj} does {name} have?"
    else:
        q = f"There are {a} {obj} in a box. {name} puts in {b} more. How many {obj} are in the box?"
    r = f"We start with {a} {obj} and add {b} more. {a} + {b} = {a + b}."
    return _qa(q, str(a + b), r)


def _sub_word_problem(rng):
    name, obj = rng.choice(NAMES), rng.choice(OBJECTS)
    b, left = rng.randint(1, 9), rng.randint(1, 9)
    a = b + left
    frame = rng.randrange(3)
    if frame == 0:
        q = f"{name} has {a} {obj} and gives away {b}. How many {obj} are left?"
    elif frame == 1:
        q = f"{name} had {a} {obj} but lost {b} of them. How many {obj} does {name} have now?"
    else:
        q = f"There were {a} {obj} on the table. {name} took {b}. How many {obj} are on the table now?"
    r = f"We start with {a} {obj} and take away {b}. {a} - {b} = {a - b}."
    return _qa(q, str(a - b), r)


def _two_step_word_problem(rng):
    name, other = rng.sample(NAMES, 2)
    obj = rng.choice(OBJECTS)
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    c = rng.randint(1, a + b - 1)
    q = (f"{name} has {a} {obj}, buys {b} more, and then gives {c} to {other}. "
         f"How many {obj} does {name} have now?")
    s = a + b
    r = (f"{name} starts with {a} {obj}. After buying {b} more: {a} + {b} = {s}. "
         f"After giving {c} away: {s} - {c} = {s - c}.")
    return _qa(q, str(s - c), r)


def _bare_addition(rng):
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    frame = rng.randrange(4)
    if frame == 3:
        q = f"{rng.choice(NAMES)} asks: what is {a} + {b}?"
    else:
        q = (f"What is {a} + {b}?", f"Compute {a} + {b}.", f"Find the sum of {a} and {b}.")[frame]
    return _qa(q, str(a + b))


# comparison
def _larger_number_mc(rng):
    a, b = rng.sample(range(1, 31), 2)
    frame = rng.randrange(3)
    q = (f"Which number is larger: {a} or {b}?", f"Which is bigger, {a} or {b}?",
         f"Pick the greater number: {a} or {b}.")[frame]
    return _mc(q, (str(a), str(b)), str(max(a, b)))


def _max_of_list(rng):
    nums = rng.sample(range(1, 31), rng.randint(3, 4))
    listed = ", ".join(map(str, nums))
    frame = rng.randrange(2)
    q = (f"What is the largest number in this list: {listed}?", f"Find the biggest number: {listed}.")[frame]
    return _qa(q, str(max(nums)))


# sorting
def _sort_words(rng):
    words = rng.sample(SORT_WORDS, rng.randint(3, 4))
    frame = rng.randrange(2)
    q = (f"Sort these words in alphabetical order: {', '.join(words)}",
         f"Put these words in alphabetical order: {', '.join(words)}")[frame]
    return _qa(q, ", ".join(sorted(words)))


def _sort_numbers(rng):
    nums = rng.sample(range(1, 10), rng.randint(3, 4))
    frame = rng.randrange(2)
    listed = ", ".join(map(str, nums))
    q = (f"Sort these numbers from smallest to largest: {listed}",
         f"Order from lowest to highest: {listed}")[frame]
    return _qa(q, ", ".join(map(str, sorted(nums))))


def _first_alphabetically_mc(rng):
    words = rng.sample(SORT_WORDS, rng.randint(3, 4))
    q = f"Which word comes first in alphabetical order: {_join_or(words)}?"
    return _mc(q, words, min(words))


# counting
def _count_letter(rng):
    alphabet = "abcd"
    word = _random_letters(rng, 3, 5, alphabet)
    letter = rng.choice(word) if rng.random() < 0.9 else rng.choice(alphabet)
    frame = rng.randrange(2)
    q = (f"How many times does the letter {letter} appear in: {_spaced(word)}?",
         f"Count the letter {letter} in: {_spaced(word)}")[frame]
    return _qa(q, str(word.count(letter)))


def _word_length(rng):
    word = _random_letters(rng, 2, 7, SMALL_ALPHABET)
    frame = rng.randrange(2)
    q = (f"How many letters are in: {_spaced(word)}?", f"Count the letters: {_spaced(word)}")[frame]
    return _qa(q, str(len(word)))


def _count_category(rng):
    category = rng.choice(sorted(CATEGORIES))
    pool = [(w, c) for c in sorted(CATEGORIES) for w in CATEGORIES[c]]
    items = rng.sample(pool, rng.randint(3, 5))  # the category word lists are disjoint
    members = [w for w, c in items if c == category]
    q = f"How many {category} are in this list: {', '.join(w for w, _ in items)}?"
    if members:
        r = f"The {category} in the list are {_join_and(members)}. That makes {len(members)}."
    else:
        r = f"None of the items are {category}. That makes 0."
    return _qa(q, str(len(members)), r)


# dates
def _weekday_offset(rng):
    start, k = rng.randrange(7), rng.randint(1, 4)
    day, end = WEEKDAYS[start], WEEKDAYS[(start + k) % 7]
    frame = rng.randrange(3)
    if frame == 0:
        q = f"Today is {day}. What day of the week will it be in {k} days?"
    elif frame == 1:
        name, event = rng.choice(NAMES), rng.choice(EVENTS)
        q = f"{name} has a {event} {k} days after {day}. On what day is the {event}?"
    else:
        name = rng.choice(NAMES)
        q = f"{name} starts reading on {day} and finishes {k} days later. On what day does {name} finish?"
    steps = ", ".join(WEEKDAYS[(start + i) % 7] for i in range(1, k + 1))
    r = f"Counting {k} days forward from {day}: {steps}."
    return _qa(q, end, r)


def _month_after_mc(rng):
    start, k = rng.randrange(12), rng.randint(1, 3)
    answer = MONTHS[(start + k) % 12]
    if rng.random() < 0.2:
        q = f"Which month comes {k} months after {MONTHS[start]}?"
    else:
        a, b = rng.sample(NAMES, 2)
        q = f"{a} was born in {MONTHS[start]}. {b} was born {k} months after {a}. In which month was {b} born?"
    distractors = rng.sample([m for m in MONTHS if m != answer], 3)
    options = distractors + [answer]
    rng.shuffle(options)
    return _mc(q, options, answer)


def _weekday_offset_mc(rng):
    start, k = rng.randrange(7), rng.randint(1, 4)
    answer = WEEKDAYS[(start + k) % 7]
    if rng.random() < 0.3:
        q = f"If today is {WEEKDAYS[start]}, what day is it {k} days from now?"
    else:
        name = rng.choice(NAMES)
        q = (f"{name} leaves on a trip on {WEEKDAYS[start]} and comes back {k} days later. "
             f"On which day does {name} come back?")
    options = rng.sample([d for d in WEEKDAYS if d != answer], 3) + [answer]
    rng.shuffle(options)
    return _mc(q, options, answer)


# boolean logic
def _bool_atom(rng):
    val = rng.random() < 0.5
    neg = rng.random() < 0.35
    text = ("not " if neg else "") + str(val)
    return text, (not val) if neg else val


def _bool_expression(rng, want: bool):
    while True:
        n = rng.choice((2, 3, 3, 4))
        atoms = [_bool_atom(rng)[0] for _ in range(n)]
        ops = [rng.choice(("and", "or")) for _ in range(n - 1)]
        text = atoms[0]
        grouped = n >= 3 and rng.random() < 0.4  # parenthesize the first two operands
        for i, (op, atom) in enumerate(zip(ops, atoms[1:])):
            text = f"{text} {op} {atom}"
            if grouped and i == 0:
                text = f"( {text} )"
        value = _eval_bool(text)
        if value == want:
            return text, value


def _eval_bool(text: str) -> bool:
    """Evaluates a generated expression with Python's own precedence (not > and > or)."""
    tokens = text.replace("(", " ( ").replace(")", " ) ").split()
    allowed = {"True", "False", "and", "or", "not", "(", ")"}
    if not set(tokens) <= allowed:
        raise ValueError(f"not a boolean expression: {text!r}")
    return bool(eval(" ".join(tokens), {"__builtins__": {}}, {}))  # only the whitelisted tokens above


def _boolean_expression(rng):
    text, value = _bool_expression(rng, rng.random() < 0.5)
    frame = rng.randrange(2)
    q = (f"Evaluate: {text}", f"What is the value of {text}?")[frame]
    return _qa(q, str(value))


def _boolean_expression_mc(rng):
    text, value = _bool_expression(rng, rng.random() < 0.5)
    q = f"Is the following expression True or False? {text}"
    return _mc(q, ("True", "False"), str(value))


# string edits
def _reverse_letters(rng):
    word = _random_letters(rng, 3, 4, SMALL_ALPHABET)
    frame = rng.randrange(2)
    q = (f"Reverse the letters: {_spaced(word)}", f"Write these letters in reverse order: {_spaced(word)}")[frame]
    return _qa(q, _spaced(word[::-1]))


def _uppercase_letters(rng):
    word = _random_letters(rng, 3, 4, SMALL_ALPHABET)
    frame = rng.randrange(2)
    q = (f"Write in capital letters: {_spaced(word)}", f"Change to upper case: {_spaced(word)}")[frame]
    return _qa(q, _spaced(word.upper()))


# table lookup
def _table(rng):
    names = rng.sample(NAMES, 3)
    col = rng.choice(sorted(TABLE_COLUMNS))
    values = rng.sample(TABLE_COLUMNS[col], 3)
    text = f"name | {col}. " + ". ".join(f"{n} | {v}" for n, v in zip(names, values)) + "."
    return names, col, values, text


def _table_lookup(rng):
    names, col, values, text = _table(rng)
    i = rng.randrange(3)
    frame = rng.randrange(2)
    q = (f"{text} What is the {col} of {names[i]}?", f"Table: {text} Look up the {col} of {names[i]}.")[frame]
    return _qa(q, values[i])


def _table_lookup_mc(rng):
    names, col, values, text = _table(rng)
    i = rng.randrange(3)
    q = f"Table: {text} Which {col} does {names[i]} have: {_join_or(values)}?"
    return _mc(q, values, values[i])


# entailment over generated facts
def _syllogism_mc(rng):
    name = rng.choice(NAMES)
    kind, other_kind = rng.sample(NONCE_KINDS, 2)
    prop = rng.choice(PROPERTIES)
    case = rng.randrange(3)
    if case == 0:
        facts, answer = [f"All {kind}s are {prop}.", f"{name} is a {kind}."], "yes"
    elif case == 1:
        facts, answer = [f"No {kind}s are {prop}.", f"{name} is a {kind}."], "no"
    else:  # the rule is about another kind
        facts, answer = [f"{rng.choice(('All', 'No'))} {kind}s are {prop}.", f"{name} is a {other_kind}."], NO_ANSWER
    rng.shuffle(facts)
    q = f"Facts: {' '.join(facts)} Question: Is {name} {prop}? Answer yes, no or {NO_ANSWER}."
    return _mc(q, ("yes", "no", NO_ANSWER), answer)


def _ranking_chain(rng):
    top, mid, low = rng.sample(NAMES, 3)
    comp, most, least = rng.choice(COMPARATIVES)
    facts = [f"{top} is {comp} than {mid}.", f"{mid} is {comp} than {low}."]
    rng.shuffle(facts)
    chain = f"{top} is {comp} than {mid}, and {mid} is {comp} than {low}."
    if rng.random() < 0.5:
        q, answer, r = f"{' '.join(facts)} Who is the {most}?", top, f"{chain} So the {most} is {top}."
    else:
        q, answer, r = f"{' '.join(facts)} Who is the {least}?", low, f"{chain} So the {least} is {low}."
    return _qa(q, answer, r)


# code tracing
def _trace_assign(rng):
    var = rng.choice(CODE_VARS)
    value = rng.randint(0, 9)
    lines, steps = [f"{var} = {value}"], [f"{var} starts at {value}."]
    for _ in range(rng.randint(1, 2)):
        if rng.random() < 0.5 or value < 2:
            d = rng.randint(1, 5)
            value += d
            lines.append(f"{var} += {d}")
        else:
            d = rng.randint(1, min(5, value))
            value -= d
            lines.append(f"{var} -= {d}")
        steps.append(f"After {lines[-1]}, {var} is {value}.")
    lines.append(f"print({var})")
    q = f"What does this code print? {'; '.join(lines)}"
    return _qa(q, str(value), " ".join(steps))


def _trace_if_mc(rng):
    var = rng.choice(CODE_VARS)
    hi_word, lo_word = rng.choice(CODE_WORD_PAIRS)
    op = rng.choice((">", "<", ">=", "<="))
    x, y = rng.randint(0, 9), rng.randint(0, 9)
    if rng.random() < 0.15:
        y = x
    code = f"{var} = {x}; print('{hi_word}' if {var} {op} {y} else '{lo_word}')"
    holds = {">": x > y, "<": x < y, ">=": x >= y, "<=": x <= y}[op]
    q = f"What does this code print: {code}? Answer {hi_word} or {lo_word}."
    return _mc(q, (hi_word, lo_word), hi_word if holds else lo_word)


# ----------------------------------------------------------------------------------------------------------
def _task(name, ability, family, generate, description, held_out=False, has_cot=False):
    return GeneratedTask(name=name, ability=ability, family=family, held_out=held_out, has_cot=has_cot,
                         description=description, generate=generate)


_QA, _MC = "generic_qa", "generic_mc"
GENERATED_TASKS: dict[str, GeneratedTask] = {t.name: t for t in (
    _task("add_word_problem", "arithmetic", _QA, _add_word_problem, "add two one-digit numbers in a story",
          has_cot=True),
    _task("sub_word_problem", "arithmetic", _QA, _sub_word_problem, "subtract (answer 1-9) in a story", has_cot=True),
    _task("two_step_word_problem", "arithmetic", _QA, _two_step_word_problem, "add then subtract in a story",
          has_cot=True),
    _task("bare_addition", "arithmetic", _QA, _bare_addition, "add two one-digit numbers, no story", held_out=True),
    _task("larger_number_mc", "comparison", _MC, _larger_number_mc, "pick the larger of two numbers"),
    _task("max_of_list", "comparison", _QA, _max_of_list, "largest of 3-4 numbers up to 30"),
    _task("sort_words", "sorting", _QA, _sort_words, "sort 3-4 words alphabetically"),
    _task("sort_numbers", "sorting", _QA, _sort_numbers, "sort 3-4 one-digit numbers ascending"),
    _task("first_alphabetically_mc", "sorting", _MC, _first_alphabetically_mc,
          "which word comes first alphabetically", held_out=True),
    _task("count_letter", "counting", _QA, _count_letter, "occurrences of a letter in a spelled word"),
    _task("word_length", "counting", _QA, _word_length, "number of letters in a spelled word"),
    _task("count_category", "counting", _QA, _count_category, "how many list items are animals/fruits/colors",
          has_cot=True),
    _task("weekday_offset", "dates", _QA, _weekday_offset, "weekday 1-4 days later", has_cot=True),
    _task("month_after_mc", "dates", _MC, _month_after_mc, "month 1-3 months later"),
    _task("weekday_offset_mc", "dates", _MC, _weekday_offset_mc, "weekday k days later, multiple choice",
          held_out=True),
    _task("boolean_expression", "boolean_logic", _QA, _boolean_expression, "evaluate and/or/not over True/False"),
    _task("boolean_expression_mc", "boolean_logic", _MC, _boolean_expression_mc,
          "evaluate a boolean expression, multiple choice", held_out=True),
    _task("reverse_letters", "string_edit", _QA, _reverse_letters, "reverse 3-4 spelled letters"),
    _task("uppercase_letters", "string_edit", _QA, _uppercase_letters, "upper-case 3-4 spelled letters"),
    _task("table_lookup", "table_lookup", _QA, _table_lookup, "read a cell of a 3-row table"),
    _task("table_lookup_mc", "table_lookup", _MC, _table_lookup_mc, "read a cell, multiple choice",
          held_out=True),
    _task("syllogism_mc", "entailment", _MC, _syllogism_mc, "yes/no/can't tell from two generated facts"),
    _task("ranking_chain", "entailment", _QA, _ranking_chain, "who is tallest/shortest from two facts",
          has_cot=True),
    _task("trace_assign", "code_tracing", _QA, _trace_assign, "trace x = 3; x += 2; print(x)", has_cot=True),
    _task("trace_if_mc", "code_tracing", _MC, _trace_if_mc, "trace a conditional print"),
)}

TRAIN_TASK_NAMES: tuple[str, ...] = tuple(n for n, t in GENERATED_TASKS.items() if not t.held_out)
HELD_OUT_TASK_NAMES: tuple[str, ...] = tuple(n for n, t in GENERATED_TASKS.items() if t.held_out)
ABILITIES: tuple[str, ...] = tuple(sorted({t.ability for t in GENERATED_TASKS.values()}))


def get_generated_task(name: str) -> GeneratedTask:
    if name not in GENERATED_TASKS:
        close = difflib.get_close_matches(name, list(GENERATED_TASKS), n=5, cutoff=0.4)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise KeyError(f"Unknown generated task '{name}' (flan_mix/data/generated.py).{hint} "
                       f"Known: {', '.join(GENERATED_TASKS)}.")
    return GENERATED_TASKS[name]


def generate_split(task_name: str, split: str, num_examples: int, seed: int = 0) -> list[Example]:
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


# ----------------------------------------------------------------------------------------------------------
# Rendering through the template engine (pure Python; tasks.py wraps it in seqio, vocab.py trains on it).
#
# A *variant* is how a task is rendered: the four template types, plus "zs_cot"/"fs_cot" (the "cot" family,
# rationale + answer sentence) for tasks with rationales. Direct variants use the task's own family.
VARIANTS: dict[str, tuple[str, bool]] = {  # variant -> (template type, chain of thought)
    "zs_opt": ("zs_opt", False),
    "zs_noopt": ("zs_noopt", False),
    "fs_opt": ("fs_opt", False),
    "fs_noopt": ("fs_noopt", False),
    "zs_cot": ("zs_noopt", True),
    "fs_cot": ("fs_noopt", True),
}
COT_VARIANTS = ("zs_cot", "fs_cot")
DEFAULT_MAX_EXEMPLARS = 2  # few-shot prompts stay short, so packed rows still hold several examples
DEFAULT_EXEMPLAR_POOL = 256


def task_variants(task_name: str) -> tuple[str, ...]:
    """The variants a task is rendered in: the 4 template types, plus the CoT variants when it has rationales."""
    task = get_generated_task(task_name)
    return tuple(VARIANTS) if task.has_cot else tuple(v for v in VARIANTS if v not in COT_VARIANTS)


def render_split(task_name: str, variant: str, split: str, num_examples: int, seed: int = 0, *,
                 max_exemplars: int = DEFAULT_MAX_EXEMPLARS, exemplar_pool: int = DEFAULT_EXEMPLAR_POOL,
                 fits: Callable[[str], bool] | None = None) -> list[dict]:
    """Renders `generate_split(task_name, split, num_examples, seed)` in `variant`, deterministically by seed.

    Each record: inputs, targets, task_name, template_id, template_type (the variant name), plus the raw answer.
    Few-shot variants take 1..max_exemplars exemplars from the first `exemplar_pool` train examples (never the
    query itself), chosen by a seeded rng; while `fits(inputs)` is False, one exemplar fewer is used (down to one).
    """
    from flan_mix.data import templates  # local: templates.py is a sibling that may import heavier things later

    task = get_generated_task(task_name)
    if variant not in task_variants(task_name):
        raise ValueError(f"Variant '{variant}' does not exist for generated task '{task_name}'; "
                         f"its variants are {task_variants(task_name)}.")
    template_type, cot = VARIANTS[variant]
    family = "cot" if cot else task.family
    examples = generate_split(task_name, split, num_examples, seed)
    few_shot = template_type.startswith("fs_")
    pool = generate_split(task_name, "train", exemplar_pool, seed) if few_shot else []
    out = []
    for i, ex in enumerate(examples):
        ex_seed = derive_seed("render", seed, task_name, variant, split, i)
        exemplars: list = []
        if few_shot:
            rng = random.Random(ex_seed)
            candidates = [e for e in rng.sample(pool, min(len(pool), max_exemplars + 1)) if e is not ex
                          and e["question"] != ex["question"]]
            exemplars = candidates[:rng.randint(1, max_exemplars)]
        while True:
            rendered = templates.format_example(ex, family=family, template_type=template_type, seed=ex_seed,
                                                exemplars=exemplars, cot=cot)
            if fits is None or len(exemplars) <= 1 or fits(rendered["inputs"]):
                break
            exemplars = exemplars[:-1]
        out.append({"inputs": rendered["inputs"], "targets": rendered["targets"], "task_name": task_name,
                    "template_id": rendered["template_id"], "template_type": variant, "answer": ex["answer"]})
    return out
