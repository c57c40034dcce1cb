"""`python run.py eval --benchmarks=bbh,mmlu`: BBH and MMLU the way the Flan papers run them.

BBH: 3-shot prompts (direct or CoT) from the authors' prompt files, greedy generation, the answer
extracted by flan_mix.evaluation.answers, exact match, the unweighted mean over the 27 tasks.
MMLU: 5-shot prompts from dev with the original header, exemplars dropped until the prompt fits
the input length (the count is logged); scored by the first option letter generated, or by rank
classification (the letter with the highest log-likelihood, through Model.score).

Predictions go to MODEL_DIR/benchmarks/<run>.predictions.jsonl, appended one task at a time; a
rerun skips the (task, index) pairs already there, so an interrupted run loses nothing.
Both benchmarks' scores are also rescaled against random guessing and averaged (the Flan paper's
normalized average): 100 * (accuracy - random) / (100 - random).
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Sequence

import gin
import numpy as np
from tqdm.auto import tqdm

from flan_mix.data.data_errors import MalformedDataError
from flan_mix.evaluation import answers, bbh, mmlu, report
from flan_mix.infer import scoring
from flan_mix.infer.decoding import generate
from flan_mix.infer.loading import LoadedModel, load_model
from flan_mix.infer import self_consistency as consistency
from flan_mix.resources import resource_root
from flan_mix.runtime.run_config import run_config

log = logging.getLogger(__name__)
BENCHMARKS = ("bbh", "mmlu")
MMLU_SCORINGS = ("generate", "rank")


def default_data_dir(name: str) -> str:
    """The development copy beside the checkout (../shared/data/<name>); pass --bbh_dir/--mmlu_dir otherwise."""
    return str(resource_root().parent / "shared" / "data" / name)


class PredictionLog:
    """Append-only JSONL of predictions, keyed by (task, index), read back on a rerun."""

    def __init__(self, path: str):
        self.path = path
        self.done: dict[tuple[str, int], dict] = {}
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                for lineno, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    try:
                        rec = json.loads(line)
                        self.done[(rec["task"], int(rec["index"]))] = rec
                    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                        raise MalformedDataError(path, str(lineno), f"not a prediction record ({e}); move the "
                                                 "file away to start over") from e

    def append(self, records: Sequence[dict]) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            for rec in records:
                f.write(json.dumps(rec) + "\n")
                self.done[(rec["task"], int(rec["index"]))] = rec


def _encode_prompt(vocabulary, prompt: str, length: int) -> tuple[np.ndarray, bool]:
    """Prompt ids + EOS within `length`; a longer prompt keeps its end (the question) and says so."""
    ids = vocabulary.encode(prompt)
    cut = len(ids) + 1 > length
    if cut:
        ids = ids[len(ids) + 1 - length:]
    return np.asarray(ids + [vocabulary.eos_id], np.int32), cut


def _bbh_run_name(mode: str, self_consistency: int) -> str:
    return f"bbh_{mode}" + (f"_sc{self_consistency}" if self_consistency > 1 else "")


def _vote(loaded: LoadedModel, prompts, *, k: int, temperature: float, seed: int, **generate_kwargs) -> list[dict]:
    """Self-consistency: k sampled chains of thought per prompt, majority vote over their answers
    (an empty extraction abstains). The record keeps every sample and answer for inspection."""
    sample = consistency.sampling_generate_fn(loaded.model, loaded.params, loaded.vocabulary,
                                              temperature=temperature, **generate_kwargs)
    voted = consistency.self_consistency(sample, prompts, k, lambda g: answers.extract_cot_answer(g) or None,
                                         seed=seed)
    return [{"generation": v["samples"][0], "prediction": v["answer"] or "", "votes": v["votes"],
             "samples": v["samples"], "answers": v["answers"]} for v in voted]


def run_bbh(loaded: LoadedModel, *, bbh_dir: str, mode: str, lengths, batch_size: int,
            max_examples: int | None, max_decode_len: int, out_dir: str, self_consistency: int = 1,
            temperature: float = 0.7, seed: int = 0) -> list[dict[str, Any]]:
    if mode not in answers.MODES:
        raise ValueError(f"--mode={mode!r}: choose one of {answers.MODES}.")
    if self_consistency < 1 or (self_consistency > 1 and mode != "cot"):
        raise ValueError(f"--self_consistency={self_consistency}: it needs --mode=cot and k >= 1 (k sampled "
                         "reasoning paths voted on their final answers; 1 = greedy).")
    preds = PredictionLog(os.path.join(out_dir, "benchmarks",
                                       f"{_bbh_run_name(mode, self_consistency)}.predictions.jsonl"))
    truncated = 0
    for task in tqdm(bbh.BBH_TASKS, desc=f"bbh ({mode})", unit="task"):
        examples = bbh.load_task(bbh_dir, task)[:max_examples]
        prompt_text = bbh.load_task_prompt(bbh_dir, task)
        todo = [i for i in range(len(examples)) if (task, i) not in preds.done]
        if not todo:
            continue
        encoded = [_encode_prompt(loaded.vocabulary, bbh.build_prompt(prompt_text, examples[i].input, mode),
                                  lengths["inputs"]) for i in todo]
        truncated += sum(cut for _, cut in encoded)
        prompts = [ids for ids, _ in encoded]
        kwargs = dict(mesh=loaded.mesh, inputs_length=lengths["inputs"], max_decode_len=max_decode_len,
                      batch_size=batch_size, desc=task)
        if self_consistency > 1:
            results = _vote(loaded, prompts, k=self_consistency, temperature=temperature, seed=seed, **kwargs)
        else:
            results = [{"generation": out, "prediction": answers.extract_answer(out, mode)}
                       for out in generate(loaded.model, loaded.params, prompts, loaded.vocabulary, **kwargs)]
        preds.append([{"task": task, "index": i, **result, "target": examples[i].target}
                      for i, result in zip(todo, results)])
    if truncated:
        log.warning("bbh: %d prompts were longer than %d tokens and kept only their last tokens; raise "
                    "TASK_FEATURE_LENGTHS['inputs'] for the full 3-shot prompts.", truncated, lengths["inputs"])
    baselines = {t: bbh.random_baseline(t, bbh.load_task(bbh_dir, t)) for t in bbh.BBH_TASKS}
    records = [r for r in preds.done.values() if r["index"] < (max_examples or 10**9)]
    return bbh.score_predictions(records, baselines=baselines)


def run_mmlu(loaded: LoadedModel, *, mmlu_dir: str, split: str, scoring_method: str, lengths, batch_size: int,
             max_examples: int | None, out_dir: str) -> list[dict[str, Any]]:
    if scoring_method not in MMLU_SCORINGS:
        raise ValueError(f"--mmlu_scoring={scoring_method!r}: choose one of {MMLU_SCORINGS}.")
    vocabulary = loaded.vocabulary
    questions = mmlu.load_split(mmlu_dir, split)
    dev = mmlu.load_split(mmlu_dir, "dev")
    preds = PredictionLog(os.path.join(out_dir, "benchmarks", f"mmlu_{split}_{scoring_method}.predictions.jsonl"))
    letters = [np.asarray(vocabulary.encode(t) + [vocabulary.eos_id], np.int32) for t in mmlu.option_targets()]
    drops, truncated = [], 0
    for subject in tqdm(mmlu.SUBJECTS, desc=f"mmlu ({split}, {scoring_method})", unit="subject"):
        items = questions[subject][:max_examples]
        todo = [i for i in range(len(items)) if (f"mmlu_{subject}", i) not in preds.done]
        if not todo:
            continue
        prompts = []
        for i in todo:
            # Prompt ids + EOS must fit: the budget for the text is one token less.
            try:
                prompt, dropped = mmlu.fit_prompt(subject, dev[subject], items[i], lengths["inputs"] - 1,
                                                  lambda p: len(vocabulary.encode(p)))
            except mmlu.PromptTooLongError:  # even zero-shot is too long: keep its end (the question)
                prompt, dropped = mmlu.build_prompt(subject, dev[subject], items[i], 0), 5
                truncated += 1
            drops.append((subject, dropped))
            prompts.append(_encode_prompt(vocabulary, prompt, lengths["inputs"])[0])
        kwargs = dict(mesh=loaded.mesh, inputs_length=lengths["inputs"], batch_size=batch_size, desc=subject)
        if scoring_method == "rank":
            ranked = scoring.rank_options(loaded.model, loaded.params, prompts, [letters] * len(prompts),
                                          targets_length=max(len(ids) for ids in letters), **kwargs)
            outputs = [mmlu.LETTERS[r["choice"]] for r in ranked]
            choices = outputs
        else:
            outputs = generate(loaded.model, loaded.params, prompts, vocabulary, max_decode_len=8, **kwargs)
            choices = [mmlu.extract_choice(o) for o in outputs]
        preds.append([{"task": f"mmlu_{subject}", "subject": subject, "index": i, "generation": out,
                       "prediction": choice, "target": items[i].answer}
                      for i, out, choice in zip(todo, outputs, choices)])
    if drops:
        print(f"mmlu: {mmlu.summarize_drops(drops)['message']}")
    if truncated:
        log.warning("mmlu: %d zero-shot prompts were longer than %d tokens and kept only their last tokens.",
                    truncated, lengths["inputs"])
    return mmlu.score({"subject": r["subject"], "target": r["target"], "prediction": r["prediction"]}
                      for r in preds.done.values() if r["index"] < (max_examples or 10**9))


def normalized(accuracy: float, random: float) -> float:
    return 100.0 * (accuracy - random) / (100.0 - random)


@gin.configurable
def evaluate_benchmarks(loaded: LoadedModel, benchmarks: Sequence[str], *, out_dir: str, lengths,
                        bbh_dir: str | None = None, mmlu_dir: str | None = None, mode: str = "direct",
                        mmlu_scoring: str = "rank", split: str = "val", max_examples: int | None = None,
                        batch_size: int = 32, max_decode_len: int | None = None, self_consistency: int = 1,
                        temperature: float = 0.7, seed: int = 0) -> dict[str, Any]:
    """Runs the benchmarks, prints and writes MODEL_DIR/eval_<benchmark>.{json,md}; returns the tables.

    Flan reports MMLU's validation split ("val"); "test" is the usual one elsewhere. max_decode_len
    (BBH generations) defaults to TASK_FEATURE_LENGTHS['targets']. self_consistency=k > 1 (BBH CoT
    only) samples k chains of thought per question at `temperature` (seeds seed..seed+k-1) and votes.
    """
    unknown = sorted(set(benchmarks) - set(BENCHMARKS))
    if unknown:
        raise ValueError(f"--benchmarks: unknown {unknown}; choose from {BENCHMARKS}.")
    tables, summary = {}, []
    if "bbh" in benchmarks:
        rows = run_bbh(loaded, bbh_dir=bbh_dir or default_data_dir("bbh"), mode=mode, lengths=lengths,
                       batch_size=batch_size, max_examples=max_examples,
                       max_decode_len=max_decode_len or lengths["targets"], out_dir=out_dir,
                       self_consistency=self_consistency, temperature=temperature, seed=seed)
        label = mode + (f", self-consistency k={self_consistency} at T={temperature}" if self_consistency > 1 else "")
        print(report.write_report(rows, ("task", "n", "correct", "accuracy", "random", "normalized"), out_dir,
                                  f"eval_{_bbh_run_name(mode, self_consistency)}",
                                  title=f"BBH, 3-shot {label}: exact match (%)"))
        tables["bbh"] = rows
        mean = rows[-1]
        summary.append({"benchmark": f"bbh ({label})", "accuracy": mean["accuracy"], "random": mean["random"],
                        "normalized": mean["normalized"]})
    if "mmlu" in benchmarks:
        rows = run_mmlu(loaded, mmlu_dir=mmlu_dir or default_data_dir("mmlu"), split=split,
                        scoring_method=mmlu_scoring, lengths=lengths, batch_size=batch_size,
                        max_examples=max_examples, out_dir=out_dir)
        print(report.write_report(rows, mmlu.SCORE_COLUMNS, out_dir, f"eval_mmlu_{split}_{mmlu_scoring}",
                                  title=f"MMLU {split}, 5-shot, scored by {mmlu_scoring}: accuracy (%)"))
        tables["mmlu"] = rows
        overall = rows[-1]
        summary.append({"benchmark": f"mmlu ({split}, {mmlu_scoring})", "accuracy": overall["accuracy_examples"],
                        "random": mmlu.RANDOM_BASELINE,
                        "normalized": normalized(overall["accuracy_examples"], mmlu.RANDOM_BASELINE)})
    if summary:
        summary.append({"benchmark": "normalized average", "normalized": float(np.mean([s["normalized"]
                                                                                       for s in summary]))})
        print(report.write_report(summary, ("benchmark", "accuracy", "random", "normalized"), out_dir,
                                  "eval_benchmarks", title="Benchmarks against random guessing"))
    tables["summary"] = summary
    return tables


@gin.configurable
def run_benchmarks(benchmarks: Sequence[str], checkpoint_step: int | None = None, **options) -> dict[str, Any]:
    """`run.py eval --benchmarks=...`: MODEL_DIR's checkpoint (latest unless checkpoint_step), or a
    model imported with `run.py convert`, through evaluate_benchmarks."""
    run = run_config()
    loaded = load_model(run.model_dir, checkpoint_step)
    return evaluate_benchmarks(loaded, benchmarks, out_dir=run.model_dir, lengths=run.task_feature_lengths,
                               **options)


def write_prompts(benchmark: str, task: str, output: str, *, mode: str = "direct", split: str = "test",
                  bbh_dir: str | None = None, mmlu_dir: str | None = None) -> int:
    """`eval prompts`: the exact k-shot prompts of one BBH task or MMLU subject, one JSON line each
    ({task, index, input, target}); no length-based dropping (that depends on a model)."""
    if benchmark == "bbh":
        return bbh.write_prompts(task, mode, output, bbh_dir or default_data_dir("bbh"))
    if benchmark == "mmlu":
        return mmlu.write_prompts(task, split, output, mmlu_dir or default_data_dir("mmlu"))
    raise ValueError(f"--benchmark={benchmark!r}: choose one of {BENCHMARKS}.")


def _read_mmlu_predictions(path: str) -> list[dict]:
    """{task (mmlu_<subject> or <subject>), prediction (a generation: its letter is extracted), target}."""
    records = []
    for lineno, rec in answers.read_prediction_lines(path):
        subject = rec["task"].removeprefix("mmlu_")
        if subject not in mmlu.CATEGORIES:
            raise MalformedDataError(path, str(lineno), f"unknown MMLU subject {rec['task']!r}")
        if rec["target"] not in mmlu.LETTERS:
            raise MalformedDataError(path, str(lineno), f"target {rec['target']!r} is not a letter A-D")
        records.append({"subject": subject, "target": rec["target"],
                        "prediction": mmlu.extract_choice(rec["prediction"])})
    return records


def score_file(benchmark: str, predictions: str, *, mode: str | None = None, out_dir: str | None = None):
    """`eval score`: accuracy per task and the mean, of predictions made by any model.

    BBH: a JSONL of {task, prediction, target} or the BBH repository's output files (one file or a
    directory); `mode` (cot|direct) extracts answers from raw generations first. MMLU: a JSONL of
    {task: mmlu_<subject>, prediction, target}.
    """
    if benchmark == "bbh":
        records = (bbh.read_predictions_jsonl(predictions) if predictions.endswith(".jsonl")
                   else bbh.read_bbh_outputs(predictions))
        rows = bbh.score_predictions(records, mode=mode)
        columns = ("task", "n", "correct", "accuracy")
    elif benchmark == "mmlu":
        rows = mmlu.score(_read_mmlu_predictions(predictions))
        columns = mmlu.SCORE_COLUMNS
    else:
        raise ValueError(f"--benchmark={benchmark!r}: choose one of {BENCHMARKS}.")
    title = f"{benchmark} predictions in {predictions}: accuracy (%)"
    if out_dir:
        print(report.write_report(rows, columns, out_dir, f"score_{benchmark}", title=title))
    else:
        print(report.text_table(rows, columns))
    return rows
