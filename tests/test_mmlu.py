"""MMLU loading, prompts, answer reading and scoring (flan_mix/evaluation/mmlu.py).

Expectations come from the raw CSV files read here independently, from strings written out by hand, and
from hand-computed counts; the tests on the real data skip when ../shared/data/mmlu is absent."""
import csv
import json
import os

import pytest

from flan_mix.data.data_errors import MalformedDataError, MissingDataError
from flan_mix.evaluation import mmlu

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MMLU_DIR = os.path.join(REPO, "..", "shared", "data", "mmlu")
needs_mmlu = pytest.mark.skipif(
    not os.path.isdir(os.path.join(MMLU_DIR, "data", "test")),
    reason=f"real MMLU CSVs not found at {os.path.abspath(MMLU_DIR)} (../shared/data absent)")


def _raw_rows(split, subject):
    with open(os.path.join(MMLU_DIR, "data", split, f"{subject}_{split}.csv"), newline="", encoding="utf-8-sig") as f:
        return list(csv.reader(f))


@needs_mmlu
def test_row_counts_subjects_and_categories():
    expected_rows = {"dev": 285, "val": 1531, "test": 14042}
    for split, total in expected_rows.items():
        on_disk = sorted(os.listdir(os.path.join(MMLU_DIR, "data", split)))
        assert on_disk == sorted(f"{s}_{split}.csv" for s in mmlu.SUBJECTS)  # val files are *_val.csv in val/
        loaded = mmlu.load_split(MMLU_DIR, split)
        assert sorted(loaded) == sorted(mmlu.SUBJECTS)
        assert sum(len(v) for v in loaded.values()) == total
    assert all(len(v) == 5 for v in mmlu.load_split(MMLU_DIR, "dev").values())
    assert len(mmlu.SUBJECTS) == 57
    assert set(mmlu.CATEGORIES) == set(mmlu.SUBJECTS)
    counts = {c: sum(1 for s in mmlu.SUBJECTS if mmlu.CATEGORIES[s] == c) for c in mmlu.CATEGORY_NAMES}
    assert counts == {"STEM": 18, "humanities": 13, "social sciences": 12, "other": 14}
    # A few well-known placements from the original categories.py.
    assert mmlu.CATEGORIES["professional_law"] == "humanities"
    assert mmlu.CATEGORIES["econometrics"] == "social sciences"
    assert mmlu.CATEGORIES["virology"] == "other"
    assert mmlu.CATEGORIES["machine_learning"] == "STEM"


@needs_mmlu
def test_fields_are_verbatim_and_the_parent_dir_works():
    test = mmlu.load_split(MMLU_DIR, "test", ["abstract_algebra", "college_medicine"])
    q = test["abstract_algebra"][2]  # a quoted option holds a comma: "0,1"
    assert q == mmlu.Question("Find all zeros in the indicated finite field of the given polynomial with "
                              "coefficients in that field. x^5 + 3x^3 + x^2 + 2x in Z_5", ("0", "1", "0,1", "0,4"), "D")
    assert not test["college_medicine"][0].question.startswith("\ufeff")  # that file starts with a BOM
    assert mmlu.load_split(os.path.join(MMLU_DIR, "data"), "dev") == mmlu.load_split(MMLU_DIR, "dev")


@needs_mmlu
def test_prompt_layout_abstract_algebra_written_out():
    dev = mmlu.load_split(MMLU_DIR, "dev", ["abstract_algebra"])["abstract_algebra"]
    question = mmlu.load_split(MMLU_DIR, "test", ["abstract_algebra"])["abstract_algebra"][0]
    expected = (
        "The following are multiple choice questions (with answers) about  abstract algebra.\n\n"
        "Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer: B\n\n"
        "Statement 1 | If aH is an element of a factor group, then |aH| divides |a|. Statement 2 | If H and K "
        "are subgroups of G then HK is a subgroup of G.\nA. True, True\nB. False, False\nC. True, False\n"
        "D. False, True\nAnswer: B\n\n"
        "Statement 1 | Every element of a group generates a cyclic subgroup of the group. Statement 2 | The "
        "symmetric group S_10 has 10 elements.\nA. True, True\nB. False, False\nC. True, False\n"
        "D. False, True\nAnswer: C\n\n"
        "Statement 1| Every function from a finite set onto itself must be one to one. Statement 2 | Every "
        "subgroup of an abelian group is abelian.\nA. True, True\nB. False, False\nC. True, False\n"
        "D. False, True\nAnswer: A\n\n"
        "Find the characteristic of the ring 2Z.\nA. 0\nB. 3\nC. 12\nD. 30\nAnswer: A\n\n"
        "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\n"
        "A. 0\nB. 4\nC. 2\nD. 6\nAnswer:")
    assert mmlu.build_prompt("abstract_algebra", dev, question) == expected


