"""The Flan 2022 collection as seqio Tasks and Mixtures, streamed from the real loaders.

Names:

* ``flan2022_<task>_<template type>``: one seqio Task per enabled catalog task x template type it is mixed in
  (flan2021, t0_sf: zs_opt, zs_noopt, fs_opt, fs_noopt; cot, niv2, dialog: zs_opt, fs_opt).
* ``flan2022_<submixture>`` (flan2022_flan2021, flan2022_t0_sf, flan2022_niv2, flan2022_cot, flan2022_dialog):
  capped examples-proportional rates within the submixture, template types by TEMPLATE_WEIGHTS.
* ``flan2022_submix``: the submixtures at SUBMIX_RATES (.40/.32/.20/.05/.03).
* ``flan2022_submix_chung``: the alternative rates of Chung et al. 2022 (ALT_SUBMIX_RATES).

Streaming: registration reads no data. A task's source is the catalog loader (``sources.source_for_task``),
which shuffles by seed and shards per host (seqio.ShardInfo) before anything is rendered. The render step is a
bounded Python generator: each raw example is adapted to its template family schema, then rendered with a seed
derived from the registration seed and the example's content (the same example renders the same way on any
number of hosts). Few-shot exemplars come from a small window of neighbouring examples of the same stream
(NIv2: the task's positive examples). Input inversion (cot, dialog) happens per example with probability
``templates.INVERSION_WEIGHT``. Memory is bounded by the window, whatever the data size.

Missing data: with ``allow_missing_tasks=False`` every enabled task is registered and one whose data is missing
raises ``sources.MissingDataError`` (task, what is missing, how to get it) when its dataset is requested. With
``allow_missing_tasks=True`` the data of every task is checked at registration (cheap file/dir checks), the
missing ones are not registered, their count is logged per submixture, and the rates are renormalized over what
is left (a submixture left empty is dropped from flan2022_submix, logged).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import random
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import gin
import numpy as np
import seqio
import tensorflow as tf

from flan_mix.data import catalog as catalog_lib
from flan_mix.data import flan_adapters
from flan_mix.data import flan_templates
from flan_mix.data import mixtures as mix_lib
from flan_mix.data import sources
from flan_mix.data import tasks as tasks_lib
from flan_mix.data import templates

logger = logging.getLogger(__name__)

PREFIX = "flan2022_"
SUBMIX_MIXTURE = "flan2022_submix"
ALT_SUBMIX_MIXTURE = "flan2022_submix_chung"

#: Per-task example caps (before examples-proportional mixing), by submixture.
CAPS = {"flan2021": 30_000, "t0_sf": 20_000, "niv2": 5_000, "cot": 100_000, "dialog": 200_000}
#: Rates of the submixtures in flan2022_submix (Longpre et al. 2023; FLAN flan/v2 README).
SUBMIX_RATES = {"flan2021": 0.40, "t0_sf": 0.32, "niv2": 0.20, "cot": 0.05, "dialog": 0.03}
#: Alternative rates: Chung et al. 2022 (arXiv:2210.11416), Appendix E, Table 23, "Proportion (B)", the one
#: behind the released Flan-T5/Flan-PaLM: Muffin 46.0%, T0-SF 27.9%, NIV2 24.2%, CoT 1.8% of examples sampled
#: (Proportion (A), 52/15/30/3, was used only for the paper's scaling and ablation runs). Muffin there includes
#: the dialog (and program synthesis) tasks, so its 46.0% is split between flan2021 and dialog in the 40:3 ratio
#: of SUBMIX_RATES.
ALT_SUBMIX_RATES = {"flan2021": 0.460 * 40 / 43, "t0_sf": 0.279, "niv2": 0.242, "cot": 0.018,
                    "dialog": 0.460 * 3 / 43}
#: How a task's rate is shared by its template types.
_FOUR = {"zs_opt": 0.25, "zs_noopt": 0.25, "fs_opt": 0.25, "fs_noopt": 0.25}
_TWO = {"zs_opt": 0.5, "fs_opt": 0.5}
TEMPLATE_WEIGHTS = {"flan2021": _FOUR, "t0_sf": _FOUR, "cot": _TWO, "niv2": _TWO, "dialog": _TWO}
#: Submixtures whose examples are input-inverted with probability templates.INVERSION_WEIGHT.
INVERTED_SUBMIXTURES = ("cot", "dialog")

OUTPUT_KEYS = ("inputs", "targets", "task_name", "source", "template_id", "template_type")
MAX_EXEMPLARS = 3  # few-shot: 1..MAX_EXEMPLARS exemplars
_HISTORY = 8  # few-shot window: examples already emitted
_LOOKAHEAD = 2  # few-shot window: examples read ahead (so the first example has exemplars too)
_CHUNK = 256  # examples per tf.data <-> Python crossing

_REPO = Path(__file__).resolve().parents[2]
DEFAULT_COT_DIR = _REPO.parent / "shared" / "data" / "flan" / "cot"


def task_name(task: str, template_type: str) -> str:
    return f"{PREFIX}{task}_{template_type}"


def submixture_name(submixture: str) -> str:
    return f"{PREFIX}{submixture}"


# ------------------------------------------------------------------------------------------------------------
# Rendering stream.

@dataclasses.dataclass(frozen=True)
class RenderSpec:
    task: str  # catalog task name
    source: str  # catalog source (FLAN, T0, NIv2, CoT, Dialog)
    family: str
    template_type: str
    invert: bool
    seed: int
    is_niv2: bool = False


def _hash_into(h: int, value: Any) -> int:
    if isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.ndim):
        for x in value:
            h = _hash_into(h, x)
        return h
    if isinstance(value, np.ndarray):
        value = value.item()
    return zlib.crc32(value if isinstance(value, bytes) else str(value).encode(), h)


def _content_seed(spec: RenderSpec, raw: Mapping[str, Any]) -> int:
    h = zlib.crc32(f"{spec.seed}|{spec.task}|{spec.template_type}".encode())
    for k in sorted(raw):
        h = _hash_into(h, raw[k])
    return h


def _niv2_exemplars(raw: Mapping[str, Any], definition: str) -> list[dict]:
    ins = flan_adapters.as_str_list(raw.get("pos_inputs", []))
    outs = flan_adapters.as_str_list(raw.get("pos_outputs", []))
    return [{"definition": definition, "input": i, "output": o} for i, o in zip(ins, outs)]


Encoders = Mapping[str, Callable[[str], Sequence[int]]]


def render_stream(raw_examples: Iterator[Mapping[str, Any]], spec: RenderSpec, adapter: Callable,
                  encoders: Optional[Encoders] = None, max_input_tokens: Optional[int] = None) -> Iterator[dict]:
    """Renders raw examples one by one (bounded memory). Yields {inputs, targets, metadata...}.

    With encoders ({"inputs": str -> ids, "targets": ...}) each record also has inputs_ids and targets_ids.
    With max_input_tokens as well, a few-shot prompt whose ids plus EOS do not fit drops its last exemplar until
    it fits or one is left (then it is trimmed downstream); the number of shortened prompts is logged.
    """
    few_shot = spec.template_type.startswith("fs_")
    history: collections.deque = collections.deque(maxlen=_HISTORY)
    ahead: collections.deque = collections.deque()
    counts = collections.Counter()

    def adapt(raw):
        seed = _content_seed(spec, raw)
        rng = random.Random(seed)
        ex = adapter(raw, rng)
        return None if ex is None else (ex, seed, raw)

    def emit(item, pool):
        ex, seed, raw = item
        rng = random.Random(seed ^ 0x5EED)
        inverted = spec.invert and rng.random() < templates.INVERSION_WEIGHT
        exemplars: list = []
        if few_shot:
            if spec.is_niv2:
                exemplars = _niv2_exemplars(raw, ex["definition"])
                if not exemplars:
                    raise ValueError(f"task {spec.task!r}: few-shot NIv2 needs positive examples, the task file "
                                     "has none; use zs_* for it")
                exemplars = exemplars[:MAX_EXEMPLARS]
            else:
                if not pool:
                    raise ValueError(f"task {spec.task!r} ({spec.template_type}): few-shot needs at least two "
                                     "examples in the stream, this host's shard has one; use zs_* or fewer hosts")
                k = min(len(pool), rng.randint(1, MAX_EXEMPLARS))
                exemplars = [p[0] for p in rng.sample(pool, k)]
        while True:
            out = templates.format_example(ex, family=spec.family, template_type=spec.template_type, seed=seed,
                                           exemplars=exemplars, inverted=inverted)
            input_ids = encoders["inputs"](out["inputs"]) if encoders else None
            if (max_input_tokens is None or input_ids is None or len(exemplars) <= 1
                    or len(input_ids) + 1 <= max_input_tokens):
                break
            exemplars = exemplars[:-1]
            counts["shortened"] += 1
        rec = {"inputs": out["inputs"], "targets": out["targets"], "task_name": spec.task, "source": spec.source,
               "template_id": out["template_id"], "template_type": spec.template_type}
        if encoders:
            rec["inputs_ids"] = input_ids
            rec["targets_ids"] = encoders["targets"](out["targets"])
        counts["emitted"] += 1
        return rec

    for raw in raw_examples:
        item = adapt(raw)
        if item is None:
            counts["skipped"] += 1
            continue
        if not few_shot or spec.is_niv2:
            yield emit(item, [])
            continue
        ahead.append(item)
        if len(ahead) > _LOOKAHEAD:
            q = ahead.popleft()
            yield emit(q, list(history) + list(ahead))
            history.append(q)
    while ahead:
        q = ahead.popleft()
        yield emit(q, list(history) + list(ahead))
        history.append(q)
    if counts["skipped"]:
        logger.warning("Task %r (%s): skipped %d raw example(s) without a usable label/answer; rendered %d.",
                       spec.task, spec.template_type, counts["skipped"], counts["emitted"])
    if counts["shortened"]:
        logger.info("Task %r (%s): dropped %d few-shot exemplar(s) so that prompts fit %d input tokens.",
                    spec.task, spec.template_type, counts["shortened"], max_input_tokens)


def _raw_rows(dataset: tf.data.Dataset) -> Iterator[dict[str, Any]]:
    """The source's examples as Python values, crossing from tf.data a chunk at a time (one crossing per example
    costs ~0.1 ms, more than rendering it)."""
    for chunk in dataset.ragged_batch(_CHUNK).as_numpy_iterator():
        keys = list(chunk)
        for i in range(len(chunk[keys[0]])):
            yield {k: chunk[k][i] for k in keys}


_TEXT_KEYS = OUTPUT_KEYS + ("inputs_pretokenized", "targets_pretokenized")


class _Tokenizer:
    """Python tokenization with seqio's append_eos_after_trim semantics: trim to the feature length minus one,
    then the EOS id (for features with add_eos)."""

    def __init__(self, output_features: Mapping[str, seqio.Feature], sequence_length: Optional[Mapping[str, int]]):
        self.encoders = {k: output_features[k].vocabulary.encode for k in ("inputs", "targets")}
        self.eos = {k: [output_features[k].vocabulary.eos_id] if output_features[k].add_eos else []
                    for k in ("inputs", "targets")}
        self.limit = {k: (sequence_length or {}).get(k) for k in ("inputs", "targets")}

    def finish(self, ids: Sequence[int], key: str) -> list[int]:
        if self.limit[key] is not None and self.eos[key]:
            ids = ids[:self.limit[key] - 1]
        return list(ids) + self.eos[key]


def _render_preprocessor(dataset: tf.data.Dataset, sequence_length: Optional[Mapping[str, int]] = None,
                         output_features: Optional[Mapping[str, seqio.Feature]] = None, *, spec: RenderSpec,
                         adapter: Callable) -> tf.data.Dataset:
    """Source dataset -> rendered and tokenized examples (a chunked Python generator over the source).

    Output: inputs/targets int32 token ids (trimmed to sequence_length with EOS last, as seqio's
    append_eos_after_trim does), their *_pretokenized text, and the metadata keys.
    Tokenizing here, in Python, is ~5x cheaper per example than a tf.data map of the SentencePiece op.
    This is the seqio path (seqio.get_dataset, eval, inspect); training streams use StreamingTask.token_stream.
    """
    tok = _Tokenizer(output_features, sequence_length)
    signature = {k: tf.TensorSpec([None], tf.string) for k in _TEXT_KEYS}
    for k in ("inputs", "targets"):
        signature[k] = tf.TensorSpec([None, None], tf.int32)
        signature[f"{k}_length"] = tf.TensorSpec([None], tf.int32)

    def to_chunk(buf: list[dict]) -> dict[str, np.ndarray]:
        out = {k: np.array([r[k].encode("utf-8") for r in buf], dtype=object) for k in OUTPUT_KEYS}
        out["inputs_pretokenized"], out["targets_pretokenized"] = out.pop("inputs"), out.pop("targets")
        for k in ("inputs", "targets"):
            ids = [tok.finish(r[f"{k}_ids"], k) for r in buf]
            lengths = np.array([len(x) for x in ids], np.int32)
            mat = np.zeros((len(ids), int(lengths.max())), np.int32)
            for i, x in enumerate(ids):
                mat[i, :len(x)] = x
            out[k], out[f"{k}_length"] = mat, lengths
        return out

    def gen():
        buf: list[dict] = []
        for rec in render_stream(_raw_rows(dataset), spec, adapter, tok.encoders, tok.limit["inputs"]):
            buf.append(rec)
            if len(buf) == _CHUNK:
                yield to_chunk(buf)
                buf = []
        if buf:
            yield to_chunk(buf)

    def unpad(ex):
        for k in ("inputs", "targets"):
            ex[k] = ex[k][:ex.pop(f"{k}_length")]
        return ex

    ds = tf.data.Dataset.from_generator(gen, output_signature=signature).unbatch()
    return ds.map(tf.autograph.experimental.do_not_convert(unpad))


class StreamingTask(seqio.Task):
    """A seqio Task that can also stream its (inputs, targets) token ids in plain Python.

    Why: a seqio Mixture builds one tf.data pipeline per task up front; for the NIv2 submixture (3,108 tasks)
    that took ~5 MB and 0.2 s per task to build and ~10 MB more per task once iterating (>12 GB before the
    first batch, measured). flan_mix.data.pipeline mixes these tasks in Python instead and opens a task's
    stream only when the task is first drawn; an open stream holds its source's position index and a window of
    a few examples. seqio.get_dataset on the task still works (the _render_preprocessor path).
    """

    def __init__(self, name: str, *, spec: RenderSpec, adapter: Callable, **kwargs):
        super().__init__(name, **kwargs)
        self.spec = spec
        self.adapter = adapter

    def token_stream(self, *, sequence_length: Optional[Mapping[str, int]], split: str = "train",
                     shuffle: bool = True, seed: Optional[int] = None,
                     shard_info: Optional[seqio.ShardInfo] = None,
                     num_epochs: Optional[int] = 1) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(inputs, targets) int32 ids, rendered exactly as the seqio path renders them (order aside: no
        shuffle buffer here; the sources already read in a seeded random order)."""
        src = self.source
        if isinstance(src, sources._IndexedDataSource):
            raws = src.iter_examples(split, shuffle=shuffle, seed=seed, shard_info=shard_info,
                                     num_epochs=num_epochs)
        else:  # TFDS reads through tf.data; one pipeline per drawn task
            raws = _raw_rows(src.get_dataset(split, shuffle=shuffle, seed=seed, shard_info=shard_info)
                             .repeat(num_epochs))
        tok = _Tokenizer(self.output_features, sequence_length)
        for rec in render_stream(raws, self.spec, self.adapter, tok.encoders, tok.limit["inputs"]):
            yield (np.asarray(tok.finish(rec["inputs_ids"], "inputs"), np.int32),
                   np.asarray(tok.finish(rec["targets_ids"], "targets"), np.int32))


