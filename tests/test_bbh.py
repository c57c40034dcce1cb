"""BIG-Bench Hard: loading, the authors' prompts, answer extraction and scoring.

Prompts are checked against strings written out by hand from the raw files and against the authors'
own construction (`open(...).read().split("-----")[1].strip()` + the question); scores against
hand-counted hits. Tests on the real data skip when ../shared/data/bbh is absent."""
import json
import os

import pytest

from flan_mix.data.data_errors import MalformedDataError, MissingDataError
from flan_mix.evaluation import bbh
from flan_mix.evaluation.answers import (answer_matches, extract_answer, extract_cot_answer,
                                         extract_direct_answer)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BBH_DIR = os.path.join(REPO, "..", "shared", "data", "bbh")


@pytest.fixture(scope="module")
def bbh_dir():
    if not os.path.isdir(os.path.join(BBH_DIR, "bbh")):
        pytest.skip(f"BBH data not found at {BBH_DIR} (bbh/*.json and cot-prompts/*.txt from {bbh.BBH_URL})")
    return BBH_DIR


@pytest.fixture(scope="module")
def data(bbh_dir):
    return bbh.load_bbh(bbh_dir)


def raw_prompt(bbh_dir, task):
    """The authors' construction, independent of the module."""
    with open(os.path.join(bbh_dir, "cot-prompts", f"{task}.txt")) as f:
        return f.read().split("-----")[1].strip()


# ---------------------------------------------------------------- data

def test_tasks_match_the_data(bbh_dir, data):
    on_disk = sorted(n[:-5] for n in os.listdir(os.path.join(bbh_dir, "bbh")) if n.endswith(".json"))
    assert list(bbh.BBH_TASKS) == on_disk
    assert sorted(n[:-4] for n in os.listdir(os.path.join(bbh_dir, "cot-prompts"))) == on_disk
    sizes = {t: len(ex) for t, ex in data.items()}
    assert sum(sizes.values()) == 6511  # the paper's count
    assert {t: n for t, n in sizes.items() if n != 250} == {
        "causal_judgement": 187, "penguins_in_a_table": 146, "snarks": 178}
    assert data["date_understanding"][0] == bbh.Example(
        "Today is Christmas Eve of 1937. What is the date tomorrow in MM/DD/YYYY?\nOptions:\n(A) 12/11/1937\n"
        "(B) 12/25/1937\n(C) 01/04/1938\n(D) 12/04/1937\n(E) 12/25/2006\n(F) 07/25/1937", "(B)")


def test_missing_dir_says_layout_and_source(tmp_path):
    with pytest.raises(MissingDataError) as err:
        bbh.load_task(str(tmp_path), "navigate")
    msg = str(err.value)
    assert "navigate.json not found" in msg and "bbh/<task>.json" in msg and "cot-prompts/<task>.txt" in msg
    assert bbh.BBH_URL in msg
    (tmp_path / "navigate.json").write_text('{"examples": []}')  # the inner folder passed by mistake
    with pytest.raises(MissingDataError, match="pass its parent"):
        bbh.load_task(str(tmp_path), "navigate")
    with pytest.raises(MissingDataError, match="cot-prompts"):
        bbh.load_task_prompt(str(tmp_path), "navigate")
    with pytest.raises(ValueError, match="unknown BBH task 'navigation'"):
        bbh.load_task(str(tmp_path), "navigation")


def test_malformed_files_name_file_and_place(tmp_path):
    (tmp_path / "bbh").mkdir()
    path = tmp_path / "bbh" / "web_of_lies.json"
    path.write_text('{"examples": [\n  {"input": "a", "target": "Yes"},\n  {"input": "b" "target": "No"}\n]}')
    with pytest.raises(MalformedDataError, match=r"web_of_lies\.json:3:\d+: invalid JSON"):
        bbh.load_task(str(tmp_path), "web_of_lies")
    path.write_text('{"examples": [{"input": "a", "target": "Yes"}, {"input": "b"}]}')
    with pytest.raises(MalformedDataError, match=r"web_of_lies\.json:examples\[1\]"):
        bbh.load_task(str(tmp_path), "web_of_lies")
    (tmp_path / "cot-prompts").mkdir()
    (tmp_path / "cot-prompts" / "web_of_lies.txt").write_text("header\nQ: x\nA: Let's think step by step. y")
    with pytest.raises(MalformedDataError, match='found 0'):
        bbh.load_task_prompt(str(tmp_path), "web_of_lies")


# ---------------------------------------------------------------- prompts

