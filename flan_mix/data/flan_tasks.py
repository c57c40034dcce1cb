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
import os
import random
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import gin
import numpy as np
import seqio
import tensorflow as tf

from flan_mix.data import catalog as catalog_lib
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
#: Alternative rates: Chung et al. 2022 (Scaling Instruction-Finetuned LMs) mixing proportions Muffin 46.0%,
#: T0-SF 27.9%, NIV2 24.2%, CoT 1.8%. Muffin there includes dialog; its 46.0% is split between flan2021 and
#: dialog in the 40:3 ratio of SUBMIX_RATES. (Recalled from the paper; the search tool did not return the page,
#: verify before relying on the exact figures.)
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
_CHUNK = 128  # rendered examples per generator step

_REPO = Path(__file__).resolve().parents[2]
DEFAULT_COT_DIR = _REPO.parent / "shared" / "data" / "flan" / "cot"


def task_name(task: str, template_type: str) -> str:
    return f"{PREFIX}{task}_{template_type}"


def submixture_name(submixture: str) -> str:
    return f"{PREFIX}{submixture}"


# ------------------------------------------------------------------------------------------------------------
# Adapters: raw loader fields (strings / lists of strings) -> the template family schema.
# An adapter returns None for a raw example that has no usable label (e.g. snli's -1); these are counted and
# logged per task at the end of the stream.

def _s(v: Any) -> str:
    if isinstance(v, (bytes, np.bytes_)):
        return v.decode("utf-8")
    if isinstance(v, np.ndarray) and v.ndim == 0:
        return _s(v.item())
    return str(v)


def _l(v: Any) -> list[str]:
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_s(x) for x in v]
    return [_s(v)]


def _label(raw: Mapping[str, Any], field: str = "label") -> int:
    return int(float(_s(raw[field])))


def _pick(options: Sequence[str], idx: int) -> Optional[str]:
    return options[idx] if 0 <= idx < len(options) else None


_NLI3 = ["yes", "it is not possible to tell", "no"]
_YN = ["no", "yes"]


def _nli(premise_key: str, order: Sequence[int], n: int = 3):
    opts = _NLI3 if n == 3 else ["yes", "no"]

    def fn(raw):
        lab = _label(raw)
        if lab < 0 or lab >= len(order):
            return None
        return {"premise": _s(raw[premise_key]), "hypothesis": _s(raw.get("hypothesis", raw.get("sentence2", ""))),
                "options": opts, "answer": opts[order[lab]]}
    return fn


def _wnli(raw):
    lab = _label(raw)  # glue/wnli: 1 = entailment
    return {"premise": _s(raw["sentence1"]), "hypothesis": _s(raw["sentence2"]), "options": ["yes", "no"],
            "answer": "yes" if lab == 1 else "no"}


def _para(a: str, b: str):
    def fn(raw):
        lab = _label(raw)
        if lab not in (0, 1):
            return None
        return {"sentence1": _s(raw[a]), "sentence2": _s(raw[b]), "options": _YN, "answer": _YN[lab]}
    return fn


def _senti(text: str, label: str = "label", mapping: Optional[Mapping[int, str]] = None):
    mapping = mapping or {0: "negative", 1: "positive"}
    opts = list(dict.fromkeys(mapping.values()))

    def fn(raw):
        ans = mapping.get(_label(raw, label))
        if ans is None:
            return None
        return {"text": _s(raw[text]), "options": opts, "answer": ans}
    return fn


_AG = ["World", "Sports", "Business", "Science/Tech"]
_TREC = ["description", "entity", "abbreviation", "human", "number", "location"]


def _ag(raw):
    ans = _pick(_AG, _label(raw))
    return None if ans is None else {"text": f"{_s(raw['title'])}\n{_s(raw['description'])}", "options": _AG,
                                     "answer": ans}


def _trec(raw):
    ans = _pick(_TREC, _label(raw))
    return None if ans is None else {"text": _s(raw["text"]), "options": _TREC, "answer": ans}


