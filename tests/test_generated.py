"""The offline generated mini-collection (flan_mix/data/generated/): coverage, determinism, disjoint splits, and
answers recomputed by independent logic (no TensorFlow needed)."""

import contextlib
import datetime
import io
import re
from collections import Counter

import pytest

from flan_mix.data import templates
from flan_mix.data.generated import collection, rendering
from flan_mix.data.generated.collection import GENERATED_TASKS, generate_split
from flan_mix.data.generated.rendering import render_split

N = 150  # examples per task and split checked below


@pytest.fixture(scope="module")
def samples():
    return {name: {split: generate_split(name, split, N, seed=0) for split in collection.SPLITS}
            for name in GENERATED_TASKS}


def test_collection_shape():
    tasks = list(GENERATED_TASKS.values())
    assert len(tasks) >= 20
    assert len({t.ability for t in tasks}) >= 8
    held = [t for t in tasks if t.held_out]
    assert len(held) >= 4
    trained_abilities = {t.ability for t in tasks if not t.held_out}
    assert all(t.ability in trained_abilities for t in held), "held-out tasks test trained abilities"
    assert any(t.is_mc for t in tasks) and any(not t.is_mc for t in tasks)
    assert any(t.is_mc for t in tasks if not t.held_out) and any(t.is_mc for t in held)
    assert sum(t.has_cot for t in tasks if not t.held_out) >= 3
    assert {t.family for t in tasks} == {"generic_qa", "generic_mc"}
    assert set(collection.TRAIN_TASK_NAMES) | set(collection.HELD_OUT_TASK_NAMES) == set(GENERATED_TASKS)
    assert not set(collection.TRAIN_TASK_NAMES) & set(collection.HELD_OUT_TASK_NAMES)


def test_example_schema_and_sizes(samples):
    for name, task in GENERATED_TASKS.items():
        for split, exs in samples[name].items():
            assert len(exs) == N
            for ex in exs:
                assert set(ex) == {"question", "answer", "options", "rationale"}
                assert isinstance(ex["options"], tuple)
                assert len(ex["question"].split()) < 60, (name, ex)
                assert 1 <= len(ex["answer"].split()) <= 6, (name, ex)
                if task.is_mc:
                    assert ex["answer"] in ex["options"] and len(set(ex["options"])) == len(ex["options"]) >= 2
                else:
                    assert ex["options"] == ()
                assert bool(ex["rationale"]) == task.has_cot, (name, ex)
            keys = [(e["question"], e["options"]) for e in exs]
            assert len(set(keys)) == len(keys), f"{name}/{split} repeats an example"


def test_deterministic_by_seed():
    for name in GENERATED_TASKS:
        a = generate_split(name, "train", 20, seed=3)
        assert a == generate_split(name, "train", 20, seed=3)
        assert a != generate_split(name, "train", 20, seed=4)
        assert generate_split(name, "train", 10, seed=3) == a[:10], "a longer split extends a shorter one"


def test_splits_disjoint_for_any_seed():
    for name in GENERATED_TASKS:
        train = {e["question"] for s in (0, 1) for e in generate_split(name, "train", 400, seed=s)}
        val = {e["question"] for s in (0, 2) for e in generate_split(name, "validation", 100, seed=s)}
        assert not train & val, name
        assert all(collection.split_of(name, q) == "validation" for q in val)


def test_question_spaces_are_large_enough():
    """Every task supplies more unique questions than register_generated_tasks asks for by default."""
    for name in GENERATED_TASKS:
        assert len(generate_split(name, "train", 1500, seed=0)) == 1500
        assert len(generate_split(name, "validation", 400, seed=0)) == 400


def test_errors_name_the_problem(monkeypatch):
    with pytest.raises(KeyError, match="sort_words"):
        generate_split("sort_wrods", "train", 1)
    with pytest.raises(ValueError, match="split"):
        generate_split("sort_words", "test", 1)
    tiny = collection.GeneratedTask("tiny", "counting", "generic_qa", False, False, "three questions",
                                    generate=lambda rng: {"question": f"Q{rng.randrange(3)}?", "answer": "a",
                                                          "options": (), "rationale": ""})
    monkeypatch.setitem(GENERATED_TASKS, "tiny", tiny)
    assert len(generate_split("tiny", "train", 1)) == 1
    with pytest.raises(ValueError, match="too small"):
        generate_split("tiny", "train", 4)


