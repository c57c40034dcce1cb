"""Tests for the template engine (flan_mix/data/templates.py with its registry, styles and families): hand-worked
renderings, determinism, options labels, few-shot, CoT, inversion and error messages."""

import dataclasses
import os
import subprocess
import sys

import pytest

from flan_mix.data import templates as T

MC = {"question": "What is 2+3?", "answer": "5", "options": ["4", "5", "6"],
      "rationale": "Two plus three makes five."}
QA = {"question": "Capital of France?", "answer": "Paris", "options": [], "rationale": ""}
COT = {"question": "Tom has 3 apples and buys 2 more. How many now?", "answer": "5",
       "rationale": "He starts with 3 and adds 2, so 3 + 2 = 5."}
NIV2 = {"definition": "Reverse the given word.", "input": "abc", "output": "cba"}
DIALOG = {"context": "A: Hi there!\nB: Hello, how can I help?\nA: Is the shop open today?",
          "response": "Yes, until six tonight."}

EXAMPLES = {"generic_qa": QA, "generic_mc": MC, "cot": COT, "niv2": NIV2, "dialog": DIALOG}
EXEMPLARS = {
    "generic_qa": [{"question": "Capital of Peru?", "answer": "Lima", "options": [], "rationale": ""}],
    "generic_mc": [{"question": "What is 1+1?", "answer": "2", "options": ["2", "3"], "rationale": "One and one."},
                   {"question": "Color of snow?", "answer": "white", "options": ["black", "white"],
                    "rationale": "Snow is white."}],
    "cot": [{"question": "What is 4 minus 1?", "answer": "3", "rationale": "Taking 1 from 4 leaves 3."}],
    "niv2": [{"input": "dog", "output": "god"}, {"input": "top", "output": "pot"}],
    "dialog": [{"context": "A: Thanks!", "response": "You're welcome."}],
}
MARKER = {m.name: m for m in T.MARKERS}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _subprocess_env(**extra):
    """The current environment with the repo importable (in case flan_mix is not pip-installed)."""
    path = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path, **extra)


def pinned(family, template_id, **overrides):
    """Choices with a fixed template and the given style fields."""
    return dataclasses.replace(T.choose(0, family=family, template_id=template_id), **overrides)


# ---------------------------------------------------------------------------------------------------------------
# Registry and interface
# ---------------------------------------------------------------------------------------------------------------

def test_families_and_counts():
    # The engine's own families; others (flan_templates.py) may register more as data.
    assert {"cot", "dialog", "generic_mc", "generic_qa", "niv2"} <= set(T.families())
    for fam in T.families():
        tpls = T.templates_for(fam)
        plain = [t for t in tpls if not t.inverted]
        assert len(plain) == 10, fam
        assert all(t.family == fam for t in tpls)
        assert [t.id for t in plain] == [f"{fam}/zs/{i}" for i in range(10)]
    for fam in ("cot", "dialog", "generic_qa", "generic_mc"):
        assert [t.id for t in T.get_family(fam).inverted_templates()] == [f"{fam}/inv/{i}" for i in range(5)]
    assert not T.get_family("niv2").invertible
    ids = [t.id for f in T.families() for t in T.templates_for(f)]
    assert len(ids) == len(set(ids))
    assert T.TEMPLATE_TYPES == ("zs_opt", "zs_noopt", "fs_opt", "fs_noopt")