def _classify(text_fn: Callable, question: str | Callable, options: Sequence[str], answer_fn: Callable):
    def fn(raw):
        ans = answer_fn(raw)
        if ans is None:
            return None
        q = question(raw) if callable(question) else question
        return {"text": text_fn(raw), "question": q, "options": list(options), "answer": ans}
    return fn


def _summ(text: str, summary: str, joiner: str = "\n"):
    def fn(raw):
        t = raw[text]
        return {"text": joiner.join(_l(t)) if not isinstance(t, (str, bytes)) else _s(t),
                "summary": " ".join(_l(raw[summary])) if not isinstance(raw[summary], (str, bytes))
                else _s(raw[summary])}
    return fn


_LANG = {"en": "English", "fr": "French", "de": "German", "cs": "Czech", "fi": "Finnish", "ro": "Romanian",
         "ru": "Russian", "tr": "Turkish", "es": "Spanish"}


def _translate(raw, rng: random.Random):
    other = next(k for k in raw if k != "en")
    src, tgt = ("en", other) if rng.random() < 0.5 else (other, "en")
    return {"source": _s(raw[src]), "target": _s(raw[tgt]), "src_lang": _LANG.get(src, src),
            "tgt_lang": _LANG.get(tgt, tgt)}


def _rqa(context: str, question: str, answer_fn: Callable, options_fn: Optional[Callable] = None):
    def fn(raw):
        ans = answer_fn(raw)
        if ans is None or ans == "":
            return None
        out = {"context": _s(raw[context]), "question": _s(raw[question]), "answer": ans}
        if options_fn is not None:
            opts = options_fn(raw)
            if ans in opts:
                out["options"] = opts
        return out
    return fn


def _first(field: str, empty: Optional[str] = None):
    def fn(raw):
        vals = _l(raw[field])
        return vals[0] if vals and vals[0] else empty
    return fn


def _qa(q: str, a: str):
    def fn(raw):
        ans = _l(raw[a])
        return None if not ans or not ans[0] else {"question": _s(raw[q]), "answer": ans[0], "options": []}
    return fn


def _mc(question_fn: Callable, options_fn: Callable, answer_idx_fn: Callable):
    def fn(raw):
        opts = options_fn(raw)
        ans = _pick(opts, answer_idx_fn(raw))
        return None if ans is None else {"question": question_fn(raw), "options": opts, "answer": ans}
    return fn


def _d2t(data: str, prefix: str = ""):
    def fn(raw):
        d = raw[data]
        text = ", ".join(_l(d)) if not isinstance(d, (str, bytes)) else _s(d)
        return {"data": prefix + text, "text": _s(raw["target"])}
    return fn


def _rewrite(kind: str):
    def fn(raw, rng):
        text = _s(raw["en"] if "en" in raw else raw["passage"])
        if kind == "fix_punct":
            src = "".join(c for c in text if c not in ",.;:!?\"'")
            return {"instruction": "Put the punctuation back into this text.", "text": src, "target": text}
        if kind == "true_case":
            return {"instruction": "Restore the capital letters in this text.", "text": text.lower(),
                    "target": text}
        if kind == "word_segment":
            return {"instruction": "Insert the spaces between the words.", "text": text.replace(" ", ""),
                    "target": text}
        words = text.rsplit(" ", 1)
        if len(words) < 2:
            return None
        return {"instruction": "Predict the word that ends this passage.", "text": words[0], "target": words[1]}
    return fn


def _qrecc(raw):
    ctx = _l(raw["context"]) + [_s(raw["question"])]
    return {"context": "\n".join(c for c in ctx if c), "response": _s(raw["answer"])}


def _wiki_dialog(raw):
    utt = [u for u in _l(raw["utterances"]) if u]
    if len(utt) < 2:
        return None
    return {"context": "\n".join(utt[:-1]), "response": utt[-1]}


def _letter_idx(key: str, labels: str):
    def fn(raw):
        k = _s(raw[key]).strip()
        return labels.index(k) if k in labels else -1
    return fn