def test_seeds_are_stable_hashes():
    assert collection.derive_seed(0, "a", "train") == collection.derive_seed(0, "a", "train")
    assert collection.derive_seed(0, "a", "train") != collection.derive_seed(0, "a", "validation")
    # sha256-derived: a fixed value, the same in every process (Python's hash() would change per process)
    assert collection.derive_seed("x") == int.from_bytes(
        __import__("hashlib").sha256(b"x").digest()[:8], "big") >> 1


# --------------------------------------------------------------------------------------------------------
# Answers recomputed by hand-written logic.
def _ints(text):
    return [int(x) for x in re.findall(r"\d+", text)]


def _words_after_colon(q):
    return [w.strip(" .?") for w in q.split(":", 1)[1].replace(" or ", ", ").split(",")]


_MONDAY = datetime.date(2024, 1, 1)  # a Monday
_WEEKDAY_INDEX = {(_MONDAY + datetime.timedelta(days=i)).strftime("%A"): i for i in range(7)}
_CATEGORY = {**{w: "animals" for w in "cat dog cow pig fox owl hen bee".split()},
             **{w: "fruits" for w in "apple pear plum lime fig kiwi grape melon".split()},
             **{w: "colors" for w in "red blue green pink gray black white brown".split()}}


def _run_code(code):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code.replace("; ", "\n"), {})  # the generated snippets are straight-line Python
    return out.getvalue().strip()


def _check(name, ex):
    q, a = ex["question"], ex["answer"]
    if name == "add_word_problem":
        x, y = _ints(q)
        assert a == str(x + y)
    elif name == "sub_word_problem":
        x, y = _ints(q)
        assert a == str(x - y)
    elif name == "two_step_word_problem":
        x, y, z = _ints(q)
        assert a == str(x + y - z)
    elif name == "bare_addition":
        x, y = _ints(q)
        assert a == str(x + y)
    elif name == "larger_number_mc":
        assert a == str(max(_ints(q)))
    elif name == "max_of_list":
        assert a == str(max(_ints(q)))
    elif name == "sort_words":
        words = _words_after_colon(q)
        assert a.split(", ") == sorted(words)
    elif name == "sort_numbers":
        assert [int(x) for x in a.split(", ")] == sorted(_ints(q))
    elif name == "first_alphabetically_mc":
        assert a == min(_words_after_colon(q))
    elif name == "count_letter":
        letter = re.search(r"letter (\w)", q).group(1)
        spelled = q.split(":", 1)[1].strip(" ?").split()
        assert a == str(spelled.count(letter))
    elif name == "word_length":
        assert a == str(len(q.split(":", 1)[1].strip(" ?").split()))
    elif name == "count_category":
        category = re.search(r"How many (\w+)", q).group(1)
        items = q.split(":", 1)[1].strip(" ?").split(", ")
        assert a == str(sum(_CATEGORY[i] == category for i in items))
    elif name in ("weekday_offset", "weekday_offset_mc"):
        start = next(d for d in _WEEKDAY_INDEX if d in q)
        k = _ints(q)[0]
        assert a == (_MONDAY + datetime.timedelta(days=_WEEKDAY_INDEX[start] + k)).strftime("%A")
    elif name == "month_after_mc":
        months = [datetime.date(2023, m, 1).strftime("%B") for m in range(1, 13)]
        start = next(m for m in months if m in q)
        k = _ints(q)[0]
        assert a == months[(months.index(start) + k) % 12]
    elif name in ("boolean_expression", "boolean_expression_mc"):
        expr = re.sub(r"^(Evaluate: |What is the value of |Is the following expression True or False\? )", "", q)
        expr = expr.rstrip("?")
        assert a == str(eval(expr, {"__builtins__": {}}))
    elif name == "reverse_letters":
        assert a.split() == q.split(":", 1)[1].split()[::-1]
    elif name == "uppercase_letters":
        assert a.split() == [c.upper() for c in q.split(":", 1)[1].split()]
    elif name in ("table_lookup", "table_lookup_mc"):
        body = q.removeprefix("Table: ")
        sentences = [s.strip() for s in body.split(".")]
        header = [c.strip() for c in sentences[0].split("|")]
        rows = {r[0]: dict(zip(header, r)) for r in
                ([c.strip() for c in s.split("|")] for s in sentences[1:4])}
        m = re.search(r"(?:the|Which) (\w+) (?:of|does) (\w+)", sentences[4])
        col, person = m.group(1), m.group(2)
        assert a == rows[person][col]
    elif name == "syllogism_mc":
        facts = re.search(r"Facts: (.*) Question", q).group(1)
        person, prop = re.search(r"Is (\w+) (\w+)\?", q).groups()
        kind = re.search(rf"{person} is an? (\w+)\.", facts).group(1)
        rule = re.search(rf"(All|No) {kind}s are {prop}\.", facts)
        expected = "it is not possible to tell" if rule is None else ("yes" if rule.group(1) == "All" else "no")
        assert a == expected
    elif name == "ranking_chain":
        pairs = re.findall(r"(\w+) is \w+er than (\w+)\.", q)
        above = {x for x, _ in pairs}
        below = {y for _, y in pairs}
        top, bottom = (above - below).pop(), (below - above).pop()
        asks_top = re.search(r"Who is the (tallest|oldest|fastest)\?", q) is not None
        assert a == (top if asks_top else bottom)
    elif name in ("trace_assign", "trace_if_mc"):
        code = re.search(r"code print[?:] (.*?)(\? Answer .*)?$", q).group(1)
        assert a == _run_code(code)
    else:
        raise AssertionError(f"no independent check for task {name}; add one")