def test_templates_module_imports_no_tensorflow():
    code = ("import sys; import flan_mix.data.templates; "
            "bad = [m for m in ('tensorflow', 'seqio') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, env=_subprocess_env())


# ---------------------------------------------------------------------------------------------------------------
# Hand-worked renderings
# ---------------------------------------------------------------------------------------------------------------

def test_pinned_template_renders_exactly():
    out = T.format_example(QA, family="generic_qa", template_type="zs_noopt", seed=123,
                           template_id="generic_qa/zs/1")
    assert out == {"inputs": "Question: Capital of France?\nAnswer:", "targets": "Paris",
                   "template_id": "generic_qa/zs/1", "template_type": "zs_noopt"}
    # No options: the opt type renders the same text; the empty {options} line is removed.
    out2 = T.format_example(QA, family="generic_qa", template_type="zs_opt", seed=123,
                            template_id="generic_qa/zs/1")
    assert out2["inputs"] == out["inputs"] and out2["template_type"] == "zs_opt"


def test_options_block_letters_exact():
    c = pinned("generic_mc", "generic_mc/zs/0", header="Choices:", marker=MARKER["letter_paren"], end=("", ""))
    out = T.render(MC, c, template_type="zs_opt")
    assert out["inputs"] == "What is 2+3?\n\nChoices:\n(A) 4\n(B) 5\n(C) 6"
    assert out["targets"] == "(B)"
    noopt = T.render(MC, c, template_type="zs_noopt")
    assert noopt["inputs"] == "What is 2+3?" and noopt["targets"] == "5"


def test_options_block_numbers_with_end_line_exact():
    c = pinned("generic_mc", "generic_mc/zs/1", header="CHOICES:", marker=MARKER["number_bracket"],
               end=("Pick exactly one of these.", "Reply with just the {kind} of your choice."))
    out = T.render(MC, c, template_type="zs_opt")
    assert out["inputs"] == ("Question: What is 2+3?\n\nCHOICES:\n[1] 4\n[2] 5\n[3] 6\n"
                             "Reply with just the number of your choice.\n\nAnswer:")
    assert out["targets"] == "2"


def test_options_block_inline_plain_text_exact():
    c = pinned("generic_mc", "generic_mc/zs/0", header="Select from:", marker=MARKER["semicolon"],
               end=("Pick exactly one of these.", "unused"))
    out = T.render(MC, c, template_type="zs_opt")
    assert out["inputs"] == "What is 2+3?\n\nSelect from: 4; 5; 6\nPick exactly one of these."
    assert out["targets"] == "5"


def test_letter_labels_continue_past_z():
    opts = [f"o{i}" for i in range(28)]
    ex = {"question": "q", "answer": "o27", "options": opts, "rationale": ""}
    c = pinned("generic_mc", "generic_mc/zs/0", marker=MARKER["letter_dot"], end=("", ""))
    out = T.render(ex, c, template_type="zs_opt")
    assert "Z. o25\nAA. o26\nAB. o27" in out["inputs"]
    assert out["targets"] == "AB"


def test_options_appended_when_template_has_no_placeholder():
    fam = T.family_from_dict({"name": "tmp_noplaceholder", "fields": ["question", "answer", "options"],
                              "options_field": "options", "templates": [["Q = {question}", "{answer}"]]})
    T.register_family(fam)
    try:
        c = pinned("tmp_noplaceholder", "tmp_noplaceholder/zs/0", header="Choices:", marker=MARKER["dash"],
                   end=("", ""))
        out = T.render(MC, c, template_type="zs_opt")
        assert out["inputs"] == "Q = What is 2+3?\nChoices:\n- 4\n- 5\n- 6"
        assert out["targets"] == "5"
    finally:
        T.unregister_family("tmp_noplaceholder")
    assert "tmp_noplaceholder" not in T.families()


# ---------------------------------------------------------------------------------------------------------------
# Determinism and variety
# ---------------------------------------------------------------------------------------------------------------

def _render_all(seed):
    outs = []
    for fam, ex in EXAMPLES.items():
        for tt in T.TEMPLATE_TYPES:
            outs.append(T.format_example(ex, family=fam, template_type=tt, seed=seed, exemplars=EXEMPLARS[fam]))
        if T.get_family(fam).invertible:
            outs.append(T.format_example(ex, family=fam, template_type="fs_opt", seed=seed,
                                         exemplars=EXEMPLARS[fam], inverted=True))
    return outs


def test_same_seed_same_output():
    for seed in (0, 1, 7, 2**40):
        assert _render_all(seed) == _render_all(seed)
    assert T.choose(5, family="cot") == T.choose(5, family="cot")


def test_same_seed_same_output_across_processes():
    code = ("from flan_mix.data import templates as T; "
            "print(repr([T.format_example({'question':'q','answer':'b','options':['a','b'],'rationale':'r'}, "
            "family='generic_mc', template_type=t, seed=s, exemplars=[{'question':'p','answer':'a',"
            "'options':['a','c'],'rationale':'x'}]) for s in range(20) for t in T.TEMPLATE_TYPES]))")
    outs = set()
    for hashseed in ("1", "2"):
        env = _subprocess_env(PYTHONHASHSEED=hashseed)
        outs.add(subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True,
                                text=True).stdout)
    assert len(outs) == 1