# ------------------------------------------------------------------------------------------------------------
# Availability (registration-time check for allow_missing_tasks).

@dataclasses.dataclass(frozen=True)
class DataDirs:
    tfds_data_dir: Optional[str] = None
    niv2_dir: Optional[str] = None
    cot_dir: Optional[str] = None
    hf_cache_dir: Optional[str] = None


def missing_reason(record: catalog_lib.TaskRecord, dirs: DataDirs) -> Optional[str]:
    """Why the task's data is not here (what is missing and how to get it), or None if it looks present."""
    spec = record.loader
    if spec.kind == "unavailable":
        return f"never released: {record.disabled_reason}"
    src = sources.source_for_task(record, tfds_data_dir=dirs.tfds_data_dir, niv2_dir=dirs.niv2_dir,
                                  cot_dir=dirs.cot_dir, hf_cache_dir=dirs.hf_cache_dir)
    try:
        if spec.kind == "tfds":
            name, _, version = spec.name.partition(":")
            root = Path(dirs.tfds_data_dir) if dirs.tfds_data_dir else Path.home() / "tensorflow_datasets"
            d = root / name / version if version else root / name
            if not d.is_dir():
                raise src._missing(f"{d} does not exist")
        else:
            src._check_available()
    except sources.MissingDataError as e:
        return str(e)
    except sources.OptionalDependencyError as e:
        return str(e)
    return None


