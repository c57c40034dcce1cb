"""Reflection-Tuning (arXiv 2310.11716) and selective Reflection-Tuning (arXiv 2402.10110):
`python run.py curate reflect --input=IN.jsonl --output=OUT.jsonl [--mode=instruction|response|both]
 [--oracle=http|local --oracle_url=URL --oracle_model=NAME] [--selective=true]`.

An oracle (a stronger "teacher" chat model) reflects on each instruction record:
  instruction reflection: it critiques the instruction (complexity, level of detail, knowledge required,
    ambiguity, reasoning involved) and the answer (helpfulness, relevance, accuracy, detail), then writes a new
    instruction and an answer to it;
  response reflection: it critiques the answer alone on the same four points and writes a better answer to the
    unchanged instruction.
Replies come in marked sections ([[CRITIQUE]], [[NEW INSTRUCTION]], [[NEW ANSWER]]) that parse_reply reads.
The prompt wording is ours.

Every input record gets one output record, appended as soon as its chunk is done: the original fields, the
reflected ones (instruction_reflected, input_reflected, output_reflected, critique), the oracle's name, and
`reflection_error` -- None, or why the reflected fields are just the originals again (the oracle call failed
after its retries, or the reply did not parse). Nothing is dropped, and a rerun resumes after the last record
written (records.AppendOnlyWriter).

--selective=true (needs --mode=both) lets the student -- MODEL_DIR's checkpoint -- choose what it is trained on,
by the rule in select_version (IFD and reversed IFD from flan_mix.curation.ifd).
"""
from __future__ import annotations

import importlib
import math
import os
import re
from typing import Any, Optional, Sequence

import gin
from tqdm.auto import tqdm

from flan_mix.curation.oracle import Oracle, OracleError
from flan_mix.curation.records import AppendOnlyWriter, prompt_text, read_records

MODES = ("instruction", "response", "both")
CRITIQUE, NEW_INSTRUCTION, NEW_ANSWER = "CRITIQUE", "NEW INSTRUCTION", "NEW ANSWER"
INSTRUCTION_SECTIONS = (CRITIQUE, NEW_INSTRUCTION, NEW_ANSWER)
RESPONSE_SECTIONS = (CRITIQUE, NEW_ANSWER)

SYSTEM_PROMPT = ("You are a meticulous reviewer of training data for an instruction-following assistant. You judge "
                 "examples candidly and rewrite them so that a model learns more from them.")

INSTRUCTION_TEMPLATE = """Here is one training example: a task given to an assistant, and the reply it was trained to give.

<task>
{instruction}
</task>

<reply>
{output}
</reply>

Step 1 - review. Judge the task on how complex it is, how much detail it asks for, what knowledge it calls on, whether any part of it is ambiguous, and how much reasoning it takes. Judge the reply on whether it actually helps, whether it stays on what was asked, whether it is correct, and whether it is detailed enough.

Step 2 - rewrite. Using your review, write a better task on the same subject (clearer, more specific, more demanding, and self-contained: put any input it needs inside it), then write a high-quality reply to your new task.

Answer with exactly the three headed sections below, each header alone on its own line, and nothing after the last section:
[[CRITIQUE]]
your review
[[NEW INSTRUCTION]]
the rewritten task
[[NEW ANSWER]]
the reply to the rewritten task"""

RESPONSE_TEMPLATE = """Here is one training example: a task given to an assistant, and the reply it was trained to give.

<task>
{instruction}
</task>

<reply>
{output}
</reply>

Step 1 - review the reply only. Does it actually help? Does it stay on what the task asks? Is it correct? Is it detailed enough?

Step 2 - rewrite. Using your review, write a better reply to the same task. Leave the task exactly as it is.

Answer with exactly the two headed sections below, each header alone on its own line, and nothing after the last section:
[[CRITIQUE]]
your review
[[NEW ANSWER]]
the improved reply"""

_HEADER = re.compile(r"\[\[\s*(CRITIQUE|NEW\s+INSTRUCTION|NEW\s+ANSWER)\s*\]\]", re.IGNORECASE)