def test_rng_is_local_not_global():
    import random
    random.seed(0)
    a = _render_all(3)
    random.seed(999)
    random.random()
    b = _render_all(3)
    assert a == b
    state = random.getstate()
    _render_all(4)
    assert random.getstate() == state  # the engine never touches the global RNG


def test_different_seeds_give_different_choices():
    cs = [T.choose(s, family="generic_mc") for s in range(200)]
    assert len({c.template.id for c in cs}) == 10
    assert len({c.marker.name for c in cs}) == len(T.MARKERS)
    assert len({c.header for c in cs}) == len(T.OPTION_HEADERS)
    assert len({c.delimiter for c in cs}) == len(T.FEWSHOT_DELIMITERS)
    assert len({c.prefixes for c in cs}) == len(T.FEWSHOT_PREFIXES)
    assert len({c.trigger for c in cs}) == len(T.COT_TRIGGERS)
    assert len({c.answer_sentence for c in cs}) == len(T.COT_ANSWER_SENTENCES)
    rendered = {T.format_example(MC, family="generic_mc", template_type="zs_opt", seed=s)["inputs"]
                for s in range(50)}
    assert len(rendered) > 25


def test_template_choice_independent_of_type():
    for s in range(30):
        ids = {T.format_example(MC, family="generic_mc", template_type=tt, seed=s,
                                exemplars=EXEMPLARS["generic_mc"])["template_id"] for tt in T.TEMPLATE_TYPES}
        assert len(ids) == 1


# ---------------------------------------------------------------------------------------------------------------
# Every template x every type
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["generic_qa", "generic_mc", "cot", "niv2", "dialog"])
def test_every_template_renders_with_every_type(family):
    ex, exemplars = EXAMPLES[family], EXEMPLARS[family]
    fam = T.get_family(family)
    for tpl in T.templates_for(family):
        for tt in T.TEMPLATE_TYPES:
            for seed in (0, 1, 2):
                out = T.format_example(ex, family=family, template_type=tt, seed=seed, exemplars=exemplars,
                                       template_id=tpl.id, inverted=tpl.inverted)
                assert out["template_id"] == tpl.id and out["template_type"] == tt
                inp, tgt = out["inputs"], out["targets"]
                assert inp.strip() and tgt.strip()
                assert "\ue000" not in inp and "{" not in inp and "}" not in inp
                assert inp == inp.rstrip()
                if tpl.inverted:
                    want = ex["context"] if family == "dialog" else ex["question"]
                    assert tgt == want
                elif fam.always_cot:
                    assert tgt.startswith(ex["rationale"]) and tgt.endswith(ex["answer"] + ".")
                elif tt.endswith("_opt") and ex.get("options"):
                    for o in ex["options"]:
                        assert o in inp
                else:
                    assert tgt == ex[fam.answer_field]
                if tt.startswith("fs_"):
                    for e in exemplars:
                        key = {"niv2": "input", "dialog": "context"}.get(family, "question")
                        if tpl.inverted:
                            key = {"cot": "rationale", "dialog": "response"}.get(family, "answer")
                        assert e[key] in inp


def test_no_options_means_opt_equals_noopt():
    for fam in ("generic_qa", "cot", "niv2", "dialog"):
        for s in range(40):
            a = T.format_example(EXAMPLES[fam], family=fam, template_type="zs_opt", seed=s)
            b = T.format_example(EXAMPLES[fam], family=fam, template_type="zs_noopt", seed=s)
            assert a["inputs"] == b["inputs"] and a["targets"] == b["targets"]
            assert a["template_id"] == b["template_id"]
            assert (a["template_type"], b["template_type"]) == ("zs_opt", "zs_noopt")


# ---------------------------------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------------------------------