# ------------------------------------------------------------------------------------------------------------
# Registration.

@dataclasses.dataclass
class Registration:
    dirs: DataDirs
    seed: int
    allow_missing_tasks: bool
    task_names: list[str]
    records: dict[str, catalog_lib.TaskRecord]  # catalog name -> record, registered tasks only
    dropped: dict[str, str]  # catalog name -> why (missing data)
    submixture_rates: dict[str, dict[str, float]]  # submixture -> {seqio task: rate within the submixture}
    mixtures: dict[str, dict[str, float]]  # mixture name -> {seqio task: effective rate}
    vocabulary_id: str = ""


_REGISTERED: Optional[Registration] = None


def template_types_for(submixture: str) -> tuple[str, ...]:
    return tuple(TEMPLATE_WEIGHTS[submixture])


def _make_task(record: catalog_lib.TaskRecord, template_type: str, dirs: DataDirs, seed: int,
               vocabulary: seqio.Vocabulary) -> StreamingTask:
    family = flan_templates.family_for(record.template_family, record.name)
    spec = RenderSpec(task=record.name, source=record.source, family=family, template_type=template_type,
                      invert=record.submixture in INVERTED_SUBMIXTURES and templates.get_family(family).invertible,
                      seed=seed, is_niv2=record.loader.kind == "niv2")
    src = sources.source_for_task(record, tfds_data_dir=dirs.tfds_data_dir, niv2_dir=dirs.niv2_dir,
                                  cot_dir=dirs.cot_dir, hf_cache_dir=dirs.hf_cache_dir)
    features = {k: seqio.Feature(vocabulary=vocabulary, add_eos=True, dtype=tf.int32) for k in ("inputs", "targets")}
    adapter = flan_adapters.adapter_for(record)
    render = functools.partial(_render_preprocessor, spec=spec, adapter=adapter)
    functools.update_wrapper(render, _render_preprocessor)
    return StreamingTask(
        task_name(record.name, template_type),
        spec=spec,
        adapter=adapter,
        source=src,
        output_features=features,
        preprocessors=[render],
        postprocess_fn=tasks_lib.strip_postprocess,
        metric_fns=[tasks_lib.exact_match],
        shuffle_buffer_size=tasks_lib.SHUFFLE_BUFFER_SIZE,
    )


