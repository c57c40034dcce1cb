"""`python run.py curate ifd`: Instruction-Following Difficulty (Cherry LLM, Li et al. 2023, arXiv 2308.12032).

With a student model (MODEL_DIR's checkpoint and its gin files; T5 or decoder-only, through Model.score):
  loss_conditioned  mean token loss (cross entropy, EOS included) of the output given the prompt
                    (records.prompt_text: instruction, blank line, input)
  loss_direct       mean token loss of the output given an empty prompt
  ifd               loss_conditioned / loss_direct: near 1, the instruction barely helps the model produce
                    the answer (a hard, informative sample); IFD > 1, the instruction makes the answer less
                    likely: the pair is likely misaligned, so such samples stay in the scored file but are never
                    selected.
Reversed IFD (for Reflection-Tuning's selective rule): the same with roles swapped: the prompt text scored given
the output, over the prompt text alone (score_reversed_ifd).

How token ids are laid out, for both families: a prompt is its token ids + EOS, as the data pipeline feeds
training inputs (an empty prompt is EOS alone); the scored text is its ids + EOS. A prompt longer than
TASK_FEATURE_LENGTHS['inputs'] is cut (EOS kept; counted in the log). A scored text that does not fit
TASK_FEATURE_LENGTHS['targets'], or that is empty, is not scored: its record gets `skipped` with the reason.

Selection: the top --select_fraction (default 0.1) of the scored records, or the top --select_top, by IFD,
highest first, among those with IFD <= 1, written to --selected_output (rewritten from the scored file on every
run). Skipped records neither count nor get selected.

Pre-experience (--pre_experience=true; gin ifd_pre_experience.*): embed every instruction with the model (mean of
its last hidden states), K-means them (num_clusters=100, fewer when there are fewer records), take per_cluster
(10) records per cluster from the 25th-75th percentile band of their perplexity (exp loss_conditioned), train the
model briefly on them (train_steps, from MODEL_DIR's checkpoint into MODEL_DIR/pre_experience), then score the
full set with that model. A rerun reuses a finished MODEL_DIR/pre_experience.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
from typing import Iterable, Mapping, Sequence

import gin
import jax
import numpy as np
from tqdm.auto import tqdm

from flan_mix.curation.records import AppendOnlyWriter, prompt_text, read_records
from flan_mix.infer.loading import LoadedModel
from flan_mix.infer.scoring import score_pairs
from flan_mix.runtime import partitioning

logger = logging.getLogger(__name__)

DEFAULT_FRACTION = 0.1
PRE_EXPERIENCE_SUBDIR = "pre_experience"
PRE_EXPERIENCE_TASK = "ifd_pre_experience"
_CHUNK_BATCHES = 4  # batches scored between writes: a crash loses at most this much work


# ------------------------------------------------------------------------------------------------------------
# Scoring.

def _ids(vocabulary, text: str) -> list[int]:
    return [int(i) for i in vocabulary.encode(text)] if text else []


def _fit_prompt(ids: list[int], eos: int, length: int) -> tuple[np.ndarray, bool]:
    """ids + EOS, cut to `length` with EOS kept last (seqio's append_eos_after_trim); (array, was it cut)."""
    cut = len(ids) + 1 > length
    return np.asarray(ids[:length - 1] + [eos], np.int32), cut


def _unscorable(record: dict) -> str | None:
    for field in ("error", "skipped"):
        if record.get(field):
            return f"not scored: the input record carries '{field}' ({record[field]})"
    return None


def _pair_losses(loaded: LoadedModel, prompts: Sequence[str], texts: Sequence[str], *,
                 lengths: Mapping[str, int], batch_size: int, desc: str,
                 text_name: str) -> list[dict]:
    """For each (prompt, text): {"conditioned", "direct"} mean token losses of the text, or {"skipped"}."""
    vocab, eos = loaded.vocabulary, int(loaded.vocabulary.eos_id)
    out: list[dict] = [{} for _ in texts]
    inputs, targets, rows = [], [], []
    cut = 0
    for i, (prompt, text) in enumerate(zip(prompts, texts, strict=True)):
        if not text.strip():
            out[i] = {"skipped": f"empty {text_name}"}
            continue
        target = _ids(vocab, text) + [eos]
        if len(target) > lengths["targets"]:
            out[i] = {"skipped": f"{text_name} truncated: {len(target)} tokens with EOS > "
                                 f"TASK_FEATURE_LENGTHS['targets']={lengths['targets']}"}
            continue
        prompt_ids, was_cut = _fit_prompt(_ids(vocab, prompt), eos, lengths["inputs"])
        cut += was_cut
        inputs.append(prompt_ids)
        targets.append(np.asarray(target, np.int32))
        rows.append(i)
    if cut:
        logger.info("%s: %d prompt(s) cut to TASK_FEATURE_LENGTHS['inputs']=%d tokens.", desc, cut, lengths["inputs"])
    if rows:
        empty = np.asarray([eos], np.int32)
        # One call for both passes, so they share one compiled program and full batches.
        scores = score_pairs(loaded.model, loaded.params, inputs + [empty] * len(rows), targets + targets,
                             mesh=loaded.mesh, inputs_length=lengths["inputs"], targets_length=lengths["targets"],
                             batch_size=batch_size, desc=desc)
        losses = -scores["mean_logprob"].astype(np.float64)
        for k, i in enumerate(rows):
            out[i] = {"conditioned": float(losses[k]), "direct": float(losses[len(rows) + k])}
    return out


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.inf


def score_ifd(loaded: LoadedModel, records: Sequence[dict], *, lengths: Mapping[str, int],
              batch_size: int) -> list[dict]:
    """Per record: {loss_conditioned, loss_direct, ifd} or {skipped: reason} (empty or truncated output)."""
    return _loss_ratios(loaded, records, reverse=False, lengths=lengths, batch_size=batch_size)


def score_reversed_ifd(loaded: LoadedModel, records: Sequence[dict], *, lengths: Mapping[str, int],
                       batch_size: int) -> list[dict]:
    """Per record: {loss_instruction_given_output, loss_instruction, reversed_ifd} or {skipped: reason}.

    "The instruction" is the whole prompt text (instruction and input); it is scored as the target, the output
    as the prompt, so it must fit TASK_FEATURE_LENGTHS['targets'].
    """
    return _loss_ratios(loaded, records, reverse=True, lengths=lengths, batch_size=batch_size)


_RATIO_FIELDS = {False: ("loss_conditioned", "loss_direct", "ifd"),
                 True: ("loss_instruction_given_output", "loss_instruction", "reversed_ifd")}


def _loss_ratios(loaded: LoadedModel, records: Sequence[dict], *, reverse: bool, lengths: Mapping[str, int],
                 batch_size: int) -> list[dict]:
    """The output scored given the prompt and alone (IFD), or reversed: the prompt given the output and alone."""
    results: list[dict] = [{} for _ in records]
    todo = []
    for i, rec in enumerate(records):
        reason = _unscorable(rec)
        if reason:
            results[i] = {"skipped": reason}
        else:
            todo.append(i)
    prompts = [prompt_text(records[i]) for i in todo]
    outputs = [records[i]["output"] for i in todo]
    given, scored = (outputs, prompts) if reverse else (prompts, outputs)
    losses = _pair_losses(loaded, given, scored, lengths=lengths, batch_size=batch_size,
                          desc="reversed ifd" if reverse else "ifd", text_name="instruction" if reverse else "output")
    for i, got in zip(todo, losses):
        values = (got.get("conditioned"), got.get("direct"))
        results[i] = got if "skipped" in got else dict(zip(_RATIO_FIELDS[reverse], (*values, _ratio(*values))))
    return results


# ------------------------------------------------------------------------------------------------------------
# Selection.

def select(scored: Iterable[dict], *, fraction: float | None = None, top: int | None = None) -> list[dict]:
    """The highest-IFD records among those with IFD <= 1: the top `top`, or the top ceil(fraction x the number
    of scored records). Ties keep file order."""
    if (fraction is None) == (top is None):
        raise ValueError("select needs exactly one of fraction or top.")
    scored = [r for r in scored if not r.get("skipped") and isinstance(r.get("ifd"), (int, float))]
    count = top if top is not None else math.ceil(fraction * len(scored))
    eligible = [r for r in scored if r["ifd"] <= 1.0]
    return sorted(eligible, key=lambda r: -r["ifd"])[:count]  # sorted() is stable


# ------------------------------------------------------------------------------------------------------------
# Pre-experience.

@gin.configurable
@dataclasses.dataclass(frozen=True)
class ifd_pre_experience:  # noqa: N801 (a gin name, bound as ifd_pre_experience.num_clusters = ...)
    """Settings of IFD's pre-experience stage (the paper: 100 clusters, 10 samples each, 1 epoch)."""
    num_clusters: int = 100
    per_cluster: int = 10
    low_percentile: float = 25.0
    high_percentile: float = 75.0
    train_steps: int = 30
    seed: int = 0

    def __post_init__(self):
        if self.num_clusters < 1 or self.per_cluster < 1 or self.train_steps < 1:
            raise ValueError("ifd_pre_experience: num_clusters, per_cluster and train_steps must be >= 1; got "
                             f"{self.num_clusters}, {self.per_cluster}, {self.train_steps}.")
        if not 0 <= self.low_percentile <= self.high_percentile <= 100:
            raise ValueError("ifd_pre_experience: need 0 <= low_percentile <= high_percentile <= 100; got "
                             f"{self.low_percentile}, {self.high_percentile}.")


@functools.partial(jax.jit, static_argnames=("model",))
def _mean_hidden(model, params, batch):
    return model.mean_hidden_states(params, batch)


def instruction_embeddings(loaded: LoadedModel, texts: Sequence[str], *, inputs_length: int,
                           batch_size: int) -> np.ndarray:
    """float32 [N, emb]: Model.mean_hidden_states of each text's ids + EOS (cut to inputs_length)."""
    eos = int(loaded.vocabulary.eos_id)
    parts = []
    for start in tqdm(range(0, len(texts), batch_size), desc="embed", unit="batch", leave=False):
        chunk = texts[start:start + batch_size]
        rows = np.zeros((batch_size, inputs_length), np.int32)  # padded to batch_size: one compiled program
        for r, text in enumerate(chunk):
            ids = _fit_prompt(_ids(loaded.vocabulary, text), eos, inputs_length)[0]
            rows[r, :len(ids)] = ids
        with loaded.mesh:
            batch = jax.device_put({"inputs": rows}, partitioning.replicated(loaded.mesh))
            parts.append(np.asarray(jax.device_get(_mean_hidden(loaded.model, loaded.params, batch)))[:len(chunk)])
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def pick_pre_experience(embeddings: np.ndarray, perplexities: np.ndarray, settings: ifd_pre_experience) -> list[int]:
    """Indices (sorted) of the items to train on: K-means the embeddings, then in each cluster up to per_cluster
    items, drawn with the seed, from those whose perplexity lies in the cluster's percentile band. A band with
    fewer items than that (a small cluster: with 2 members, neither lies inside 25-75) is topped up with the
    cluster's other members nearest its median perplexity, so a cluster is never left out."""
    try:
        from sklearn.cluster import KMeans  # scikit-learn is needed by this stage only
    except ImportError:
        raise ValueError("--pre_experience needs scikit-learn (K-means): pip install 'flan_mix[curation]' "
                         "or pip install scikit-learn.") from None
    k = min(settings.num_clusters, len(embeddings))
    labels = KMeans(n_clusters=k, random_state=settings.seed, n_init=10).fit_predict(embeddings.astype(np.float64))
    rng = np.random.default_rng(settings.seed)
    chosen = []
    for c in range(k):
        members = np.flatnonzero(labels == c)
        lo, hi = np.percentile(perplexities[members], [settings.low_percentile, settings.high_percentile])
        band = members[(perplexities[members] >= lo) & (perplexities[members] <= hi)]
        take = min(settings.per_cluster, len(band))
        chosen += rng.choice(band, size=take, replace=False).tolist()
        if take < settings.per_cluster:
            rest = np.setdiff1d(members, band)
            median = np.median(perplexities[members])
            rest = rest[np.argsort(np.abs(perplexities[rest] - median), kind="stable")]
            chosen += rest[:settings.per_cluster - take].tolist()
    return sorted(int(i) for i in chosen)


@contextlib.contextmanager
def _bindings(values: Mapping[str, object]):
    """gin bindings for the length of a block, the previous ones put back afterwards."""
    previous = {}
    for name, value in values.items():
        try:
            previous[name] = gin.query_parameter(name)
        except ValueError:
            pass
    try:
        with gin.unlock_config():
            for name, value in values.items():
                gin.bind_parameter(name, value)
        yield
    finally:
        with gin.unlock_config():
            for name, value in previous.items():
                gin.bind_parameter(name, value)


def _finished(model_dir: str, steps: int) -> bool:
    return os.path.isdir(os.path.join(model_dir, "checkpoints", str(steps)))


def pre_experienced_model(loaded: LoadedModel, records: Sequence[dict], *, model_dir: str,
                          lengths: Mapping[str, int], batch_size: int,
                          settings: ifd_pre_experience | None = None) -> LoadedModel:
    """MODEL_DIR/pre_experience's model: trained briefly on a cluster-balanced sample of `records` (above)."""
    from flan_mix.data.jsonl_task import register_jsonl_task
    from flan_mix.infer.loading import load_model
    from flan_mix.train import loop
    settings = settings or ifd_pre_experience()
    out_dir = os.path.join(model_dir, PRE_EXPERIENCE_SUBDIR)
    if _finished(out_dir, settings.train_steps):
        print(f"pre-experience: reusing {out_dir} (trained to step {settings.train_steps})")
        return load_model(out_dir, vocabulary=loaded.vocabulary)
    base = score_ifd(loaded, records, lengths=lengths, batch_size=batch_size)
    scored = [i for i, r in enumerate(base) if "loss_conditioned" in r]
    if not scored:
        raise ValueError("--pre_experience: no record could be scored (all empty or truncated); nothing to "
                         "train on.")
    perplexity = np.exp(np.array([base[i]["loss_conditioned"] for i in scored]))
    embeddings = instruction_embeddings(loaded, [prompt_text(records[i]) for i in scored],
                                        inputs_length=lengths["inputs"], batch_size=batch_size)
    picked = [scored[j] for j in pick_pre_experience(embeddings, perplexity, settings)]
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "pre_experience.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for i in picked:
            f.write(json.dumps(records[i], ensure_ascii=False) + "\n")
    print(f"pre-experience: {len(picked)} records from {min(settings.num_clusters, len(scored))} clusters -> "
          f"{path}; training {settings.train_steps} steps into {out_dir}")
    register_jsonl_task(PRE_EXPERIENCE_TASK, path, loaded.vocabulary)
    with _bindings({"run_config.model_dir": out_dir, "run_config.mixture_or_task_name": PRE_EXPERIENCE_TASK,
                    "run_config.train_steps": settings.train_steps, "train.initial_checkpoint_path": model_dir}):
        loop.train()
    return load_model(out_dir, vocabulary=loaded.vocabulary)


# ------------------------------------------------------------------------------------------------------------
# The command.

def _flag_number(name: str, value: str | None, kind: type, low: float, high: float | None = None):
    if value is None:
        return None
    try:
        number = kind(value)
    except ValueError:
        raise ValueError(f"--{name}={value}: expected {'an integer' if kind is int else 'a number'}.") from None
    if number < low or (high is not None and number > high) or (kind is float and number == 0):
        raise ValueError(f"--{name}={value}: must be in {'(0, 1]' if high else f'[{low}, ...)'}.")
    return number


def _flag_bool(name: str, value: str | None) -> bool:
    if value is None:
        return False
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise ValueError(f"--{name}={value}: expected true or false.")


def score_file(loaded: LoadedModel, records: Sequence[dict], output: str, *, lengths: Mapping[str, int],
               batch_size: int) -> int:
    """Appends each record not yet in `output` with its IFD fields (or `skipped`), a few batches at a time, so
    an interrupted run resumes after the last line written. Returns how many records were scored now."""
    with AppendOnlyWriter(output) as writer:
        pending = writer.pending(records)
        bar = tqdm(total=len(records), initial=len(records) - len(pending), desc="ifd", unit="rec",
                   dynamic_ncols=True)
        step = batch_size * _CHUNK_BATCHES
        for start in range(0, len(pending), step):
            chunk = pending[start:start + step]
            for rec, result in zip(chunk, score_ifd(loaded, chunk, lengths=lengths, batch_size=batch_size)):
                writer.write({**rec, **result})
            bar.update(len(chunk))
        bar.close()
    return len(pending)


def write_selection(scored_path: str, selected_path: str, *, fraction: float | None, top: int | None) -> list[dict]:
    scored = read_records(scored_path)
    chosen = select(scored, fraction=fraction, top=top)
    tmp = selected_path + ".tmp"
    os.makedirs(os.path.dirname(os.path.abspath(selected_path)), exist_ok=True)
    with open(tmp, "w", encoding="utf-8") as f:
        for rec in chosen:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    os.replace(tmp, selected_path)  # the selection is derived: rewrite it whole, never half
    return chosen


def ifd_command(input: str | None, output: str | None, batch_size: str = "16", select_fraction: str | None = None,
                select_top: str | None = None, selected_output: str | None = None,
                pre_experience: str | None = None) -> dict:
    from flan_mix.infer.loading import load_model
    from flan_mix.runtime.run_config import run_config
    if not input or not output:
        raise ValueError("curate ifd needs --input=RECORDS.jsonl (from `curate export`) and --output=SCORED.jsonl; "
                         "the model is MODEL_DIR's (--gin.MODEL_DIR and the gin files it was trained with).")
    bs = _flag_number("batch_size", batch_size, int, 1)
    fraction = _flag_number("select_fraction", select_fraction, float, 0.0, 1.0)
    top = _flag_number("select_top", select_top, int, 1)
    if fraction is not None and top is not None:
        raise ValueError("--select_fraction and --select_top: give one of them.")
    if (fraction is not None or top is not None) and not selected_output:
        raise ValueError("--select_fraction/--select_top need --selected_output=FILE.jsonl.")
    if selected_output and top is None and fraction is None:
        fraction = DEFAULT_FRACTION
    use_pre_experience = _flag_bool("pre_experience", pre_experience)
    records = read_records(input)
    run = run_config()
    lengths = run.task_feature_lengths
    loaded = load_model(run.model_dir)
    if use_pre_experience:
        loaded = pre_experienced_model(loaded, records, model_dir=run.model_dir, lengths=lengths, batch_size=bs)
    scored_now = score_file(loaded, records, output, lengths=lengths, batch_size=bs)
    scored = read_records(output)
    summary = {"records": len(scored), "scored_now": scored_now,
               "skipped": sum(1 for r in scored if r.get("skipped")),
               "ifd_above_1": sum(1 for r in scored if not r.get("skipped") and r.get("ifd", 0) > 1)}
    ifds = np.array([r["ifd"] for r in scored if not r.get("skipped") and "ifd" in r], np.float64)
    print(f"ifd: {summary['records']} records in {output} ({summary['scored_now']} scored now), "
          f"{summary['skipped']} skipped, {summary['ifd_above_1']} with IFD > 1 (never selected)")
    if len(ifds):
        print(f"ifd: min {ifds.min():.4f}  median {np.median(ifds):.4f}  max {ifds.max():.4f}")
    if selected_output:
        chosen = write_selection(output, selected_output, fraction=fraction, top=top)
        summary["selected"] = len(chosen)
        rule = f"top {top}" if top is not None else f"top {fraction:.0%}"
        print(f"selected {len(chosen)} records ({rule} by IFD, IFD <= 1) -> {selected_output}")
    skipped_reasons: dict[str, int] = {}
    for r in scored:
        if r.get("skipped"):
            key = str(r["skipped"]).split(":")[0]
            skipped_reasons[key] = skipped_reasons.get(key, 0) + 1
    for reason, n in sorted(skipped_reasons.items()):
        print(f"  skipped ({reason}): {n}")
    return summary