class ReflectionParseError(ValueError):
    """An oracle reply without the sections asked for (the message says which)."""


def instruction_messages(record: dict) -> list[dict]:
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": INSTRUCTION_TEMPLATE.format(instruction=prompt_text(record),
                                                                    output=record["output"])}]


def response_messages(record: dict) -> list[dict]:
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": RESPONSE_TEMPLATE.format(instruction=prompt_text(record),
                                                                 output=record["output"])}]


def parse_reply(reply: str, sections: Sequence[str]) -> dict[str, str]:
    """{section: text} from a reply with each of `sections` headed [[NAME]] exactly once, in that order.

    Text before the first header (a chatty preamble) is ignored; headers are matched case-insensitively, also
    mid-line. Raises ReflectionParseError for an empty reply, a missing, repeated, out-of-order, unexpected or
    empty section.
    """
    if not reply or not reply.strip():
        raise ReflectionParseError("empty reply")
    found = [(re.sub(r"\s+", " ", m.group(1).upper()), m) for m in _HEADER.finditer(reply)]
    names = [name for name, _ in found]
    missing = [s for s in sections if s not in names]
    if missing:
        raise ReflectionParseError(f"no [[{missing[0]}]] section (found {names or 'no section headers'})")
    extra = [n for n in names if n not in sections]
    if extra:
        raise ReflectionParseError(f"unexpected [[{extra[0]}]] section")
    repeated = [s for s in sections if names.count(s) > 1]
    if repeated:
        raise ReflectionParseError(f"[[{repeated[0]}]] appears {names.count(repeated[0])} times")
    if names != list(sections):
        raise ReflectionParseError(f"sections out of order: {names}, expected {list(sections)}")
    out = {}
    for i, (name, match) in enumerate(found):
        end = found[i + 1][1].start() if i + 1 < len(found) else len(reply)
        text = reply[match.end():end].strip()
        if not text:
            raise ReflectionParseError(f"[[{name}]] is empty")
        out[name] = text
    return out


def _reflected(record: dict, reply: str | OracleError, mode: str) -> dict[str, Any]:
    """The fields one reflection adds: the new ones, or the originals again and the reason."""
    kept = {"critique": None, "instruction_reflected": record["instruction"], "input_reflected": record["input"],
            "output_reflected": record["output"], "reflection_error": None}
    if isinstance(reply, OracleError):
        return {**kept, "reflection_error": f"oracle failed: {reply}"}
    try:
        parts = parse_reply(reply, INSTRUCTION_SECTIONS if mode == "instruction" else RESPONSE_SECTIONS)
    except ReflectionParseError as e:
        # The raw reply is kept (cut short) so a bad prompt or a weak oracle can be diagnosed from the file.
        return {**kept, "reflection_error": f"unparsable reply: {e}", "raw_reply": reply[:2000]}
    out = {**kept, "critique": parts[CRITIQUE], "output_reflected": parts[NEW_ANSWER]}
    if mode == "instruction":
        # The new instruction is self-contained (the prompt asks for any input inside it), so input is empty.
        out.update(instruction_reflected=parts[NEW_INSTRUCTION], input_reflected="")
    return out


# ----- selective Reflection-Tuning -----
ORIGINAL, REFLECTED_PAIR, REFLECTED_ANSWER = "original", "reflected_pair", "reflected_answer"


def _usable(x: Optional[float]) -> bool:
    return x is not None and math.isfinite(x)