def _unregister() -> None:
    for mix in list(seqio.MixtureRegistry.names()):
        if mix.startswith(PREFIX):
            seqio.MixtureRegistry.remove(mix)
    for name in list(seqio.TaskRegistry.names()):
        if name.startswith(PREFIX):
            seqio.TaskRegistry.remove(name)


def submixture_task_rates(records: Sequence[catalog_lib.TaskRecord], submixture: str) -> dict[str, float]:
    """{seqio task: rate} within one submixture: capped examples-proportional, then template-type weights."""
    counts = {r.name: r.example_count for r in records}
    if not counts:
        return {}
    rates = mix_lib.capped_rates(counts, CAPS[submixture])
    types = template_types_for(submixture)
    return mix_lib.split_by_weights(rates, {t: types for t in counts}, TEMPLATE_WEIGHTS[submixture],
                                    name_fn=task_name)


def _resolve_allow_missing(value: Optional[bool]) -> bool:
    if value is not None:
        return bool(value)
    try:  # the macro form: --gin.allow_missing_tasks=True
        return bool(gin.query_parameter("%allow_missing_tasks"))
    except (ValueError, KeyError):
        return False


def _default_cot_dir() -> Optional[str]:
    return str(DEFAULT_COT_DIR) if DEFAULT_COT_DIR.is_dir() else None


