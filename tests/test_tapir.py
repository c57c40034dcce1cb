"""TAPIR on CPU: a real student (tiny T5 trained and decoded by flan_mix) in two rounds over records exported
from the generated collection. The teacher/judge is a small deterministic Oracle defined here (exact-match
grading), so every MFD can be worked out by hand from the answers written to scores.jsonl."""
import json
import os

import gin
import pytest

from flan_mix import launcher
from flan_mix.curation import judging, tapir
from flan_mix.curation.oracle import Oracle
from flan_mix.curation.records import read_records
from flan_mix.evaluation.metrics import normalize_answer
from tests.helpers import reuse_compilations  # noqa: F401  (an autouse fixture)

TINY = [
    "TASK_FEATURE_LENGTHS = {'inputs': 96, 'targets': 16}", "BATCH_SIZE = 4",
    "register_generated_tasks.num_train = 20", "register_generated_tasks.num_validation = 4",
    "T5Config.emb_dim = 32", "T5Config.num_heads = 2", "T5Config.head_dim = 16", "T5Config.mlp_dim = 64",
    "T5Config.num_encoder_layers = 1", "T5Config.num_decoder_layers = 1", "train.log_every_steps = 1",
    "tapir_settings.rounds = 2", "tapir_settings.round_size = 40", "tapir_settings.student_steps = 3",
    "tapir_settings.hard_share_start = 0.5", "tapir_settings.hard_share_step = 0.25",
    "tapir_settings.mfd_threshold = 1.0", "tapir_settings.teacher = 'oracle'",
    "tapir_settings.decode_batch_size = 16",
]
# One task per task type (math, reasoning, code, other), 10 instructions each.
TASKS = {"add_word_problem": "arithmetic", "sort_words": "sorting", "trace_assign": "code_tracing",
         "reverse_letters": "string_edit"}
UNGRADABLE = "add_word_problem-3"  # the judge gives this record's grades without a score


def export_records(path, per_task=10):
    """Instruction records from the generated tasks' train splits (zero-shot, no options)."""
    from flan_mix.data import pipeline, registration
    registration.register_all()
    with open(path, "w") as f:
        for task, ability in TASKS.items():
            for i, ex in enumerate(pipeline.get_eval_examples(f"gen_{task}_zs_noopt", split="train",
                                                              max_examples=per_task)):
                f.write(json.dumps({"id": f"{task}-{i}", "instruction": ex["inputs_pretokenized"], "input": "",
                                    "output": ex["targets_pretokenized"], "task": task, "ability": ability}) + "\n")


class ExactMatchOracle:
    """Teacher and judge in one. As a judge: 10 for an answer equal to the reference (after normalize_answer),
    else 2; no score at all for one record. As a teacher: the reference for the even-numbered instructions,
    "no idea" for the odd ones, so half of each task type is beyond the teacher (MFD 0 there)."""

    name = "test-exact-match"

    def __init__(self, references):
        self.references = references  # prompt -> (id, output)
        self.calls = 0

    def complete(self, messages, *, max_tokens=256, temperature=0.0, seed=None):
        self.calls += 1
        text = messages[-1]["content"]
        if judging.REFERENCE_HEADER in text:
            if UNGRADABLE in text:
                return "I would rather not grade this one."
            ref = text.split(judging.REFERENCE_HEADER)[1].split(judging.ANSWER_HEADER)[0].strip()
            ans = text.split(judging.ANSWER_HEADER)[1].rsplit("\n\nReply with", 1)[0].strip()
            return f"Score: {grade(ans, ref)}"
        rid, output = self.references[text]
        return output if int(rid.rsplit("-", 1)[1]) % 2 == 0 else "no idea"

    def complete_many(self, conversations, *, max_tokens=256, temperature=0.0, seed=None):
        return [self.complete(c) for c in conversations]


def grade(answer, reference):
    return 10 if normalize_answer(answer) == normalize_answer(reference) else 2