SPORTS_INPUT = 'Is the following sentence plausible? "Elias Lindholm beat the buzzer."'
SPORTS_DIRECT = """\
Determine whether an artificially constructed sentence relating to sports is plausible or not.

Q: Is the following sentence plausible? "Bam Adebayo scored a reverse layup in the Western Conference Finals."
A: yes

Q: Is the following sentence plausible? "Santi Cazorla scored a touchdown."
A: no

Q: Is the following sentence plausible? "DeMar DeRozan was called for the goal tend."
A: yes

Q: Is the following sentence plausible? "Elias Lindholm beat the buzzer."
A:"""
# sports_understanding is the one task whose rationale continues on the "A: Let's think..." line.
SPORTS_COT = """\
Determine whether an artificially constructed sentence relating to sports is plausible or not.

Q: Is the following sentence plausible? "Bam Adebayo scored a reverse layup in the Western Conference Finals."
A: Let's think step by step. Bam Adebayo is an American basketball player. Scoring a reverse layup in the \
Western Conference Finals is part of the NBA Finals. So the answer is yes.

Q: Is the following sentence plausible? "Santi Cazorla scored a touchdown."
A: Let's think step by step. Santi Cazorla is a soccer player. Touchdown is part of American football and rugby. \
So the answer is no.

Q: Is the following sentence plausible? "DeMar DeRozan was called for the goal tend."
A: Let's think step by step. DeMar DeRozan is an American basketball player. Goal tending is part of basketball. \
So the answer is yes.

Q: Is the following sentence plausible? "Elias Lindholm beat the buzzer."
A: Let's think step by step."""


def test_sports_understanding_prompts_by_hand(bbh_dir, data):
    text = bbh.load_task_prompt(bbh_dir, "sports_understanding")
    assert data["sports_understanding"][0].input == SPORTS_INPUT
    assert bbh.build_prompt(text, SPORTS_INPUT, "direct") == SPORTS_DIRECT
    assert bbh.build_prompt(text, SPORTS_INPUT, "cot") == SPORTS_COT


def test_boolean_and_date_prompts_by_hand(bbh_dir, data):
    text = bbh.load_task_prompt(bbh_dir, "boolean_expressions")
    cot = bbh.build_prompt(text, data["boolean_expressions"][0].input, "cot").split("\n")
    assert cot[:3] == ["Evaluate the result of a random Boolean expression.", "", "Q: not ( ( not not True ) ) is"]
    assert cot[-3:] == ["", "Q: not ( True ) and ( True ) is", "A: Let's think step by step."]
    direct = bbh.build_prompt(text, "True or False is", "direct")
    assert direct == ("Evaluate the result of a random Boolean expression.\n\n"
                      "Q: not ( ( not not True ) ) is\nA: False\n\n"
                      "Q: True and False and not True and True is\nA: False\n\n"
                      "Q: not not ( not ( False ) ) is\nA: True\n\n"
                      "Q: True or False is\nA:")
    shots = bbh.few_shot_exemplars(bbh.load_task_prompt(bbh_dir, "date_understanding"), "direct")
    assert shots[0] == ("Q: Today is Christmas Eve of 1937. What is the date 10 days ago in MM/DD/YYYY?\n"
                        "Options:\n(A) 12/14/2026\n(B) 12/14/1950\n(C) 12/14/2007\n(D) 12/14/1937\n"
                        "(E) 07/14/1938\n(F) 12/14/1988\nA: (D)")
    assert [s.rsplit("\nA: ", 1)[1] for s in shots] == ["(D)", "(B)", "(B)"]


def test_snarks_keeps_its_two_paragraph_description(bbh_dir):
    text = bbh.load_task_prompt(bbh_dir, "snarks")
    for mode in ("cot", "direct"):
        prompt = bbh.build_prompt(text, "Which statement is sarcastic?", mode)
        head = prompt.split("\n\nQ: ")[0].split("\n\n")
        assert head[0] == "Determine which of two sentences is sarcastic."
        assert head[1].startswith("According to Cambridge University Dictionary, sarcasm is")
        assert prompt.count("\n\nQ: ") == 4


@pytest.mark.parametrize("task", bbh.BBH_TASKS)
def test_every_task_prompt_structure(bbh_dir, data, task):
    text = bbh.load_task_prompt(bbh_dir, task)
    assert text == raw_prompt(bbh_dir, task)
    question = data[task][0].input
    cot = bbh.build_prompt(text, question, "cot")
    assert cot == raw_prompt(bbh_dir, task) + f"\n\nQ: {question}\nA: Let's think step by step."
    cot_shots, direct_shots = bbh.few_shot_exemplars(text, "cot"), bbh.few_shot_exemplars(text, "direct")
    assert len(cot_shots) == len(direct_shots) == 3
    assert all(s.startswith("Q: ") and "So the answer is " in s and s.endswith(".") for s in cot_shots)
    direct = bbh.build_prompt(text, question, "direct")
    assert direct.endswith(f"\n\nQ: {question}\nA:") and "think step by step" not in direct
    for cot_shot, direct_shot in zip(cot_shots, direct_shots):
        q, answer = direct_shot.rsplit("\nA: ", 1)
        assert cot_shot.startswith(q + "\nA: Let's think step by step.")
        assert cot_shot.endswith(f"So the answer is {answer}.")
        if task not in ("multistep_arithmetic_two", "word_sorting"):  # their exemplar answers are unique
            assert answer in {ex.target for ex in data[task]}, (task, answer)