def select_version(*, ifd_original: Optional[float], ifd_reflected_pair: Optional[float],
                   rifd_original: Optional[float], rifd_reflected_answer: Optional[float]) -> tuple[str, str]:
    """Which version of a record the student is trained on: (choice, reason), choice one of
    "reflected_pair" (new instruction + new answer), "reflected_answer" (original instruction + new answer) or
    "original". A None score (no reflection, or the IFD scorer skipped the record) rules that version out.

    The rule, our reading of selective Reflection-Tuning (2402.10110), where the student judges the teacher's work:
      1. Instruction stage, by IFD = loss(answer | instruction) / loss(answer): higher means the instruction helps
         the student less, i.e. the pair is harder for it and it has more to learn. IFD >= 1 means the
         instruction does not help at all (the pair is incoherent for the student), so such a pair never wins.
         The reflected pair is taken when its IFD is < 1 and above the original's (or the original's is unusable).
      2. Response stage, by reversed IFD = loss(instruction | answer) / loss(instruction): lower means the
         answer tells more about its instruction, i.e. it fits the question better for the student. The reflected
         answer is taken when its reversed IFD is below the original's (or the original's is unknown).
      3. Otherwise the original is kept.
    """
    if _usable(ifd_reflected_pair) and ifd_reflected_pair < 1:
        if not (_usable(ifd_original) and ifd_original < 1):
            return REFLECTED_PAIR, f"reflected pair IFD {ifd_reflected_pair:.4g} < 1; the original's is unusable"
        if ifd_reflected_pair > ifd_original:
            return REFLECTED_PAIR, f"reflected pair IFD {ifd_reflected_pair:.4g} > original {ifd_original:.4g}"
    if _usable(rifd_reflected_answer):
        if not _usable(rifd_original):
            return REFLECTED_ANSWER, f"reflected answer r-IFD {rifd_reflected_answer:.4g}; the original's is unknown"
        if rifd_reflected_answer < rifd_original:
            return REFLECTED_ANSWER, (f"reflected answer r-IFD {rifd_reflected_answer:.4g} < original "
                                      f"{rifd_original:.4g}")
    return ORIGINAL, "neither reflection beat the original for the student"


def _ifd_module():
    """flan_mix.curation.ifd, imported only when --selective=true asks for it."""
    try:
        module = importlib.import_module("flan_mix.curation.ifd")
    except ModuleNotFoundError as e:
        if e.name != "flan_mix.curation.ifd":
            raise
        raise ValueError("--selective=true scores records with flan_mix.curation.ifd (score_ifd, "
                         "score_reversed_ifd), which this installation lacks; update flan_mix to a version with "
                         "IFD scoring, or run without --selective.") from None
    missing = [f for f in ("score_ifd", "score_reversed_ifd") if not hasattr(module, f)]
    if missing:
        raise ValueError(f"--selective=true: {module.__file__} lacks {', '.join(missing)}; update flan_mix.")
    return module


def _score(value: dict, key: str) -> Optional[float]:
    if value.get("skipped") or value.get(key) is None:
        return None
    return float(value[key])


def _select(records: list[dict], outputs: list[dict], loaded, lengths, batch_size: int, ifd) -> None:
    """Adds the student's scores and choice (select_version) to each output record, in place."""
    pair_records, answer_records, pair_at, answer_at = [], [], [], []
    for i, (rec, out) in enumerate(zip(records, outputs)):
        if out["reflection_error"] is None:
            pair_at.append(i)
            pair_records.append({**rec, "instruction": out["instruction_reflected"], "input": out["input_reflected"],
                                 "output": out["output_reflected"]})
        if out["response_reflection_error"] is None:
            answer_at.append(i)
            answer_records.append({**rec, "output": out["output_response_reflected"]})
    ifd_scores = ifd.score_ifd(loaded, records + pair_records, lengths=lengths, batch_size=batch_size)
    rifd_scores = ifd.score_reversed_ifd(loaded, records + answer_records, lengths=lengths, batch_size=batch_size)
    n = len(records)
    for i, out in enumerate(outputs):
        out["ifd_original"] = _score(ifd_scores[i], "ifd")
        out["reversed_ifd_original"] = _score(rifd_scores[i], "reversed_ifd")
        out["ifd_reflected_pair"] = out["reversed_ifd_reflected_answer"] = None
    for j, i in enumerate(pair_at):
        outputs[i]["ifd_reflected_pair"] = _score(ifd_scores[n + j], "ifd")
    for j, i in enumerate(answer_at):
        outputs[i]["reversed_ifd_reflected_answer"] = _score(rifd_scores[n + j], "reversed_ifd")
    for rec, out in zip(records, outputs):
        choice, reason = select_version(ifd_original=out["ifd_original"],
                                        ifd_reflected_pair=out["ifd_reflected_pair"],
                                        rifd_original=out["reversed_ifd_original"],
                                        rifd_reflected_answer=out["reversed_ifd_reflected_answer"])
        train = {ORIGINAL: (rec["instruction"], rec["input"], rec["output"]),
                 REFLECTED_PAIR: (out["instruction_reflected"], out["input_reflected"], out["output_reflected"]),
                 REFLECTED_ANSWER: (rec["instruction"], rec["input"], out.get("output_response_reflected"))}[choice]
        out.update(selected=choice, selection_reason=reason, train_instruction=train[0], train_input=train[1],
                   train_output=train[2])