_ADAPTERS: dict[str, Callable] = {
    "anli": _nli("context", [0, 1, 2]), "mnli": _nli("premise", [0, 1, 2]), "snli": _nli("premise", [0, 1, 2]),
    "cb": _nli("premise", [0, 2, 1]), "rte": _nli("premise", [0, 1], n=2), "wnli": _wnli,
    "glue_mrpc": _para("sentence1", "sentence2"), "glue_qqp": _para("question1", "question2"),
    "paws_wiki": _para("sentence1", "sentence2"),
    "imdb_reviews": _senti("text"), "sst2": _senti("sentence"), "yelp_polarity_reviews": _senti("text"),
    "sentiment140": _senti("text", "polarity", {0: "negative", 2: "neutral", 4: "positive"}),
    "ag_news_subset": _ag, "trec": _trec,
    "cola": _classify(lambda r: _s(r["sentence"]), "Is this sentence grammatically acceptable?",
                      ["unacceptable", "acceptable"], lambda r: ["unacceptable", "acceptable"][_label(r)]),
    "qnli": _classify(lambda r: f"Question: {_s(r['question'])}\nSentence: {_s(r['sentence'])}",
                      "Does the sentence answer the question?", _YN,
                      lambda r: "yes" if _label(r) == 0 else "no"),
    "stsb": _classify(lambda r: f"{_s(r['sentence1'])}\n{_s(r['sentence2'])}",
                      "On a scale from 0 to 5, how alike in meaning are the two sentences?",
                      [str(i) for i in range(6)], lambda r: str(int(round(float(_s(r["label"])))))),
    "wic": _classify(lambda r: f"{_s(r['sentence1'])}\n{_s(r['sentence2'])}",
                     lambda r: f"Is \"{_s(r['word'])}\" used with the same meaning in both sentences?", _YN,
                     lambda r: _YN[_label(r)]),
    "wsc": _classify(lambda r: _s(r["text"]),
                     lambda r: f"In the text, does \"{_s(r['span2_text'])}\" refer to \"{_s(r['span1_text'])}\"?",
                     _YN, lambda r: _YN[_label(r)]),
    "multirc": _classify(lambda r: f"{_s(r['paragraph'])}\n\nQuestion: {_s(r['question'])}",
                         lambda r: f"Is \"{_s(r['answer'])}\" a correct answer?", _YN, lambda r: _YN[_label(r)]),
    "aeslc": _summ("email_body", "subject_line"), "cnn_dailymail": _summ("article", "highlights"),
    "gigaword": _summ("document", "summary"), "multi_news": _summ("document", "summary"),
    "newsroom": _summ("text", "summary"), "samsum": _summ("dialogue", "summary"),
    "xsum": _summ("document", "summary"), "wiki_lingua_english_en": _summ("source", "target"),
    "opinion_abstracts_idebate": _summ("argument_sentences", "claim", " "),
    "opinion_abstracts_rotten_tomatoes": _summ("critics", "critic_consensus", "\n"),
    "bool_q": _rqa("passage", "question", lambda r: "yes" if _s(r["answer"]) == "true" else "no",
                   lambda r: _YN),
    "coqa": lambda r: {"context": _s(r["story"]), "question": _l(r["questions"])[0],
                       "answer": _l(r["answers"])[0]} if _l(r["questions"]) and _l(r["answers"]) else None,
    "cosmos_qa": _rqa("context", "question", lambda r: _pick([_s(r[f"answer{i}"]) for i in range(4)], _label(r)),
                      lambda r: [_s(r[f"answer{i}"]) for i in range(4)]),
    "drop": _rqa("passage", "question", lambda r: _s(r["answer"])),
    "quac": _rqa("context", "question", lambda r: _s(r["answer"])),
    "record": _rqa("passage", "query", _first("answers"), lambda r: _l(r["entities"])),
    "squad_v1": _rqa("context", "question", _first("answers")),
    "squad_v2": _rqa("context", "question", _first("answers", empty="unanswerable")),
    "common_gen": _d2t("concepts", "Concepts: "), "dart": _d2t("tripleset"),
    "e2e_nlg": _d2t("meaning_representation"), "web_nlg_en": _d2t("input"),
    "natural_questions": _qa("question", "answer"), "trivia_qa": _qa("question", "answer"),
    "math_dataset": _qa("question", "answer"), "unified_qa_science_inst": _qa("input", "output"),
    "arc": _mc(lambda r: _s(r["question"]), lambda r: _l(r["choices_text"]),
               lambda r: _l(r["choices_label"]).index(_s(r["answerKey"]))
               if _s(r["answerKey"]) in _l(r["choices_label"]) else -1),
    "copa": _mc(lambda r: f"{_s(r['premise'])} What was the {_s(r['question'])}?",
                lambda r: [_s(r["choice1"]), _s(r["choice2"])], _label),
    "hellaswag": _mc(lambda r: f"{_s(r['context'])} ...", lambda r: _l(r["endings"]), _label),
    "story_cloze": _mc(lambda r: f"{_s(r['context'])}\nWhich ending fits the story?",
                       lambda r: _l(r["endings"]), _label),
    "openbookqa": _mc(lambda r: _s(r["question"]), lambda r: [_s(r[f"choice_{c}"]) for c in "ABCD"],
                      _letter_idx("answerKey", "ABCD")),
    "piqa": _mc(lambda r: f"Goal: {_s(r['goal'])}\nHow do you do it?", lambda r: [_s(r["sol1"]), _s(r["sol2"])],
                _label),
    "winogrande": _mc(lambda r: f"{_s(r['sentence'])}\nWhat does the blank (_) stand for?",
                      lambda r: [_s(r["option1"]), _s(r["option2"])], _label),
    "definite_pronoun_resolution": _mc(
        lambda r: f"{_s(r['sentence'])}\nWho or what does \"{_s(r['pronoun'])}\" refer to?",
        lambda r: _l(r["candidates"]), _label),
    "p3": lambda r: {"prompt": _s(r["inputs"]), "answer": " ".join(_l(r["targets"]))},
    "cot": lambda r: {"question": _s(r["question"]), "answer": _s(r["answer"]), "rationale": _s(r["rationale"])},
    "dialog:qrecc": _qrecc, "dialog:wiki_dialog": _wiki_dialog,
    "translation": _translate, "fix_punct": _rewrite("fix_punct"), "true_case": _rewrite("true_case"),
    "word_segment": _rewrite("word_segment"), "lambada": _rewrite("lambada"),
}
_NEEDS_RNG = {"translation", "fix_punct", "true_case", "word_segment", "lambada"}