# Answer "5" is option index 1: what each labelled marker must give, worked by hand.
LABEL_OF_SECOND = {"letter_paren": ("(B)", "(B) 5"), "letter_dot": ("B", "B. 5"),
                   "number_paren": ("2", "2) 5"), "number_bracket": ("2", "[2] 5")}


def test_labels_map_to_the_right_option():
    seen = set()
    for s in range(150):
        marker = T.choose(s, family="generic_mc").marker
        out = T.format_example(MC, family="generic_mc", template_type="zs_opt", seed=s)
        if marker.name in LABEL_OF_SECOND:
            target, item_line = LABEL_OF_SECOND[marker.name]
            assert out["targets"] == target
            assert item_line in out["inputs"].split("\n")
            seen.add(marker.name)
        else:
            assert out["targets"] == "5"
        # noopt never uses labels
        assert T.format_example(MC, family="generic_mc", template_type="zs_noopt", seed=s)["targets"] == "5"
    assert seen == set(LABEL_OF_SECOND)


def test_few_shot_exemplars_get_their_own_labels():
    c = pinned("generic_mc", "generic_mc/zs/0", marker=MARKER["letter_paren"], header="Choices:", end=("", ""),
               prefixes=("Question: ", "Answer: "), xy_separator="\n", delimiter="\n\n")
    out = T.render(MC, c, template_type="fs_opt", exemplars=EXEMPLARS["generic_mc"])
    assert out["inputs"] == (
        "Question: What is 1+1?\n\nChoices:\n(A) 2\n(B) 3\nAnswer: (A)\n\n"
        "Question: Color of snow?\n\nChoices:\n(A) black\n(B) white\nAnswer: (B)\n\n"
        "Question: What is 2+3?\n\nChoices:\n(A) 4\n(B) 5\n(C) 6\nAnswer:")
    assert out["targets"] == "(B)"


def test_answer_not_among_options_is_an_error():
    bad = dict(MC, answer="7")
    with pytest.raises(ValueError, match=r"answer '7'.*not one of its options"):
        T.format_example(bad, family="generic_mc", template_type="zs_opt", seed=0)
    # noopt does not need the options
    assert T.format_example(bad, family="generic_mc", template_type="zs_noopt", seed=0)["targets"] == "7"


def test_options_must_be_a_list():
    with pytest.raises(TypeError, match="list or tuple of str"):
        T.format_example(dict(MC, options="456"), family="generic_mc", template_type="zs_opt", seed=0)


# ---------------------------------------------------------------------------------------------------------------
# Few-shot
# ---------------------------------------------------------------------------------------------------------------

def test_few_shot_exact_and_in_order():
    exemplars = [dict(QA, question="EX-ONE?", answer="one"), dict(QA, question="EX-TWO?", answer="two")]
    query = dict(QA, question="QUERY?", answer="three")
    c = pinned("generic_qa", "generic_qa/zs/0", prefixes=("Input: ", "Output: "), xy_separator="\n",
               delimiter="\n\n###\n\n")
    out = T.render(query, c, template_type="fs_noopt", exemplars=exemplars)
    assert out["inputs"] == ("Input: EX-ONE?\nOutput: one\n\n###\n\n"
                             "Input: EX-TWO?\nOutput: two\n\n###\n\n"
                             "Input: QUERY?\nOutput:")
    assert out["targets"] == "three"
    # Random styles: exemplars always come in order, before the query, and the query's answer is not shown.
    for s in range(40):
        out = T.format_example(query, family="generic_qa", template_type="fs_noopt", seed=s, exemplars=exemplars)
        inp = out["inputs"]
        i1, i2, iq = inp.index("EX-ONE?"), inp.index("EX-TWO?"), inp.index("QUERY?")
        assert i1 < inp.index("one", i1) < i2 < inp.index("two", i2) < iq
        assert "three" not in inp and out["targets"] == "three"


def test_few_shot_without_exemplars_is_an_error():
    with pytest.raises(ValueError, match="needs at least one exemplar"):
        T.format_example(QA, family="generic_qa", template_type="fs_opt", seed=0)