# ----- the command -----
def _flag_bool(name: str, value: Optional[str]) -> bool:
    if value is None or value.lower() in ("false", "0", "no", ""):
        return False
    if value.lower() in ("true", "1", "yes"):
        return True
    raise ValueError(f"--{name}={value}: expected true or false.")


def _student(cache: dict):
    """MODEL_DIR's checkpoint, loaded once (the local oracle and the selective student share it)."""
    if "loaded" not in cache:
        from flan_mix.infer.loading import load_model
        from flan_mix.runtime.run_config import run_config
        run = run_config()
        cache["loaded"], cache["run"] = load_model(run.model_dir), run
    return cache["loaded"], cache["run"]


def make_oracle(oracle: Optional[str], oracle_url: Optional[str], oracle_model: Optional[str], cache: dict) -> Oracle:
    from flan_mix.curation import http_oracle
    if oracle is None:
        oracle = "http" if (oracle_url or os.environ.get(http_oracle.ENV_URL)) else None
    if oracle == "http":
        # Checked here, outside the gin-configurable constructor, so the message is not wrapped in gin's notes.
        return http_oracle.HttpOracle(url=http_oracle.resolve_url(oracle_url), model=oracle_model)
    if oracle == "local":
        if oracle_url or oracle_model:
            raise ValueError("--oracle=local answers with MODEL_DIR's checkpoint: drop --oracle_url/--oracle_model "
                             "(or use --oracle=http).")
        from flan_mix.curation.local_oracle import LocalOracle
        loaded, run = _student(cache)
        return LocalOracle(loaded, name=f"local:{run.model_dir}",
                           max_prompt_tokens=run.task_feature_lengths["inputs"],
                           max_decode_len=run.task_feature_lengths["targets"])
    raise ValueError(f"--oracle={oracle}: choose --oracle=http (with --oracle_url=URL or ${http_oracle.ENV_URL}) or "
                     "--oracle=local (MODEL_DIR's checkpoint answers; for debugging).")


@gin.configurable
def reflect_options(max_tokens: int = 1024, temperature: float = 0.0, seed: int = 0, chunk_size: int = 16,
                    ifd_batch_size: int = 8) -> dict[str, Any]:
    """The reflect stage's gin settings (reflect_options.max_tokens = 512, ...): the oracle's sampling
    (max_tokens, temperature, seed); chunk_size, the records per complete_many call (what is redone after an
    interruption); ifd_batch_size, the student's scoring batch under --selective=true.

    Kept apart from reflect_command so that errors about flags are not wrapped in gin's call notes."""
    return dict(max_tokens=max_tokens, temperature=temperature, seed=seed, chunk_size=chunk_size,
                ifd_batch_size=ifd_batch_size)


