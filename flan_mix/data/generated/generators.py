"""The example generators of the generated mini-collection: small word lists and one function per task.

A generator takes a `random.Random` and returns one example::

    {"question": str, "answer": str, "options": tuple[str, ...], "rationale": str}

`options` is empty for free-form tasks; for multiple-choice tasks `answer` is one of `options` and the question
names the candidates itself, so the question stays answerable when a template drops the options block.
`rationale` is a worked chain of thought for tasks with chain-of-thought variants, else "".
Split membership and uniqueness are applied on top (flan_mix.data.generated.collection).
"""
from __future__ import annotations

import random

Example = dict

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


def random_letters(rng: random.Random, lo: int, hi: int, alphabet: str = LETTERS) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(lo, hi)))


def _join_or(items) -> str:
    items = list(items)
    return ", ".join(items[:-1]) + " or " + items[-1]


def _join_and(items) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# ----------------------------------------------------------------------------------------------------------
# arithmetic
def add_word_problem(rng):
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


def sub_word_problem(rng):
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


def two_step_word_problem(rng):
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


def bare_addition(rng):
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    frame = rng.randrange(4)
    if frame == 3:
        q = f"{rng.choice(NAMES)} asks: what is {a} + {b}?"
    else:
        q = (f"What is {a} + {b}?", f"Compute {a} + {b}.", f"Find the sum of {a} and {b}.")[frame]
    return _qa(q, str(a + b))


# comparison
def larger_number_mc(rng):
    a, b = rng.sample(range(1, 31), 2)
    frame = rng.randrange(3)
    q = (f"Which number is larger: {a} or {b}?", f"Which is bigger, {a} or {b}?",
         f"Pick the greater number: {a} or {b}.")[frame]
    return _mc(q, (str(a), str(b)), str(max(a, b)))


def max_of_list(rng):
    nums = rng.sample(range(1, 31), rng.randint(3, 4))
    listed = ", ".join(map(str, nums))
    frame = rng.randrange(2)
    q = (f"What is the largest number in this list: {listed}?", f"Find the biggest number: {listed}.")[frame]
    return _qa(q, str(max(nums)))


# sorting
def sort_words(rng):
    words = rng.sample(SORT_WORDS, rng.randint(3, 4))
    frame = rng.randrange(2)
    q = (f"Sort these words in alphabetical order: {', '.join(words)}",
         f"Put these words in alphabetical order: {', '.join(words)}")[frame]
    return _qa(q, ", ".join(sorted(words)))


def sort_numbers(rng):
    nums = rng.sample(range(1, 10), rng.randint(3, 4))
    frame = rng.randrange(2)
    listed = ", ".join(map(str, nums))
    q = (f"Sort these numbers from smallest to largest: {listed}",
         f"Order from lowest to highest: {listed}")[frame]
    return _qa(q, ", ".join(map(str, sorted(nums))))


def first_alphabetically_mc(rng):
    words = rng.sample(SORT_WORDS, rng.randint(3, 4))
    q = f"Which word comes first in alphabetical order: {_join_or(words)}?"
    return _mc(q, words, min(words))


# counting
def count_letter(rng):
    alphabet = "abcd"
    word = random_letters(rng, 3, 5, alphabet)
    letter = rng.choice(word) if rng.random() < 0.9 else rng.choice(alphabet)
    frame = rng.randrange(2)
    q = (f"How many times does the letter {letter} appear in: {_spaced(word)}?",
         f"Count the letter {letter} in: {_spaced(word)}")[frame]
    return _qa(q, str(word.count(letter)))


def word_length(rng):
    word = random_letters(rng, 2, 7, SMALL_ALPHABET)
    frame = rng.randrange(2)
    q = (f"How many letters are in: {_spaced(word)}?", f"Count the letters: {_spaced(word)}")[frame]
    return _qa(q, str(len(word)))


def count_category(rng):
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
def weekday_offset(rng):
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


def month_after_mc(rng):
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


def weekday_offset_mc(rng):
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


def boolean_expression(rng):
    text, value = _bool_expression(rng, rng.random() < 0.5)
    frame = rng.randrange(2)
    q = (f"Evaluate: {text}", f"What is the value of {text}?")[frame]
    return _qa(q, str(value))


def boolean_expression_mc(rng):
    text, value = _bool_expression(rng, rng.random() < 0.5)
    q = f"Is the following expression True or False? {text}"
    return _mc(q, ("True", "False"), str(value))


# string edits
def reverse_letters(rng):
    word = random_letters(rng, 3, 4, SMALL_ALPHABET)
    frame = rng.randrange(2)
    q = (f"Reverse the letters: {_spaced(word)}", f"Write these letters in reverse order: {_spaced(word)}")[frame]
    return _qa(q, _spaced(word[::-1]))


def uppercase_letters(rng):
    word = random_letters(rng, 3, 4, SMALL_ALPHABET)
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


def table_lookup(rng):
    names, col, values, text = _table(rng)
    i = rng.randrange(3)
    frame = rng.randrange(2)
    q = (f"{text} What is the {col} of {names[i]}?", f"Table: {text} Look up the {col} of {names[i]}.")[frame]
    return _qa(q, values[i])


def table_lookup_mc(rng):
    names, col, values, text = _table(rng)
    i = rng.randrange(3)
    q = f"Table: {text} Which {col} does {names[i]} have: {_join_or(values)}?"
    return _mc(q, values, values[i])


# entailment over generated facts
def syllogism_mc(rng):
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


def ranking_chain(rng):
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
def trace_assign(rng):
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


def trace_if_mc(rng):
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
