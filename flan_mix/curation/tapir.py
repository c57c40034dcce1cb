"""TAPIR (arXiv 2405.13448): a task-aware curriculum of instructions, chosen by how hard they are for the student.

`python run.py curate tapir --input=records.jsonl --output_dir=D [--oracle=overlap|--oracle_url=URL]
  [--student=MODEL_DIR] [--gin.tapir_settings.rounds=3 ...]`

Model fitting difficulty (MFD). A judge oracle grades the teacher's answer to an instruction (the record's
output, or the oracle's own answer with tapir_settings.teacher='oracle') and the student's answer (a flan_mix
checkpoint decoding the instruction greedily); MFD = teacher score - student score. Instructions with
MFD > mfd_threshold are "hard": the teacher can do them and the student cannot yet.

Task balance. Each record gets a task type: its `ability` (or else `task`) looked up in task_types (the
generated collection's abilities and the Flan 2022 catalog's DoIT abilities are mapped by default); a record
without either is classified by the oracle. Each round's set is resampled to target_ratios over the types, which
up-weight math, reasoning and code.

Rounds. Round 0 is the starting student: --student=MODEL_DIR, or else a student trained from scratch on a
type-balanced sample without regard to difficulty. Round r >= 1 scores every instruction with student r-1,
selects round_size instructions with hard share hard_share_start + (r-1) * hard_share_step (capped), writes
D/round_<r>/train.jsonl, registers it as the seqio mixture tapir_round_<r>, and trains student r on it, starting
from student r-1's weights.

Resume. Scores are appended per record (D/round_<r>/scores.jsonl), a round's set is written once, a student
resumes from its checkpoints, and D/round_<r>/done.json marks a finished round: a rerun redoes nothing done.
"""
from __future__ import annotations

import json
import logging
import os
import random
from collections import Counter
from typing import Mapping, Sequence

import gin
import numpy as np
from tqdm.auto import tqdm

from flan_mix.curation import judging
from flan_mix.curation.oracle import Oracle, OracleError
from flan_mix.curation.records import AppendOnlyWriter, prompt_text, read_records

logger = logging.getLogger(__name__)

OTHER = "other"
# ability or task label -> task type. Generated collection first, then the Flan 2022 catalog's DoIT abilities.
DEFAULT_TASK_TYPES = {
    "arithmetic": "math", "comparison": "math", "counting": "math",
    "boolean_logic": "reasoning", "entailment": "reasoning", "dates": "reasoning", "sorting": "reasoning",
    "code_tracing": "code", "string_edit": OTHER, "table_lookup": OTHER,
    "CoT math": "math", "STEM": "math", "logical reasoning": "reasoning", "code generation": "code",
    "humanities": OTHER, "creative writing": OTHER, "multilingual": OTHER, "dialogue understanding": OTHER,
    "role-play": OTHER, "ethics": OTHER,
}
# Ours (the paper's exact ratios were not available to us): math, reasoning and code up-weighted 1.5x over other.
DEFAULT_TARGET_RATIOS = {"math": 0.3, "reasoning": 0.3, "code": 0.2, OTHER: 0.2}
CLASSIFY_PROMPT = ("Which type of task is this instruction? Answer with one word from: {types}.\n\n"
                   "Instruction:\n{prompt}")