def _setup(tmp_path):
    gin.clear_config()
    launcher.parse_gin([launcher.DEFAULT_GIN], TINY)
    src = str(tmp_path / "records.jsonl")
    export_records(src)
    records = read_records(src)
    # Tag the ungradable record's prompt so the judge can recognise it inside its chat.
    for r in records:
        if r["id"] == UNGRADABLE:
            r["instruction"] += f" [{UNGRADABLE}]"
    with open(src, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    oracle = ExactMatchOracle({r["instruction"]: (r["id"], r["output"]) for r in records})
    return src, oracle, records


def test_mfd_by_hand_and_score_parsing():
    rec = {"id": "x", "instruction": "Add 2 and 3.", "input": "", "output": "5"}
    oracle = ExactMatchOracle({})
    settings = tapir.tapir_settings()
    out = tapir.judge_pairs([rec, rec, rec], ["5", "5", "no idea"], ["7", "5.", "7"], oracle, settings)
    assert [(o["teacher_score"], o["student_score"], o["mfd"]) for o in out] == [(10, 2, 8), (10, 10, 0), (2, 2, 0)]
    odd = {**rec, "instruction": f"Add. [{UNGRADABLE}]"}
    (unscored,) = tapir.judge_pairs([odd], ["5"], ["7"], oracle, settings)
    assert unscored["mfd"] is None and "no score" in unscored["score_error"]
    assert unscored["teacher_reply"] == "I would rather not grade this one."
    cases = {"Score: 7": 7, "score=8/10": 8, "Rating: 4 out of 5": 8, "I'd say 3/10.": 3, " 6 ": 6,
             "Score: 11": None, "The answer is fine.": None, "": None}
    assert {k: judging.parse_score(k) for k in cases} == cases
    # The offline judge: 1 + 9 * token F1. "Paris is big" vs "Paris": P = 1/3, R = 1, F1 = 0.5 -> 5.5.
    reply = judging.ReferenceOverlapJudge().complete(judging.judge_messages(
        {"instruction": "Capital of France?", "input": "", "output": "Paris"}, "Paris is big"))
    assert reply == "Score: 5.5"


def test_quotas_follow_target_ratios():
    recs = [{"task_type": t} for t in ("math",) * 5 + ("code",) * 5 + ("other",) * 30]
    assert tapir.type_quotas(recs, 40, {"math": 0.3, "reasoning": 0.3, "code": 0.2, "other": 0.2}) == \
        {"code": 12, "math": 17, "other": 11}  # 40 * (3/7, 2/7, 2/7) = 17.14, 11.43, 11.43: floors 17 + 11 + 11,
    # the one left goes to the largest remainder, a tie between code and other broken by name
    with pytest.raises(ValueError, match="tapir_settings.target_ratios"):
        tapir.type_quotas([{"task_type": "poetry"}], 4, {"math": 1.0})


def test_two_rounds_raise_hard_share_keep_ratios_and_resume(tmp_path):
    src, oracle, records = _setup(tmp_path)
    out = str(tmp_path / "tapir")
    stats = tapir.run_tapir(src, out, oracle)
    settings = tapir.tapir_settings()

    assert [s["round"] for s in stats] == [1, 2]
    assert stats[1]["hard_share"] > stats[0]["hard_share"]  # the curriculum gets harder
    assert [s["target_hard_share"] for s in stats] == [0.5, 0.75]
    for r, stat in enumerate(stats, 1):
        selected = read_records(os.path.join(out, f"round_{r}", "train.jsonl"))
        assert len(selected) == 40
        # All four types are present, so the target shares are 0.3/0.3/0.2/0.2 of 40 exactly.
        for task_type, target in settings["target_ratios"].items():
            share = sum(x["task_type"] == task_type for x in selected) / 40
            assert share == pytest.approx(target, abs=1 / 40), (r, task_type)
        assert stat["hard_share"] == pytest.approx(sum(tapir.is_hard(x, settings) for x in selected) / 40)
        # MFD from the written answers, by this file's grading rule (teacher 10 or 2, student 10 or 2).
        scored = read_records(os.path.join(out, f"round_{r}", "scores.jsonl"))
        assert len(scored) == len(records)
        for x in scored:
            if x["id"] == UNGRADABLE:
                assert x["mfd"] is None and "no score" in x["score_error"]
                continue
            expect_teacher = x["output"] if int(x["id"].rsplit("-", 1)[1]) % 2 == 0 else "no idea"
            assert x["teacher_answer"] == expect_teacher
            assert x["mfd"] == grade(x["teacher_answer"], x["output"]) - grade(x["student_answer"], x["output"])
        # The round's set is registered as a seqio mixture the trainer can read.
        import seqio
        assert f"tapir_round_{r}_task" in [t.name for t in seqio.MixtureRegistry.get(f"tapir_round_{r}").tasks]
        assert os.path.isdir(os.path.join(out, f"round_{r}", "student", "checkpoints"))

    # A finished run: nothing is asked again, nothing rewritten.
    mtimes = {p: os.path.getmtime(os.path.join(out, p)) for p in
              ("round_1/train.jsonl", "round_2/train.jsonl", "round_2/done.json", "round_2/scores.jsonl")}
    oracle.calls = 0
    assert tapir.run_tapir(src, out, oracle) == stats
    assert oracle.calls == 0
    assert mtimes == {p: os.path.getmtime(os.path.join(out, p)) for p in mtimes}

    # Killed in round 2's scoring: only the records without a score line are judged again.
    path = os.path.join(out, "round_2", "scores.jsonl")
    os.remove(os.path.join(out, "round_2", "done.json"))
    os.remove(os.path.join(out, "round_2", "train.jsonl"))
    with open(path) as f:
        lines = f.readlines()
    with open(path, "w") as f:
        f.writelines(lines[:25])
    oracle.calls = 0
    again = tapir.run_tapir(src, out, oracle)
    assert oracle.calls == 3 * 15  # teacher answer + two grades for each of the 15 unscored records
    assert again[1]["hard_share"] == stats[1]["hard_share"]


class _Classifier:
    """Replies with a fixed word per instruction, as an LLM asked for the task type might."""
    name = "test-classifier"

    def __init__(self, replies):
        self.replies = replies

    def complete(self, messages, *, max_tokens=256, temperature=0.0, seed=None):
        return next(v for k, v in self.replies.items() if k in messages[-1]["content"])

    def complete_many(self, conversations, *, max_tokens=256, temperature=0.0, seed=None):
        return [self.complete(c) for c in conversations]


def test_task_types_from_labels_then_oracle():
    settings = tapir.tapir_settings()
    base = {"input": "", "output": "x"}
    recs = [{**base, "id": "a", "instruction": "Add 2 and 2.", "ability": "arithmetic"},
            {**base, "id": "b", "instruction": "Trace it.", "task": "code generation"},
            {**base, "id": "c", "instruction": "Knit a hat.", "ability": "knitting"},
            {**base, "id": "d", "instruction": "Write a sort function."},
            {**base, "id": "e", "instruction": "Write a poem."}]
    assert isinstance(_Classifier({}), Oracle)
    out = tapir.classify(recs, settings, _Classifier({"sort function": "Code.", "poem": "poetry"}))
    assert [(r["task_type"], r["type_source"]) for r in out] == [
        ("math", "ability"), ("code", "task"), ("other", "unmapped"), ("code", "oracle"), ("other", "oracle-unparsed")]
    with pytest.raises(ValueError, match="neither 'ability' nor 'task'.*--oracle"):
        tapir.classify(recs[3:], settings, None)


def test_command_errors_name_the_flag(tmp_path):
    with pytest.raises(ValueError, match="--input"):
        tapir.tapir_command(input=None, output_dir=str(tmp_path))
    with pytest.raises(ValueError, match="--student=.*no checkpoints"):
        tapir.tapir_command(input="r.jsonl", output_dir=str(tmp_path), student=str(tmp_path))
    with pytest.raises(ValueError, match="not both"):
        tapir.make_oracle("overlap", "http://127.0.0.1:1/v1", None)
    with pytest.raises(ValueError, match="tapir_settings.hard_share_start"):
        tapir.tapir_settings(hard_share_start=1.5)


def test_cli_usage_error_exits_2(tmp_path):
    import subprocess
    import sys
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "run.py", "curate", "tapir", f"--output_dir={tmp_path}",
                           "--gin.tapir_settings.rounds=2"], cwd=repo, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--input" in proc.stderr, proc.stderr[-2000:]