def adapter_for(record: catalog_lib.TaskRecord) -> Callable[[Mapping[str, Any], random.Random], Optional[dict]]:
    """(raw example, rng) -> family example or None. NIv2 is handled by the renderer (exemplars are its own)."""
    key = record.template_family
    if key == "dialog":
        key = f"dialog:{record.dataset}"
    if key == "niv2":
        return lambda raw, rng: {"definition": _s(raw["definition"]), "input": _s(raw["input"]),
                                 "output": _s(raw["output"])}
    fn = _ADAPTERS.get(key)
    if fn is None:
        raise ValueError(f"task {record.name!r}: no field adapter for template_family {key!r}; add one to "
                         "flan_mix/data/flan_tasks.py _ADAPTERS")
    if key in _NEEDS_RNG:
        return fn
    return lambda raw, rng: fn(raw)


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


def _content_seed(spec: RenderSpec, raw: Mapping[str, Any]) -> int:
    h = zlib.crc32(f"{spec.seed}|{spec.task}|{spec.template_type}".encode())
    for k in sorted(raw):
        v = raw[k]
        if isinstance(v, np.ndarray) and v.ndim:
            for x in v.tolist():
                h = zlib.crc32(x if isinstance(x, bytes) else str(x).encode(), h)
        else:
            h = zlib.crc32(v if isinstance(v, bytes) else str(v).encode(), h)
    return h