def test_write_prompts(bbh_dir, tmp_path):
    out = tmp_path / "sub" / "sports.jsonl"
    assert bbh.write_prompts("sports_understanding", "direct", str(out), bbh_dir) == 250
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(250))
    assert rows[0] == {"task": "sports_understanding", "index": 0, "input": SPORTS_DIRECT, "target": "no"}


# ---------------------------------------------------------------- answers

@pytest.mark.parametrize("generation, expected", [
    ("Z = A and B = False. So the answer is False.", "False"),
    ("the stack is empty. So the answer is ] } ].", "] } ]"),
    ("So the answer is   (B) .  \n", "(B)"),
    ("So the answer is (A). Hmm, no: the answer is (C).", "(C)"),
    ("So the answer is (A).\nOn reflection The Answer Is valid.", "valid"),
    ("So the answer is 24.\n\nQ: 1 + 1 =\nA: Let's think step by step. So the answer is 2.", "24"),
    ("(B)", "(B)"),                                 # no "answer is": read as a direct answer
    ("I cannot tell.\n\nmore text", "I cannot tell."),
    ("So the answer is", ""),
])
def test_cot_extraction(generation, expected):
    assert extract_cot_answer(generation) == expected
    assert extract_answer(generation, "cot") == expected


@pytest.mark.parametrize("generation, expected", [
    (" (B)\n\nQ: next question\nA: (C)", "(B)"),
    ("yes\n", "yes"),
    ("(B).", "(B)."),          # direct answers are not trimmed: the exemplars show "A: (B)"
    ("] ]\nQ: Complete ...", "] ]"),
    ("first line\nsecond line\n \nthird", "first line\nsecond line"),
])
def test_direct_extraction(generation, expected):
    assert extract_direct_answer(generation) == expected
    assert extract_answer(generation, "direct") == expected


def test_prompt_text_without_cot_exemplars_is_refused():
    with pytest.raises(ValueError, match="exemplar 0 has no \"A: Let's think step by step.\" line"):
        bbh.build_prompt("Describe.\n\nQ: 1 + 1 =\nA: 2", "2 + 2 =", "direct")
    with pytest.raises(ValueError, match="unknown prompt mode 'zero'"):
        bbh.build_prompt("Q: x\nA: Let's think step by step. So the answer is y.", "z", "zero")


def test_matching_is_strict_after_strip():
    assert answer_matches(" (B) \n", "(B)")
    assert not answer_matches("B", "(B)") and not answer_matches("(b)", "(B)") and not answer_matches("Yes", "yes")
    with pytest.raises(ValueError, match="unknown answer mode 'fewshot'"):
        extract_answer("x", "fewshot")


# ---------------------------------------------------------------- baselines

def test_options_and_random_baseline(data):
    assert bbh.options("Q?\nOptions:\n- valid \n- invalid") == ["valid", "invalid"]
    assert bbh.options(data["date_understanding"][0].input) == ["(A)", "(B)", "(C)", "(D)", "(E)", "(F)"]
    assert bbh.options("no options here") == []
    assert bbh.random_baseline("boolean_expressions", data["boolean_expressions"]) == 50.0  # True/False
    assert bbh.random_baseline("navigate", data["navigate"]) == 50.0                        # - Yes / - No
    assert bbh.random_baseline("logical_deduction_three_objects", data["logical_deduction_three_objects"]) == \
        pytest.approx(100 / 3)
    for task in bbh.FREE_FORM_TASKS:
        assert bbh.random_baseline(task, data[task]) == 0.0
    # geometric_shapes: 200 questions with 10 options, 50 with 11.
    assert bbh.random_baseline("geometric_shapes", data["geometric_shapes"]) == \
        pytest.approx((200 * 10 + 50 * 100 / 11) / 250)
    # movie_recommendation: 231 with 4 options, 19 with 5, one of which ("Monsters, Inc") no option can hit.
    assert bbh.random_baseline("movie_recommendation", data["movie_recommendation"]) == \
        pytest.approx((231 * 25 + 18 * 20) / 250)
    made_up = [bbh.Example("x\nOptions:\n(A) a\n(B) b\n(C) c\n(D) d", "(A)"),
               bbh.Example("y\nOptions:\n(A) a\n(B) b", "(B)")]
    assert bbh.random_baseline("hyperbaton", made_up) == pytest.approx((25 + 50) / 2)


# ---------------------------------------------------------------- scoring