def reflect_command(input: Optional[str], output: Optional[str], mode: str = "instruction",
                    oracle: Optional[str] = None, oracle_url: Optional[str] = None,
                    oracle_model: Optional[str] = None, selective: Optional[str] = None,
                    **overrides) -> dict[str, int]:
    """Reflects every record of --input into --output (see the module docstring); returns the counts.
    `overrides` replace reflect_options' settings (for callers in Python)."""
    unknown = set(overrides) - set(reflect_options())
    if unknown:
        raise TypeError(f"reflect_command: unknown settings {sorted(unknown)}; see reflect_options.")
    settings = {**reflect_options(), **overrides}
    max_tokens, temperature, seed = settings["max_tokens"], settings["temperature"], settings["seed"]
    chunk_size, ifd_batch_size = settings["chunk_size"], settings["ifd_batch_size"]
    if not input or not output:
        raise ValueError("curate reflect needs --input=RECORDS.jsonl and --output=REFLECTED.jsonl.")
    if mode not in MODES:
        raise ValueError(f"--mode={mode}: choose one of {', '.join(MODES)}.")
    is_selective = _flag_bool("selective", selective)
    if is_selective and mode != "both":
        raise ValueError("--selective=true chooses between the reflected pair, the reflected answer and the "
                         "original, so it needs both reflections: add --mode=both.")
    if chunk_size < 1:
        raise ValueError(f"reflect_options.chunk_size={chunk_size}: must be >= 1.")
    if os.path.abspath(input) == os.path.abspath(output):
        raise ValueError(f"--output={output} is the input file; write the reflections to a new file.")
    ifd = _ifd_module() if is_selective else None  # fail before any oracle call when IFD is missing
    records = read_records(input)
    cache: dict = {}
    the_oracle = make_oracle(oracle, oracle_url, oracle_model, cache)
    counts = {"records": len(records), "written": 0, "reflected": 0, "unparsable": 0, "oracle_failed": 0}
    with AppendOnlyWriter(output) as writer:
        todo = writer.pending(records)
        print(f"reflect ({mode}{', selective' if is_selective else ''}): {len(records)} records in {input}, "
              f"{len(records) - len(todo)} already in {output}, {len(todo)} to go; oracle {the_oracle.name}",
              flush=True)
        kinds = ["instruction", "response"] if mode == "both" else [mode]
        with tqdm(total=len(records), initial=len(records) - len(todo), desc="reflect", unit="record") as bar:
            for start in range(0, len(todo), chunk_size):
                chunk = todo[start:start + chunk_size]
                conversations = [instruction_messages(r) if kind == "instruction" else response_messages(r)
                                 for r in chunk for kind in kinds]
                replies = the_oracle.complete_many(conversations, max_tokens=max_tokens, temperature=temperature,
                                                   seed=seed)
                outputs = []
                for i, rec in enumerate(chunk):
                    first = _reflected(rec, replies[i * len(kinds)], kinds[0])
                    out = {**rec, **first, "reflection_mode": mode, "oracle": the_oracle.name}
                    if mode == "both":
                        second = _reflected(rec, replies[i * 2 + 1], "response")
                        out.update(response_critique=second["critique"],
                                   output_response_reflected=second["output_reflected"],
                                   response_reflection_error=second["reflection_error"])
                        if "raw_reply" in second:
                            out["response_raw_reply"] = second["raw_reply"]
                    outputs.append(out)
                if is_selective:
                    loaded, run = _student(cache)
                    _select(chunk, outputs, loaded, run.task_feature_lengths, ifd_batch_size, ifd)
                for out in outputs:
                    writer.write(out)
                    counts["written"] += 1
                    errors = [out["reflection_error"], out.get("response_reflection_error")]
                    counts["oracle_failed"] += any(e and e.startswith("oracle failed") for e in errors)
                    counts["unparsable"] += any(e and e.startswith("unparsable") for e in errors)
                    counts["reflected"] += not any(errors)
                    if is_selective:
                        counts[f"selected {out['selected']}"] = counts.get(f"selected {out['selected']}", 0) + 1
                bar.update(len(chunk))
    summary = ", ".join(f"{k} {v}" for k, v in counts.items())
    print(f"reflect: wrote {output}: {summary}", flush=True)
    stats = getattr(the_oracle, "stats", None)
    if stats:
        print("oracle: " + ", ".join(f"{k} {v}" for k, v in sorted(stats.items())), flush=True)
    return counts