@gin.configurable
def tapir_settings(rounds: int = 3, mfd_threshold: float = 1.0, hard_share_start: float = 0.5,
                   hard_share_step: float = 0.2, hard_share_max: float = 0.9, round_size: int | None = None,
                   target_ratios: Mapping[str, float] | None = None, task_types: Mapping[str, str] | None = None,
                   teacher: str = "record", student_steps: int = 300, seed: int = 0, decode_batch_size: int = 32,
                   judge_max_tokens: int = 32) -> dict:
    """Every threshold, ratio and count of the curriculum (gin: tapir_settings.*); see the module docstring.

    mfd_threshold is on the judge's 0..10 scale. round_size None = as many as the input has records.
    target_ratios: task type -> share of a round's set (normalized over the types present in the input).
    teacher: 'record' (the record's output is the teacher's answer) or 'oracle' (the oracle answers).
    """
    ratios = dict(DEFAULT_TARGET_RATIOS if target_ratios is None else target_ratios)
    if int(rounds) < 1:
        raise ValueError(f"tapir_settings.rounds={rounds}: must be >= 1.")
    for name, value in (("hard_share_start", hard_share_start), ("hard_share_max", hard_share_max)):
        if not 0 <= value <= 1:
            raise ValueError(f"tapir_settings.{name}={value}: a share, between 0 and 1.")
    if not ratios or any(v < 0 for v in ratios.values()) or sum(ratios.values()) <= 0:
        raise ValueError(f"tapir_settings.target_ratios={ratios}: give non-negative shares per task type, "
                         "not all zero, e.g. {'math': 0.3, 'reasoning': 0.3, 'code': 0.2, 'other': 0.2}.")
    if teacher not in ("record", "oracle"):
        raise ValueError(f"tapir_settings.teacher={teacher!r}: choose 'record' or 'oracle'.")
    if round_size is not None and int(round_size) < 1:
        raise ValueError(f"tapir_settings.round_size={round_size}: must be >= 1 (or None).")
    return {"rounds": int(rounds), "mfd_threshold": float(mfd_threshold),
            "hard_share_start": float(hard_share_start), "hard_share_step": float(hard_share_step),
            "hard_share_max": float(hard_share_max), "round_size": None if round_size is None else int(round_size),
            "target_ratios": ratios, "task_types": dict(DEFAULT_TASK_TYPES if task_types is None else task_types),
            "teacher": teacher, "student_steps": int(student_steps), "seed": int(seed),
            "decode_batch_size": int(decode_batch_size), "judge_max_tokens": int(judge_max_tokens)}


def hard_share(round_index: int, settings: Mapping) -> float:
    """The target share of hard instructions in round `round_index` (1-based)."""
    return min(settings["hard_share_max"],
               settings["hard_share_start"] + (round_index - 1) * settings["hard_share_step"])


# ---------------------------------------------------------------------------------------------- task types

def classify(records: Sequence[dict], settings: Mapping, oracle: Oracle | None) -> list[dict]:
    """Copies of the records with `task_type` and `type_source` ('ability', 'task', 'oracle', 'unmapped',
    'oracle-unparsed'). A label that task_types does not map, and an oracle reply naming no known type,
    give 'other' (counted and logged), never a dropped record."""
    types = list(settings["target_ratios"])
    mapping = settings["task_types"]
    out, ask = [], []
    for rec in records:
        rec = dict(rec)
        label_field = next((f for f in ("ability", "task") if rec.get(f)), None)
        if label_field is None:
            ask.append(rec)
        elif rec[label_field] in mapping:
            rec["task_type"], rec["type_source"] = mapping[rec[label_field]], label_field
        else:
            rec["task_type"], rec["type_source"] = OTHER, "unmapped"
        out.append(rec)
    if ask:
        if oracle is None:
            raise ValueError(f"{len(ask)} record(s) have neither 'ability' nor 'task' (e.g. id {ask[0]['id']!r}) "
                             "and no oracle was given to classify them; add the field or pass --oracle.")
        replies = oracle.complete_many(
            [[{"role": "user", "content": CLASSIFY_PROMPT.format(types=", ".join(types), prompt=prompt_text(r))}]
             for r in ask], max_tokens=8)
        for rec, reply in zip(ask, replies):
            words = [] if isinstance(reply, OracleError) else reply.lower().replace(".", " ").split()
            found = next((t for t in types if t.lower() in words), None)
            rec["task_type"], rec["type_source"] = (found, "oracle") if found else (OTHER, "oracle-unparsed")
            rec["type_reply"] = str(reply)
    counts = Counter(r["type_source"] for r in out)
    if counts["unmapped"] or counts["oracle-unparsed"]:
        logger.warning("task types: %d record(s) with a label missing from tapir_settings.task_types and %d "
                       "oracle replies naming no type went to '%s'", counts["unmapped"], counts["oracle-unparsed"],
                       OTHER)
    return out


def type_quotas(records: Sequence[dict], total: int, ratios: Mapping[str, float]) -> dict[str, int]:
    """How many of `total` each present task type gets: target_ratios normalized over the types present,
    apportioned by largest remainder (ties to the type first by name) so the quotas sum to total."""
    present = sorted({r["task_type"] for r in records})
    missing = [t for t in present if t not in ratios]
    if missing:
        raise ValueError(f"task type(s) {missing} have no share in tapir_settings.target_ratios ({dict(ratios)}); "
                         "add them (0 to leave them out).")
    weights = {t: float(ratios[t]) for t in present}
    norm = sum(weights.values())
    if norm <= 0:
        raise ValueError(f"tapir_settings.target_ratios gives the types in the data ({present}) no share.")
    exact = {t: total * w / norm for t, w in weights.items()}
    quotas = {t: int(np.floor(x)) for t, x in exact.items()}
    for t in sorted(exact, key=lambda t: quotas[t] - exact[t])[:total - sum(quotas.values())]:
        quotas[t] += 1
    return quotas