def test_answers_are_correct(samples):
    for name in GENERATED_TASKS:
        for split in collection.SPLITS:
            for ex in samples[name][split]:
                _check(name, ex)


def test_cot_rationales_reach_the_answer(samples):
    for name, task in GENERATED_TASKS.items():
        if not task.has_cot:
            continue
        for ex in samples[name]["train"]:
            last = ex["rationale"].rstrip(".").split()[-1]
            assert last == ex["answer"] or ex["rationale"].rstrip(".").endswith(ex["answer"]), (name, ex)


def test_answers_are_not_trivial(samples):
    """The majority answer of every task is far from 100%, so exact match separates a model from a baseline."""
    for name in GENERATED_TASKS:
        counts = Counter(e["answer"] for e in samples[name]["validation"])
        assert counts.most_common(1)[0][1] / N < 0.6, (name, counts.most_common(3))


# --------------------------------------------------------------------------------------------------------
def test_every_variant_renders_and_is_deterministic():
    for name in GENERATED_TASKS:
        variants = rendering.task_variants(name)
        assert set(templates.TEMPLATE_TYPES) <= set(variants)
        assert (set(rendering.COT_VARIANTS) <= set(variants)) == GENERATED_TASKS[name].has_cot
        exs = generate_split(name, "validation", 4, seed=0)
        for v in variants:
            recs = render_split(name, v, "validation", 4, seed=0)
            assert recs == render_split(name, v, "validation", 4, seed=0)
            assert recs != render_split(name, v, "validation", 4, seed=1)
            for ex, r in zip(exs, recs):
                assert r["template_type"] == v and r["task_name"] == name and r["answer"] == ex["answer"]
                assert ex["question"] in r["inputs"]
                if v.endswith("_opt") and ex["options"]:
                    assert all(o in r["inputs"] for o in ex["options"])
                if v in rendering.COT_VARIANTS:
                    assert templates.extract_cot_answer(r["targets"]) == r["answer"]


def test_fewshot_exemplars_come_from_train_and_respect_fits():
    val = generate_split("sort_words", "validation", 5, seed=0)
    train_questions = {e["question"] for e in generate_split("sort_words", "train", 256, seed=0)}
    recs = render_split("sort_words", "fs_noopt", "validation", 5, seed=0, max_exemplars=3)
    for ex, rec in zip(val, recs):
        assert ex["question"] in rec["inputs"]
        shown = [q for q in train_questions if q in rec["inputs"]]
        assert 1 <= len(shown) <= 3
    short = render_split("sort_words", "fs_noopt", "validation", 5, seed=0, fits=lambda s: False)
    for rec in short:  # nothing fits: one exemplar only
        assert sum(q in rec["inputs"] for q in train_questions) == 1
    with pytest.raises(ValueError, match="zs_cot"):
        render_split("sort_words", "zs_cot", "train", 1)