def test_niv2_definition_once_then_positive_examples():
    c = pinned("niv2", "niv2/zs/1", prefixes=("", ""), xy_separator="\n", delimiter="\n\n")
    out = T.render(NIV2, c, template_type="fs_noopt", exemplars=EXEMPLARS["niv2"])
    assert out["inputs"] == ("Task: Reverse the given word.\n\n"
                             "Input: dog\nOutput:\ngod\n\n"
                             "Input: top\nOutput:\npot\n\n"
                             "Input: abc\nOutput:")
    assert out["targets"] == "cba"
    zs = T.render(NIV2, c, template_type="zs_noopt")
    assert zs["inputs"] == "Task: Reverse the given word.\n\nInput: abc\nOutput:"
    for s in range(20):
        inp = T.format_example(NIV2, family="niv2", template_type="fs_opt", seed=s,
                               exemplars=EXEMPLARS["niv2"])["inputs"]
        assert inp.count("Reverse the given word.") == 1 and inp.index("Reverse") < inp.index("dog")


def test_niv2_with_label_set_options():
    ex = dict(NIV2, definition="Is the review positive?", input="Great film", output="yes", options=["yes", "no"])
    c = pinned("niv2", "niv2/zs/0", header="Choices:", marker=MARKER["dash"], end=("", ""))
    out = T.render(ex, c, template_type="zs_opt")
    assert out["inputs"] == "Is the review positive?\n\nGreat film\nChoices:\n- yes\n- no"
    assert out["targets"] == "yes"


# ---------------------------------------------------------------------------------------------------------------
# Chain of thought
# ---------------------------------------------------------------------------------------------------------------

def test_cot_zero_shot_exact():
    c = pinned("cot", "cot/zs/1", trigger="Reason carefully and show your work.", trigger_separator="\n",
               answer_sentence="The final answer: {answer}.")
    out = T.render(COT, c, template_type="zs_opt")
    assert out["inputs"] == ("Question: Tom has 3 apples and buys 2 more. How many now?\n"
                             "Reason carefully and show your work.")
    assert out["targets"] == "He starts with 3 and adds 2, so 3 + 2 = 5. The final answer: 5."


def test_cot_target_ends_with_answer_for_every_seed():
    answers = set()
    for s in range(60):
        out = T.format_example(COT, family="cot", template_type="zs_noopt", seed=s)
        assert out["targets"].startswith(COT["rationale"] + " ")
        assert out["targets"].endswith(" 5.")
        assert T.extract_cot_answer(out["targets"]) == "5"
        assert out["inputs"].rstrip().endswith(tuple(T.COT_TRIGGERS))
        answers.add(out["targets"])
    assert len(answers) > 4


def test_cot_answer_sentence_no_double_period():
    ex = dict(COT, answer="It is five.")
    out = T.render(ex, pinned("cot", "cot/zs/0", answer_sentence="My answer: {answer}."), template_type="zs_opt")
    assert out["targets"].endswith("My answer: It is five.")
    assert T.extract_cot_answer(out["targets"]) == "It is five"


def test_cot_flag_on_multiple_choice_uses_label():
    c = pinned("generic_mc", "generic_mc/zs/0", header="Choices:", marker=MARKER["letter_paren"], end=("", ""),
               trigger="Work out the reasoning before giving the answer.", trigger_separator=" ",
               answer_sentence="Which gives {answer}.")
    out = T.render(MC, c, template_type="zs_opt", cot=True)
    assert out["inputs"] == ("What is 2+3?\n\nChoices:\n(A) 4\n(B) 5\n(C) 6 "
                             "Work out the reasoning before giving the answer.")
    assert out["targets"] == "Two plus three makes five. Which gives (B)."


def test_cot_few_shot_shows_rationale_and_answer():
    c = pinned("cot", "cot/zs/0", prefixes=("Question: ", "Answer: "), xy_separator="\n", delimiter="\n\n",
               answer_sentence="That means the answer is {answer}.")
    out = T.render(COT, c, template_type="fs_noopt", exemplars=EXEMPLARS["cot"])
    assert out["inputs"] == ("Question: What is 4 minus 1?\n"
                             "Answer: Taking 1 from 4 leaves 3. That means the answer is 3.\n\n"
                             "Question: Tom has 3 apples and buys 2 more. How many now?\nAnswer:")
    assert out["targets"] == "He starts with 3 and adds 2, so 3 + 2 = 5. That means the answer is 5."
    assert not any(t in out["inputs"] for t in T.COT_TRIGGERS)  # exemplars demonstrate; no zero-shot trigger