# --------------------------------------------------------------------------------------------- selection

def _draw(pool: Sequence[dict], n: int, rng: random.Random) -> list[dict]:
    """n records from pool: without repeats while it lasts, then resampled with repeats (up-weighting)."""
    if n <= 0 or not pool:
        return []
    if n <= len(pool):
        return rng.sample(list(pool), n)
    return list(pool) + rng.choices(list(pool), k=n - len(pool))


def select(records: Sequence[dict], size: int, share: float, settings: Mapping, seed: int) -> list[dict]:
    """A round's set: per task type its quota, of which `share` from the type's hard records (MFD above the
    threshold, hardest first), the rest from its others. A type short of hard (or of other) records fills
    from the other pool, resampling with repeats when the type is too small for its quota."""
    rng = random.Random(seed)
    chosen = []
    for task_type, quota in type_quotas(records, size, settings["target_ratios"]).items():
        mine = [r for r in records if r["task_type"] == task_type]
        hard = sorted((r for r in mine if is_hard(r, settings)), key=lambda r: (-r["mfd"], r["id"]))
        easy = [r for r in mine if not is_hard(r, settings)]
        n_hard = min(round(quota * share), quota) if hard else 0
        if not easy:
            n_hard = quota
        picked = (hard[:n_hard] if n_hard <= len(hard) else _draw(hard, n_hard, rng)) + _draw(easy, quota - n_hard, rng)
        if n_hard and n_hard < round(quota * share):
            logger.info("type %s: %d hard records for a hard quota of %d", task_type, len(hard), round(quota * share))
        chosen += picked
    rng.shuffle(chosen)
    seen: Counter = Counter()
    out = []
    for rec in chosen:  # ids stay unique in the round's file; the original id is kept
        seen[rec["id"]] += 1
        out.append({**rec, "source_id": rec["id"], "id": f"{rec['id']}#{seen[rec['id']]}"})
    return out


def is_hard(record: Mapping, settings: Mapping) -> bool:
    return record.get("mfd") is not None and record["mfd"] > settings["mfd_threshold"]


# ----------------------------------------------------------------------------------------------- scoring

def student_answers(student_dir: str, records: Sequence[dict], settings: Mapping, vocabulary) -> list[str]:
    """Greedy decodes of the records' prompts by the checkpoint in student_dir (model config from gin)."""
    from flan_mix.infer.decoding import generate
    from flan_mix.infer.loading import load_model
    from flan_mix.runtime.run_config import run_config
    lengths = run_config().task_feature_lengths
    loaded = load_model(student_dir, vocabulary=vocabulary)
    rows = []
    for rec in records:
        ids = vocabulary.encode(prompt_text(rec))[:lengths["inputs"] - 1] + [vocabulary.eos_id]
        rows.append(np.asarray(ids, np.int32))
    return generate(loaded.model, loaded.params, rows, vocabulary, mesh=loaded.mesh,
                    inputs_length=lengths["inputs"], max_decode_len=lengths["targets"],
                    batch_size=settings["decode_batch_size"], desc="student answers")


def judge_pairs(records: Sequence[dict], teacher: Sequence[str], student: Sequence[str], oracle: Oracle,
                settings: Mapping) -> list[dict]:
    """The scored records: teacher/student answers, the judge's replies and scores, and MFD (None when either
    reply has no score; the reply is kept, so it can be read)."""
    chats = [judging.judge_messages(r, a) for r, a in zip(records, teacher)]
    chats += [judging.judge_messages(r, a) for r, a in zip(records, student)]
    replies = oracle.complete_many(chats, max_tokens=settings["judge_max_tokens"], temperature=0.0,
                                   seed=settings["seed"])
    n = len(records)
    out = []
    for i, rec in enumerate(records):
        t_reply, s_reply = replies[i], replies[n + i]
        t_score = None if isinstance(t_reply, OracleError) else judging.parse_score(t_reply)
        s_score = None if isinstance(s_reply, OracleError) else judging.parse_score(s_reply)
        problems = [f"{who} judge reply: {'error: ' + str(reply) if isinstance(reply, OracleError) else 'no score'}"
                    for who, reply, score in (("teacher", t_reply, t_score), ("student", s_reply, s_score))
                    if score is None]
        out.append({**rec, "teacher_answer": teacher[i], "student_answer": student[i],
                    "teacher_reply": str(t_reply), "student_reply": str(s_reply),
                    "teacher_score": t_score, "student_score": s_score,
                    "mfd": None if problems else t_score - s_score,
                    **({"score_error": "; ".join(problems)} if problems else {})})
    return out