def _niv2_exemplars(raw: Mapping[str, Any], definition: str) -> list[dict]:
    ins, outs = _l(raw.get("pos_inputs", [])), _l(raw.get("pos_outputs", []))
    return [{"definition": definition, "input": i, "output": o} for i, o in zip(ins, outs)]


def render_stream(raw_examples: Iterator[Mapping[str, Any]], spec: RenderSpec,
                  adapter: Callable) -> Iterator[dict]:
    """Renders raw examples one by one (bounded memory). Yields {inputs, targets, metadata...}."""
    few_shot = spec.template_type.startswith("fs_")
    history: collections.deque = collections.deque(maxlen=_HISTORY)
    ahead: collections.deque = collections.deque()
    skipped = 0
    emitted = 0

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
        out = templates.format_example(ex, family=spec.family, template_type=spec.template_type, seed=seed,
                                       exemplars=exemplars, inverted=inverted)
        return {"inputs": out["inputs"], "targets": out["targets"], "task_name": spec.task, "source": spec.source,
                "template_id": out["template_id"], "template_type": spec.template_type}

    for raw in raw_examples:
        item = adapt(raw)
        if item is None:
            skipped += 1
            continue
        if not few_shot or spec.is_niv2:
            emitted += 1
            yield emit(item, [])
            continue
        ahead.append(item)
        if len(ahead) > _LOOKAHEAD:
            q = ahead.popleft()
            emitted += 1
            yield emit(q, list(history) + list(ahead))
            history.append(q)
    while ahead:
        q = ahead.popleft()
        emitted += 1
        yield emit(q, list(history) + list(ahead))
        history.append(q)
    if skipped:
        logger.warning("Task %r (%s): skipped %d raw example(s) without a usable label/answer; rendered %d.",
                       spec.task, spec.template_type, skipped, emitted)


def _render_preprocessor(dataset: tf.data.Dataset, spec: RenderSpec, adapter: Callable) -> tf.data.Dataset:
    """Source dataset -> rendered strings (a Python generator over the source, chunked)."""
    signature = {k: tf.TensorSpec([None], tf.string) for k in OUTPUT_KEYS}

    def gen():
        buf: list[dict] = []
        for rec in render_stream(dataset.as_numpy_iterator(), spec, adapter):
            buf.append(rec)
            if len(buf) == _CHUNK:
                yield {k: np.array([r[k].encode("utf-8") for r in buf], dtype=object) for k in OUTPUT_KEYS}
                buf = []
        if buf:
            yield {k: np.array([r[k].encode("utf-8") for r in buf], dtype=object) for k in OUTPUT_KEYS}

    return tf.data.Dataset.from_generator(gen, output_signature=signature).unbatch()


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
               vocabulary: seqio.Vocabulary) -> seqio.Task:
    family = flan_templates.family_for(record.template_family, record.name)
    spec = RenderSpec(task=record.name, source=record.source, family=family, template_type=template_type,
                      invert=record.submixture in INVERTED_SUBMIXTURES and templates.get_family(family).invertible,
                      seed=seed, is_niv2=record.loader.kind == "niv2")
    src = sources.source_for_task(record, tfds_data_dir=dirs.tfds_data_dir, niv2_dir=dirs.niv2_dir,
                                  cot_dir=dirs.cot_dir, hf_cache_dir=dirs.hf_cache_dir)
    features = {k: seqio.Feature(vocabulary=vocabulary, add_eos=True, dtype=tf.int32) for k in ("inputs", "targets")}
    render = functools.partial(_render_preprocessor, spec=spec, adapter=adapter_for(record))
    functools.update_wrapper(render, _render_preprocessor)
    return seqio.Task(
        task_name(record.name, template_type),
        source=src,
        output_features=features,
        preprocessors=[render, tasks_lib.tokenize, tasks_lib.append_eos_after_trim],
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
