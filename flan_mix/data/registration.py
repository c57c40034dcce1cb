"""What gets registered in seqio before a run, chosen by gin, and the names the evaluator scores.

The driver of the data side: the one place (with inspect_cli) that knows both collections and wires them to the
shared machinery: it hands the generated corpus to the vocabulary and tells the pipeline how to register a
collection whose task name it does not know yet.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import gin
import seqio

from flan_mix.data import hf_vocab, jsonl_task, pipeline, vocab
from flan_mix.data.flan import flan_tasks
from flan_mix.data.generated import mixture, seqio_tasks

COLLECTIONS = ("generated", "flan2022")
VOCABULARY_NAMES = ("generated", "spm32k")


@gin.configurable
def register_all(collections: Sequence[str] = ("generated",), tokenizer_dir: Optional[str] = None,
                 vocabulary_name: str = "generated", jsonl_tasks: Optional[Mapping[str, str]] = None):
    """Registers the named collections' tasks and mixtures; returns the shared vocabulary.

    "generated": the offline mini-collection; "flan2022": the Flan 2022 catalog (flan_mix.data.flan.flan_tasks).
    tokenizer_dir: tokenize every task with that directory's tokenizer (an imported model's
    tokenizer.json or spiece.model, see hf_vocab.vocabulary_from_dir) instead of the shared
    SentencePiece vocabulary.
    vocabulary_name: the shared vocabulary without tokenizer_dir: "generated" (1,636 ids, trained on the
    generated text) or "spm32k" (32,100 ids, unigram, trained on the CoT TSVs plus the generated text; see
    spm32k_vocabulary). A bound get_vocabulary.sentencepiece_model_path (e.g. T5's own model) wins over both.
    jsonl_tasks: {task name: path} of instruction-record files (flan_mix.data.jsonl_task) to register as
    tasks with the same vocabulary, e.g. a curated set: then MIXTURE_OR_TASK_NAME = 'that name' trains on it.
    """
    unknown = sorted(set(collections) - set(COLLECTIONS))
    if unknown:
        raise ValueError(f"unknown collection(s) {unknown}; choose from {COLLECTIONS} "
                         "(gin: register_all.collections).")
    if vocabulary_name not in VOCABULARY_NAMES:
        raise ValueError(f"register_all.vocabulary_name = {vocabulary_name!r}; choose from {VOCABULARY_NAMES}.")
    if tokenizer_dir:
        vocabulary = hf_vocab.vocabulary_from_dir(tokenizer_dir)
    elif vocabulary_name == "spm32k":
        vocabulary = spm32k_vocabulary()
    else:
        vocabulary = vocab.get_vocabulary(corpus=seqio_tasks.VOCABULARY_CORPUS)
    if "generated" in collections:
        seqio_tasks.register_generated_tasks(vocabulary=vocabulary)
        mixture.register_generated_mixture()
    if "flan2022" in collections:
        # Data dirs, allow_missing_tasks, seed: gin register_flan2022.* (or the macro allow_missing_tasks).
        flan_tasks.register_flan2022(vocabulary=vocabulary)
    if jsonl_tasks:
        jsonl_task.register_jsonl_tasks(dict(jsonl_tasks), vocabulary)
    return vocabulary


def check_name(name: str) -> None:
    """Raises (with close matches and how to list names) unless `name` is a task or mixture."""
    pipeline.get_task_or_mixture(name)


def eval_tasks(names: Sequence[str] | None = None) -> list[dict]:
    """The eval tasks with their ability and group ("trained" or "held-out").

    Default: the zero-shot eval task of every generated task. A mixture's name stands for its
    tasks (sorted); a Flan 2022 task's group is its submixture, e.g. "flan2022 cot".
    """
    if names is None:
        names = seqio_tasks.TRAIN_EVAL_TASK_NAMES + seqio_tasks.HELD_OUT_EVAL_TASK_NAMES
    specs, seen = [], set()
    for given in names:
        found = pipeline.get_task_or_mixture(given)  # raises with close matches for unknown names
        members = sorted(t.name for t in found.tasks) if isinstance(found, seqio.Mixture) else [given]
        for name in members:
            if name in seen:
                continue
            seen.add(name)
            if name.startswith(seqio_tasks.PREFIX):
                info = seqio_tasks.task_info(name)
                specs.append({"name": name, "ability": info["ability"],
                              "group": "held-out" if info["held_out"] else "trained"})
            else:
                specs.append({"name": name, **flan_tasks.eval_group(name)})
    return specs


def _unregistered_collection_hint(name: str) -> Optional[str]:
    if name.startswith(seqio_tasks.PREFIX) and seqio_tasks.registered_config() is None:
        return ("The generated tasks are not registered yet: call flan_mix.data.registration.register_all() "
                "(or flan_mix.data.generated.seqio_tasks.register_generated_tasks(), and "
                "flan_mix.data.generated.mixture.register_generated_mixture() for gen_train_mixture).")
    if name.startswith(flan_tasks.PREFIX) and flan_tasks.registered() is None:
        return ("The Flan 2022 tasks are not registered: add 'flan2022' to the collections "
                "(gin: register_all.collections = ['generated', 'flan2022']).")
    return None


pipeline.add_unknown_name_hint(_unregistered_collection_hint)


# The Flan-scale vocabulary: 32,000 SentencePiece pieces (+ 100 sentinel ids = 32,100, T5's size), unigram like
# T5's and with T5's ids (pad 0, eos 1, unk 2), trained offline on the text that is on this machine: every field of
# the CoT TSVs present and the generated collection's rendered train text. Cached like the default vocabulary
# (vocab.trained_sentencepiece_model: keyed by a hash of the lines and the trainer options), so it is trained once
# per corpus and reused by every later run or process.
SPM32K_VOCAB_SIZE = 32000
SPM32K_CORPUS_NAME = "cot_generated"


def spm32k_corpus_lines(cot_dir: Optional[str] = None, seed: int = 0) -> list[str]:
    """The 32k vocabulary's training text: question, rationale and answer of every row of every CoT TSV in
    cot_dir (sorted by file name), then the generated collection's vocabulary corpus."""
    import os

    from flan_mix.data.flan.sources import cot as cot_source

    cot_dir = cot_dir or flan_tasks._default_cot_dir()
    if not cot_dir or not os.path.isdir(cot_dir):
        raise FileNotFoundError(
            f"No CoT data directory ({cot_dir or flan_tasks.DEFAULT_COT_DIR}): the 32k vocabulary is trained on the "
            "CoT TSVs (question<TAB>answer<TAB>rationale). Pass cot_dir, or get them from "
            f"{cot_source.FLAN_REPO_URL}.")
    files = sorted(f for f in os.listdir(cot_dir) if f.endswith("_train.tsv"))
    if not files:
        raise FileNotFoundError(f"No *_train.tsv files in the CoT directory {cot_dir}.")
    lines: list[str] = []
    for name in files:
        for ex in cot_source.read_cot_tsv(os.path.join(cot_dir, name)):
            lines.extend((ex.question, ex.rationale, ex.answer))
    lines.extend(seqio_tasks.VOCABULARY_CORPUS.lines(seed))
    return lines


def spm32k_vocabulary(cot_dir: Optional[str] = None, *, cache_dir: Optional[str] = None,
                      extra_ids: int = vocab.DEFAULT_EXTRA_IDS) -> seqio.SentencePieceVocabulary:
    """The cached 32k unigram vocabulary (trained on first use, a few minutes on 2 cores; see above)."""
    corpus = vocab.Corpus(SPM32K_CORPUS_NAME, lambda seed: spm32k_corpus_lines(cot_dir, seed))
    return vocab.get_vocabulary(corpus=corpus, vocab_size=SPM32K_VOCAB_SIZE, model_type="unigram",
                                extra_ids=extra_ids, cache_dir=cache_dir)