@needs_mmlu
def test_prompt_layout_college_mathematics_from_raw_rows():
    # Its third dev exemplar is a quoted multi-line question with \r\n inside: kept verbatim.
    subject = "college_mathematics"
    dev_rows, test_rows = _raw_rows("dev", subject), _raw_rows("test", subject)
    assert "\r\n" in dev_rows[2][0]

    def block(r, answer):
        return f"{r[0]}\nA. {r[1]}\nB. {r[2]}\nC. {r[3]}\nD. {r[4]}\nAnswer:" + (f" {r[5]}\n\n" if answer else "")

    dev = mmlu.load_split(MMLU_DIR, "dev", [subject])[subject]
    questions = mmlu.load_split(MMLU_DIR, "test", [subject])[subject]
    assert len(questions) == len(test_rows)
    for i in (0, len(test_rows) - 1):
        expected = ("The following are multiple choice questions (with answers) about  college mathematics.\n\n"
                    + "".join(block(r, True) for r in dev_rows) + block(test_rows[i], False))
        assert mmlu.build_prompt(subject, dev, questions[i]) == expected
    assert mmlu.build_prompt(subject, dev, questions[0], k=0).count("Answer:") == 1


def _synthetic(n):
    return [mmlu.Question(f"q{i}", ("a", "b", "c", "d"), "ABCD"[i % 4]) for i in range(1, n + 1)]


def test_fit_prompt_drops_exemplars_from_the_end():
    words = lambda text: len(text.split())
    dev, question = _synthetic(5), mmlu.Question("what", ("w", "x", "y", "z"), "A")
    # Header "The following ... about  x." is 10 words, each exemplar 11 ("q1 A. a B. b C. c D. d Answer: A"),
    # the question 10 ("what A. w B. x C. y D. z Answer:"): k shots = 20 + 11k words.
    assert words(mmlu.build_prompt("x", dev, question, 5)) == 75
    for max_len, dropped in [(75, 0), (1000, 0), (74, 1), (64, 1), (63, 2), (31, 4), (30, 5), (20, 5)]:
        prompt, n = mmlu.fit_prompt("x", dev, question, max_len, words)
        assert n == dropped, max_len
        assert words(prompt) == 20 + 11 * (5 - dropped) <= max_len
        kept = [q.question for q in dev if f"{q.question}\n" in prompt]
        assert kept == [f"q{i}" for i in range(1, 6 - dropped)]  # the first ones stay
    with pytest.raises(mmlu.PromptTooLongError, match="max_len=19"):
        mmlu.fit_prompt("x", dev, question, 19, words)
    with pytest.raises(ValueError, match="k=6"):
        mmlu.build_prompt("x", dev, question, 6)


def test_summarize_drops():
    summary = mmlu.summarize_drops([("anatomy", 0), ("professional_law", 2), ("professional_law", 1),
                                    ("virology", 1), ("anatomy", 0)])
    assert summary["prompts"] == 5 and summary["prompts_with_drops"] == 3
    assert summary["exemplars_dropped"] == 4
    assert summary["per_subject"] == {"professional_law": 3, "virology": 1}
    assert summary["message"].startswith("3 of 5 MMLU prompts dropped exemplars to fit (4 exemplars in all")
    assert mmlu.summarize_drops([("anatomy", 0)])["message"] == \
        "0 of 1 MMLU prompts dropped exemplars to fit (0 exemplars in all)"


def test_option_targets():
    assert mmlu.option_targets() == ["A", "B", "C", "D"]
    assert mmlu.option_targets(leading_space=True) == [" A", " B", " C", " D"]


@pytest.mark.parametrize("generation, choice", [
    ("B", "B"), (" C\n", "C"), ("b", "B"), ("(d)", "D"), ("[A]", "A"), ("B.", "B"), ("c)", "C"),
    ("B. False, False", "B"), ("D) 120", "D"), ("The answer: C", "C"), ("Answer: (A)", "A"),
    ("Option A is too small, so the answer is (C).", "C"), ("the answer is: D", "D"),
    ("A cat", "A"),  # documented limitation: a leading article reads as option A
    ("", None), ("none of them", None), ("U.S.A.", None), ("I'd guess", None), ("E", None), ("Bob", None),
])
def test_extract_choice(generation, choice):
    assert mmlu.extract_choice(generation) == choice