def score_round(path: str, records: Sequence[dict], student_dir: str, oracle: Oracle, settings: Mapping,
                vocabulary, chunk: int = 64) -> list[dict]:
    """Scores the records not yet in `path` (appending, a chunk at a time) and returns all, in input order."""
    with AppendOnlyWriter(path) as writer:
        pending = writer.pending(records)
        for start in tqdm(range(0, len(pending), chunk), desc="MFD", unit="chunk", leave=False):
            part = pending[start:start + chunk]
            student = student_answers(student_dir, part, settings, vocabulary)
            failed: dict[str, str] = {}
            if settings["teacher"] == "record":
                teacher = [r["output"] for r in part]
            else:
                replies = oracle.complete_many([[{"role": "user", "content": prompt_text(r)}] for r in part],
                                               seed=settings["seed"])
                # An oracle that could not answer leaves the record's own output as the teacher's answer; the
                # record says so (teacher_error) instead of the failure passing unnoticed.
                failed = {r["id"]: str(a) for r, a in zip(part, replies) if isinstance(a, OracleError)}
                teacher = [r["output"] if isinstance(a, OracleError) else a for r, a in zip(part, replies)]
            for rec in judge_pairs(part, teacher, student, oracle, settings):
                writer.write({**rec, **({"teacher_error": failed[rec["id"]]} if rec["id"] in failed else {})})
    by_id = {r["id"]: r for r in read_records(path)}
    return [by_id[r["id"]] for r in records]


# ------------------------------------------------------------------------------------------------ rounds