def write_outputs(path, outputs):
    path.write_text(json.dumps({"canary": "...", "outputs": [
        {"input": "prompt", "prediction": p, "target": t} for p, t in outputs]}))


def test_score_bbh_output_files(tmp_path):
    write_outputs(tmp_path / "boolean_expressions_few_shot_template_0-255000.json", [
        ("... = False. So the answer is False.", "False"),        # hit
        ("... So the answer is True.", "True"),                  # hit
        ("... So the answer is True.", "False"),                 # miss
        ("Hmm. So the answer is False.\n\nQ: x\nA: So the answer is True.", "False"),  # hit
    ])
    write_outputs(tmp_path / "snarks.json", [("... So the answer is (B).", "(A)"), ("So the answer is (A).", "(A)")])
    (tmp_path / "snarks_eval_metrics.jsonl").write_text("not read: only *.json files are outputs\n")
    records = bbh.read_bbh_outputs(str(tmp_path))
    assert [r["task"] for r in records] == ["boolean_expressions"] * 4 + ["snarks"] * 2
    rows = bbh.score_predictions(records, mode="cot", baselines={"boolean_expressions": 50.0, "snarks": 50.0})
    assert rows == [
        {"task": "boolean_expressions", "n": 4, "correct": 3, "accuracy": 75.0, "random": 50.0, "normalized": 50.0},
        {"task": "snarks", "n": 2, "correct": 1, "accuracy": 50.0, "random": 50.0, "normalized": 0.0},
        {"task": "MEAN", "n": 6, "num_tasks": 2, "accuracy": 62.5, "random": 50.0, "normalized": 25.0},
    ]  # unweighted: (75 + 50) / 2, not 4/6
    one = bbh.read_bbh_outputs(str(tmp_path / "snarks.json"))
    assert bbh.score_predictions(one, mode="cot")[0] == {"task": "snarks", "n": 2, "correct": 1, "accuracy": 50.0}


def test_score_jsonl_and_its_errors(tmp_path):
    path = tmp_path / "preds.jsonl"
    lines = [{"task": "navigate", "prediction": "Yes", "target": "Yes"},
             {"task": "navigate", "prediction": " No", "target": "Yes"},
             {"task": "word_sorting", "prediction": "a b c", "target": "a b c"}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    rows = bbh.score_predictions(bbh.read_predictions_jsonl(str(path)))
    assert [(r["task"], r["accuracy"]) for r in rows] == [("navigate", 50.0), ("word_sorting", 100.0), ("MEAN", 75.0)]
    bad = {
        '{"task": "navigate", "prediction": "Yes", "target": "Yes"}\n{"task": "nav", "prediction": "x", "target": "y"}':
            r"preds\.jsonl:2: unknown BBH task 'nav'",
        '{"task": "navigate", "target": "Yes"}': r"preds\.jsonl:1: missing or non-string field\(s\) \['prediction'\]",
        '\n\n{"task": "navigate", "prediction": "Yes" "target": "Yes"}': r"preds\.jsonl:3:\d+: invalid JSON",
        '["navigate", "Yes", "Yes"]': r"preds\.jsonl:1: expected a JSON object",
    }
    for text, message in bad.items():
        path.write_text(text)
        with pytest.raises(MalformedDataError, match=message):
            bbh.read_predictions_jsonl(str(path))


def test_bad_output_files(tmp_path):
    write_outputs(tmp_path / "my_results.json", [("So the answer is (A).", "(A)")])
    with pytest.raises(MalformedDataError, match=r"my_results\.json:file name: names no BBH task"):
        bbh.read_bbh_outputs(str(tmp_path / "my_results.json"))
    outputs = [{"prediction": "x", "target": "Yes"}, {"target": "No"}]
    (tmp_path / "navigate.json").write_text(json.dumps({"outputs": outputs}))
    with pytest.raises(MalformedDataError, match=r"navigate\.json:outputs\[1\]: .*'prediction'"):
        bbh.read_bbh_outputs(str(tmp_path / "navigate.json"))
    (tmp_path / "navigate.json").write_text('{"outputs": [\n{"prediction": "x",, "target": "Yes"}]}')
    with pytest.raises(MalformedDataError, match=r"navigate\.json:2:\d+: invalid JSON"):
        bbh.read_bbh_outputs(str(tmp_path / "navigate.json"))
    with pytest.raises(MissingDataError, match="not found"):
        bbh.read_bbh_outputs(str(tmp_path / "absent"))
    with pytest.raises(ValueError, match="record 0: missing"):
        bbh.score_predictions([{"task": "navigate", "target": "Yes"}])
    with pytest.raises(ValueError, match="no random baseline for task 'navigate'"):
        bbh.score_predictions([{"task": "navigate", "prediction": "Yes", "target": "Yes"}], baselines={})