@gin.configurable
def register_flan2022(vocabulary: Optional[seqio.Vocabulary] = None, *, tfds_data_dir: Optional[str] = None,
                      niv2_dir: Optional[str] = None, cot_dir: Optional[str] = "default",
                      hf_cache_dir: Optional[str] = None, allow_missing_tasks: Optional[bool] = None,
                      seed: int = 0, submixtures: Sequence[str] = catalog_lib.SUBMIXTURES,
                      catalog_path: Optional[str] = None) -> Registration:
    """Registers the Flan 2022 tasks and mixtures (reads no data; see the module docstring).

    cot_dir="default" is ../shared/data/flan/cot next to the repository when it exists, else None.
    allow_missing_tasks=None reads the gin macro ``allow_missing_tasks`` (False if unset).
    submixtures limits what is registered (e.g. ("cot",) for a quick CoT-only run).
    """
    global _REGISTERED
    if vocabulary is None:
        from flan_mix.data import vocab as vocab_lib
        vocabulary = vocab_lib.get_vocabulary()
    if cot_dir == "default":
        cot_dir = _default_cot_dir()
    allow = _resolve_allow_missing(allow_missing_tasks)
    unknown = sorted(set(submixtures) - set(catalog_lib.SUBMIXTURES))
    if unknown:
        raise ValueError(f"register_flan2022.submixtures: unknown {unknown}; choose from {catalog_lib.SUBMIXTURES}")
    dirs = DataDirs(tfds_data_dir=tfds_data_dir, niv2_dir=niv2_dir, cot_dir=cot_dir, hf_cache_dir=hf_cache_dir)
    cat = catalog_lib.load_catalog(catalog_path)
    _unregister()
    task_names: list[str] = []
    records: dict[str, catalog_lib.TaskRecord] = {}
    dropped: dict[str, str] = {}
    sub_rates: dict[str, dict[str, float]] = {}
    for sub in submixtures:
        kept = []
        for rec in cat.by_submixture(sub, enabled_only=True):
            if allow:
                why = missing_reason(rec, dirs)
                if why is not None:
                    dropped[rec.name] = why
                    continue
            kept.append(rec)
            records[rec.name] = rec
            for tt in template_types_for(sub):
                t = _make_task(rec, tt, dirs, seed, vocabulary)
                seqio.TaskRegistry.add_provider(t.name, t)
                task_names.append(t.name)
        n_drop = sum(1 for r in cat.by_submixture(sub, enabled_only=True) if r.name in dropped)
        if n_drop:
            logger.warning("allow_missing_tasks: dropped %d of %d %s tasks whose data is missing (e.g. %s); rates "
                           "renormalized over the remaining %d.", n_drop, n_drop + len(kept), sub,
                           next(n for n in dropped if cat.get(n).submixture == sub), len(kept))
        sub_rates[sub] = submixture_task_rates(kept, sub)
    mixtures: dict[str, dict[str, float]] = {}
    for sub, rates in sub_rates.items():
        if rates:
            mix_lib.register_mixture(submixture_name(sub), rates)
            mixtures[submixture_name(sub)] = mix_lib.normalize(rates)
        else:
            logger.warning("Submixture %s has no tasks left (all %s); mixture %s is not registered and it is left "
                           "out of %s.", sub, "missing" if allow else "disabled", submixture_name(sub),
                           SUBMIX_MIXTURE)
    for mix_name, weights in ((SUBMIX_MIXTURE, SUBMIX_RATES), (ALT_SUBMIX_MIXTURE, ALT_SUBMIX_RATES)):
        nested = {s: (weights[s], r) for s, r in sub_rates.items() if r}
        if not nested:
            continue
        flat = mix_lib.nested_rates(nested)
        mix_lib.register_mixture(mix_name, flat)
        mixtures[mix_name] = flat
    if dropped:
        logger.warning("allow_missing_tasks: %d task(s) dropped in all; registered %d catalog tasks as %d seqio "
                       "tasks.", len(dropped), len(records), len(task_names))
    _REGISTERED = Registration(dirs=dirs, seed=seed, allow_missing_tasks=allow, task_names=task_names,
                               records=records, dropped=dropped, submixture_rates=sub_rates, mixtures=mixtures,
                               vocabulary_id=str(vocabulary))
    logger.info("Registered %d Flan 2022 seqio tasks (%d catalog tasks), %d mixtures.", len(task_names),
                len(records), len(mixtures))
    return _REGISTERED


def registered() -> Optional[Registration]:
    return _REGISTERED