def test_cot_errors():
    with pytest.raises(ValueError, match="no rationale field"):
        T.format_example(DIALOG, family="dialog", template_type="zs_opt", seed=0, cot=True)
    with pytest.raises(ValueError, match="needs a rationale"):
        T.format_example(dict(COT, rationale=" "), family="cot", template_type="zs_opt", seed=0)
    with pytest.raises(ValueError, match=r"exemplar 0.*needs a rationale|needs a rationale.*exemplar 0"):
        T.format_example(COT, family="cot", template_type="fs_opt", seed=0,
                         exemplars=[dict(EXEMPLARS["cot"][0], rationale="")])


# ---------------------------------------------------------------------------------------------------------------
# Input inversion
# ---------------------------------------------------------------------------------------------------------------

def test_cot_inversion_asks_for_the_question():
    out = T.format_example(COT, family="cot", template_type="zs_opt", seed=0, template_id="cot/inv/2")
    assert out["inputs"] == ("The answer is 5, because: He starts with 3 and adds 2, so 3 + 2 = 5.\n"
                             "What was the question?")
    assert out["targets"] == COT["question"]
    for s in range(20):
        out = T.format_example(COT, family="cot", template_type="zs_opt", seed=s, inverted=True)
        assert out["template_id"].startswith("cot/inv/")
        assert COT["rationale"] in out["inputs"] and out["targets"] == COT["question"]
        assert not any(t in out["inputs"] for t in T.COT_TRIGGERS)


def test_dialog_inversion_and_plain():
    for s in range(20):
        inv = T.format_example(DIALOG, family="dialog", template_type="zs_opt", seed=s, inverted=True)
        assert inv["targets"] == DIALOG["context"] and DIALOG["response"] in inv["inputs"]
        plain = T.format_example(DIALOG, family="dialog", template_type="zs_opt", seed=s)
        assert plain["targets"] == DIALOG["response"] and DIALOG["context"] in plain["inputs"]
    builtin = ("cot", "dialog", "generic_mc", "generic_qa", "niv2")  # collections may register more families
    assert [f for f in builtin if T.get_family(f).invertible] == ["cot", "dialog", "generic_mc", "generic_qa"]


@pytest.mark.parametrize("family,example", [("generic_qa", QA), ("generic_mc", MC)])
def test_question_inversion_gives_the_answer_and_asks_for_the_question(family, example):
    out = T.format_example(example, family=family, template_type="zs_opt", seed=0, template_id=f"{family}/inv/1")
    if family == "generic_qa":
        assert out["inputs"] == 'What question would have "Paris" as its answer?'
    for s in range(20):
        for tt in T.TEMPLATE_TYPES:
            out = T.format_example(example, family=family, template_type=tt, seed=s, inverted=True,
                                   exemplars=[example])
            assert out["template_id"].startswith(f"{family}/inv/") and out["targets"] == example["question"]
            assert example["answer"] in out["inputs"]
            assert not any(h in out["inputs"] for h in T.OPTION_HEADERS)  # inverted: never an options block
    # Inverted templates leave the plain draws alone: seeds 0..11 pick the plain templates they picked before
    # the family had inverted ones (recorded then), so the generated collection renders as it always did.
    assert [T.choose(s, family=family).template.id for s in range(12)] == [
        f"{family}/zs/{i}" for i in (7, 3, 0, 9, 7, 9, 7, 0, 0, 7, 2, 7)]


def test_inversion_errors():
    with pytest.raises(ValueError, match="no inverted templates"):
        T.format_example(NIV2, family="niv2", template_type="zs_opt", seed=0, inverted=True)
    with pytest.raises(ValueError, match="not an inverted template"):
        T.format_example(COT, family="cot", template_type="zs_opt", seed=0, inverted=True, template_id="cot/zs/0")


# ---------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------