def _write_jsonl(path: str, records: Sequence[dict]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    os.replace(tmp, path)  # whole or absent: a resumed run never trains on half a set


def register_round(round_index: int, records: Sequence[dict], vocabulary) -> str:
    """Registers the round's set as task tapir_round_<r>_task inside the mixture tapir_round_<r>; returns the
    mixture's name."""
    from flan_mix.data import records_task
    name = f"tapir_round_{round_index}"
    records_task.register_records_task(f"{name}_task", {"train": [
        {"inputs": prompt_text(r), "targets": r["output"]} for r in records]}, vocabulary, mixture=name)
    return name


def train_student(round_dir: str, mixture: str, settings: Mapping, init_from: str | None) -> str:
    """Trains the round's student on `mixture` (from init_from's latest weights when given); returns its dir."""
    from flan_mix.train.overrides import gin_overrides
    from flan_mix.train import loop
    student_dir = os.path.join(round_dir, "student")
    bindings = [f"run_config.model_dir = {student_dir!r}", f"run_config.mixture_or_task_name = {mixture!r}",
                f"run_config.train_steps = {settings['student_steps']}", f"run_config.seed = {settings['seed']}"]
    if init_from:
        bindings.append(f"train.initial_checkpoint_path = {init_from!r}")
    with gin_overrides((), bindings):
        loop.train()
    return student_dir


def round_stats(selected: Sequence[dict], settings: Mapping, share: float) -> dict:
    types = Counter(r["task_type"] for r in selected)
    scored = [r for r in selected if r.get("mfd") is not None]
    return {"size": len(selected), "target_hard_share": share,
            "hard_share": sum(is_hard(r, settings) for r in selected) / len(selected),
            "mean_mfd": float(np.mean([r["mfd"] for r in scored])) if scored else None,
            "unique_instructions": len({r["source_id"] for r in selected}),
            "type_shares": {t: n / len(selected) for t, n in sorted(types.items())}}


def run_tapir(input_path: str, output_dir: str, oracle: Oracle, student: str | None = None,
              settings: Mapping | None = None) -> list[dict]:
    """All rounds (skipping finished ones); returns each round's stats (also in D/round_<r>/done.json)."""
    from flan_mix.data import registration
    settings = settings or tapir_settings()
    records = classify(read_records(input_path), settings, oracle)
    size = settings["round_size"] or len(records)
    vocabulary = registration.register_all()
    os.makedirs(output_dir, exist_ok=True)
    student_dir = student
    if student_dir is None:  # round 0: a starting student on a balanced sample, difficulty unknown yet
        round_dir = os.path.join(output_dir, "round_0")
        os.makedirs(round_dir, exist_ok=True)
        seed_path = os.path.join(round_dir, "train.jsonl")
        if not os.path.exists(seed_path):
            _write_jsonl(seed_path, select(records, size, 0.0, settings, settings["seed"]))
        seed_set = read_records(seed_path)
        if not os.path.exists(os.path.join(round_dir, "done.json")):
            student_dir = train_student(round_dir, register_round(0, seed_set, vocabulary), settings, None)
            _write_jsonl(os.path.join(round_dir, "done.json"), [round_stats(seed_set, settings, 0.0)])
        student_dir = os.path.join(round_dir, "student")
    stats = []
    for r in range(1, settings["rounds"] + 1):
        round_dir = os.path.join(output_dir, f"round_{r}")
        done = os.path.join(round_dir, "done.json")
        if os.path.exists(done):
            with open(done) as f:
                stats.append(json.loads(f.readline()))
            student_dir = os.path.join(round_dir, "student")
            print(f"round {r}: done before ({done})")
            continue
        os.makedirs(round_dir, exist_ok=True)
        scored = score_round(os.path.join(round_dir, "scores.jsonl"), records, student_dir, oracle, settings,
                             vocabulary)
        share = hard_share(r, settings)
        train_path = os.path.join(round_dir, "train.jsonl")
        if not os.path.exists(train_path):
            _write_jsonl(train_path, select(scored, size, share, settings, settings["seed"] + r))
        selected = read_records(train_path)
        mixture = register_round(r, selected, vocabulary)
        student_dir = train_student(round_dir, mixture, settings, init_from=student_dir)
        stat = {"round": r, "mixture": mixture, **round_stats(selected, settings, share),
                "unscored": sum(x.get("mfd") is None for x in scored),
                "hard_in_pool": sum(is_hard(x, settings) for x in scored)}
        _write_jsonl(done, [stat])
        stats.append(stat)
        print(f"round {r}: {stat['size']} instructions ({stat['unique_instructions']} distinct), hard share "
              f"{stat['hard_share']:.2f} (target {share:.2f}), mean MFD "
              f"{'n/a' if stat['mean_mfd'] is None else format(stat['mean_mfd'], '.2f')}, "
              f"{stat['hard_in_pool']}/{len(scored)} hard in the pool, {stat['unscored']} unscored; "
              f"types {stat['type_shares']}; wrote {train_path}, mixture {mixture}")
    return stats


def make_oracle(oracle: str | None, oracle_url: str | None, oracle_model: str | None) -> Oracle:
    """--oracle=overlap (the offline reference-overlap judge), --oracle=DIR (a flan_mix checkpoint as a chat
    model) or --oracle_url=URL [--oracle_model=M] (an OpenAI-compatible endpoint)."""
    if oracle and oracle_url:
        raise ValueError("give one of --oracle and --oracle_url, not both.")
    if oracle_url:
        from flan_mix.curation.http_oracle import HttpOracle
        return HttpOracle(oracle_url, model=oracle_model)
    if not oracle or oracle == "overlap":
        return judging.ReferenceOverlapJudge()
    if not os.path.isdir(oracle):
        raise ValueError(f"--oracle={oracle}: neither 'overlap' nor a flan_mix MODEL_DIR.")
    from flan_mix.curation.local_oracle import LocalOracle
    from flan_mix.infer.loading import load_model
    from flan_mix.runtime.run_config import run_config
    lengths = run_config().task_feature_lengths
    return LocalOracle(load_model(oracle), name=f"local:{oracle}", max_prompt_tokens=lengths["inputs"],
                       max_decode_len=lengths["targets"])


def tapir_command(input: str | None = None, output_dir: str | None = None, oracle: str | None = None,
                  oracle_url: str | None = None, oracle_model: str | None = None,
                  student: str | None = None) -> list[dict]:
    """`python run.py curate tapir --input=FILE --output_dir=D` (the curriculum's settings: gin tapir_settings.*)."""
    if not input or not output_dir:
        raise ValueError("curate tapir needs --input=FILE (instruction records, JSONL) and --output_dir=D.")
    if student and not os.path.isdir(os.path.join(student, "checkpoints")):
        raise ValueError(f"--student={student}: no checkpoints/ there; give a trained flan_mix MODEL_DIR, or "
                         "leave --student out to train a starting student (round 0).")
    return run_tapir(input, output_dir, make_oracle(oracle, oracle_url, oracle_model), student=student)