def test_score_hand_computed():
    records = ([{"subject": "abstract_algebra", "target": t, "prediction": p}
                for t, p in [("A", "A"), ("B", "B"), ("C", "C"), ("D", "A")]]          # 3/4 = 75%
               + [{"subject": "astronomy", "target": "B", "prediction": p} for p in ("A", None)]  # 0/2
               + [{"subject": "anatomy", "target": "C", "prediction": "C"}])           # 1/1
    rows = {r["name"]: r for r in mmlu.score(records)}
    assert [r["name"] for r in mmlu.score(records)] == ["abstract_algebra", "anatomy", "astronomy", "STEM",
                                                        "other", "ALL"]
    assert rows["abstract_algebra"]["accuracy_examples"] == 75.0
    assert rows["abstract_algebra"]["accuracy_subject_mean"] == 75.0
    assert (rows["astronomy"]["accuracy_examples"], rows["astronomy"]["no_answer"]) == (0.0, 1)
    stem = rows["STEM"]
    assert (stem["kind"], stem["n"], stem["correct"]) == ("category", 6, 3)
    assert stem["accuracy_examples"] == 50.0                  # 3 of 6 examples
    assert stem["accuracy_subject_mean"] == 37.5              # (75 + 0) / 2
    assert rows["other"]["accuracy_examples"] == 100.0
    overall = rows["ALL"]
    assert (overall["n"], overall["correct"], overall["no_answer"]) == (7, 4, 1)
    assert overall["accuracy_examples"] == pytest.approx(400 / 7)       # 57.14
    assert overall["accuracy_subject_mean"] == pytest.approx(175 / 3)   # (75 + 0 + 100) / 3
    assert all(r["random"] == 25.0 for r in rows.values())
    assert set(mmlu.SCORE_COLUMNS) == set(overall)
    with pytest.raises(ValueError, match="unknown MMLU subject"):
        mmlu.score([{"subject": "astrology", "target": "A", "prediction": "A"}])
    with pytest.raises(ValueError, match="record 0"):
        mmlu.score([{"subject": "anatomy", "target": "A", "prediction": "E"}])


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        f.write(text)


def test_malformed_rows_name_file_and_line(tmp_path):
    path = str(tmp_path / "dev" / "anatomy_dev.csv")
    good = 'plain question,a,b,c,d,A\n"multi\nline, question",a,b,c,d,B\n'  # lines 1 and 2-3
    _write(path, good + "third question,a,b,c,D\n")
    with pytest.raises(MalformedDataError, match=r"anatomy_dev\.csv:line 4: expected 6 columns") as err:
        mmlu.load_split(str(tmp_path), "dev", ["anatomy"])
    assert err.value.file == path
    _write(path, good + '"spans\ntwo lines",a,b,c,d,E\n')
    with pytest.raises(ValueError, match=r"anatomy_dev\.csv:line 4: answer must be one of A, B, C, D, got 'E'"):
        mmlu.load_split(str(tmp_path), "dev", ["anatomy"])
    _write(path, good)
    assert [q.question for q in mmlu.load_split(str(tmp_path), "dev", ["anatomy"])["anatomy"]] == \
        ["plain question", "multi\nline, question"]


def test_missing_data_errors(tmp_path):
    with pytest.raises(MissingDataError) as err:
        mmlu.load_split(str(tmp_path / "nowhere"), "test")
    message = str(err.value)
    assert "{mmlu_dir}/{dev,val,test}/{subject}_{split}.csv" in message and mmlu.DATA_URL in message
    assert isinstance(err.value, FileNotFoundError)
    os.makedirs(tmp_path / "data" / "val")
    with pytest.raises(MissingDataError, match=r"anatomy_val\.csv is missing"):
        mmlu.load_split(str(tmp_path), "val", ["anatomy"])  # the parent of data/ is accepted
    with pytest.raises(ValueError, match="unknown MMLU split"):
        mmlu.load_split(str(tmp_path), "train")
    with pytest.raises(ValueError, match="unknown MMLU subject"):
        mmlu.load_split(str(tmp_path), "val", ["astrology"])


@needs_mmlu
def test_write_prompts(tmp_path):
    out = str(tmp_path / "out" / "anatomy.val.jsonl")
    n = mmlu.write_prompts("anatomy", "val", out, MMLU_DIR)
    raw = _raw_rows("val", "anatomy")
    with open(out, encoding="utf-8") as f:
        lines = [json.loads(line) for line in f]
    assert n == len(lines) == len(raw) == 14
    dev = mmlu.load_split(MMLU_DIR, "dev", ["anatomy"])["anatomy"]
    for i, line in enumerate(lines):
        assert set(line) == {"task", "index", "input", "target"}
        assert (line["task"], line["index"], line["target"]) == ("mmlu_anatomy", i, raw[i][5])
        assert line["input"].count("\nAnswer: ") == 5 and line["input"].endswith(f"\nD. {raw[i][4]}\nAnswer:")
    first = mmlu.Question(raw[0][0], tuple(raw[0][1:5]), raw[0][5])
    assert lines[0]["input"] == mmlu.build_prompt("anatomy", dev, first)
    with pytest.raises(ValueError, match="dev split"):
        mmlu.write_prompts("anatomy", "dev", out, MMLU_DIR)