def test_missing_field_names_family_template_and_field():
    ex = {k: v for k, v in QA.items() if k != "question"}
    with pytest.raises(KeyError) as ei:
        T.format_example(ex, family="generic_qa", template_type="zs_noopt", seed=0, template_id="generic_qa/zs/4")
    err = ei.value
    assert isinstance(err, T.TemplateFieldError)
    msg = str(err)
    assert "'generic_qa'" in msg and "'generic_qa/zs/4'" in msg and "'question'" in msg
    assert (err.family, err.template_id, err.field) == ("generic_qa", "generic_qa/zs/4", "question")


def test_missing_field_in_exemplar_is_named():
    bad = [EXEMPLARS["niv2"][0], {"input": "x"}]
    with pytest.raises(T.TemplateFieldError, match=r"niv2.*exemplar 1.*'output'"):
        T.format_example(NIV2, family="niv2", template_type="fs_noopt", seed=0, exemplars=bad)


def test_missing_options_field_for_opt_type():
    ex = {k: v for k, v in MC.items() if k != "options"}
    with pytest.raises(T.TemplateFieldError, match="'options'"):
        T.format_example(ex, family="generic_mc", template_type="zs_opt", seed=0)
    assert T.format_example(ex, family="generic_mc", template_type="zs_noopt", seed=0)["targets"] == "5"


def test_unknown_family_and_type():
    with pytest.raises(ValueError) as ei:
        T.format_example(QA, family="nope", template_type="zs_opt", seed=0)
    assert "nope" in str(ei.value) and all(f in str(ei.value) for f in T.families())
    with pytest.raises(ValueError) as ei:
        T.format_example(QA, family="generic_qa", template_type="zs", seed=0)
    assert all(t in str(ei.value) for t in T.TEMPLATE_TYPES)
    with pytest.raises(ValueError, match="unknown template id"):
        T.format_example(QA, family="generic_qa", template_type="zs_opt", seed=0, template_id="generic_qa/zs/99")
    with pytest.raises(TypeError, match="seed must be an integer"):
        T.format_example(QA, family="generic_qa", template_type="zs_opt", seed="1")


# ---------------------------------------------------------------------------------------------------------------
# Families as data
# ---------------------------------------------------------------------------------------------------------------

def test_new_family_is_data_only():
    spec = {"name": "tmp_nli", "fields": ["premise", "hypothesis", "answer", "options"],
            "options_field": "options", "options_required": True,
            "templates": [["Premise: {premise}\nHypothesis: {hypothesis}\n{options}", "{answer}"],
                          ["{premise}\nDoes it follow that \"{hypothesis}\"?\n{options}", "{answer}"]]}
    T.register_family(T.family_from_dict(spec))
    try:
        with pytest.raises(ValueError, match="already registered"):
            T.register_family(T.family_from_dict(spec))
        ex = {"premise": "It rains.", "hypothesis": "The ground is wet.", "answer": "yes",
              "options": ["yes", "no", "maybe"]}
        c = pinned("tmp_nli", "tmp_nli/zs/0", header="Choices:", marker=MARKER["number_paren"], end=("", ""))
        out = T.render(ex, c, template_type="zs_opt")
        assert out["inputs"] == "Premise: It rains.\nHypothesis: The ground is wet.\nChoices:\n1) yes\n2) no\n3) maybe"
        assert out["targets"] == "1"
        assert "tmp_nli" in T.families() and len(T.templates_for("tmp_nli")) == 2
    finally:
        T.unregister_family("tmp_nli")


def test_bad_family_specs_rejected():
    with pytest.raises(ValueError, match="positional field"):
        T.register_family(T.family_from_dict({"name": "tmp_bad", "fields": ["a"], "answer_field": "a",
                                              "templates": [["{} x", "{a}"]]}))
    with pytest.raises(ValueError, match="unknown keys"):
        T.family_from_dict({"name": "tmp_bad", "fields": ["a"], "templates": [], "colour": 1})
    with pytest.raises(ValueError, match="only appear in inputs"):
        T.register_family(T.family_from_dict({"name": "tmp_bad", "fields": ["a"], "answer_field": "a",
                                              "templates": [["{a}", "{a} {options}"]]}))
    assert "tmp_bad" not in T.families()
