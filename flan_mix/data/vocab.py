"""The vocabulary: a named SentencePiece model file, or one trained offline on a corpus and cached.

gin::

    get_vocabulary.sentencepiece_model_path = "/path/to/spm.model"   # any SentencePiece model (e.g. T5's)
    get_vocabulary.extra_ids = 100

Without a path, a SentencePiece model is trained on the corpus the caller hands over (flan_mix.data.registration
hands over the generated collection's rendered train text) and cached under $FLAN_MIX_CACHE (default
~/.cache/flan_mix)/vocab/, keyed by a hash of the corpus itself and the trainer options, so a change to the
generators, the templates or the options trains a new one.
Parallel processes are safe: one trains under a file lock and publishes with an atomic rename; the others wait
and reuse it.

The default is BPE; model_type="unigram" (T5's kind) is what the 32k Flan-scale vocabulary uses
(flan_mix.data.registration.spm32k_vocabulary).
The trained model keeps T5's ids (pad=0, eos=1, unk=2, no bos), falls back to bytes (nothing is UNK), splits
digits (numbers are digit sequences, which helps arithmetic) and keeps newlines and spacing (NFKC
normalization only), so decode(encode(text)) == text on the corpus.
"""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import io
import json
import logging
import os
import tempfile
import time
from typing import Callable, Sequence

import gin
import seqio

logger = logging.getLogger(__name__)

DEFAULT_VOCAB_SIZE = 1536
DEFAULT_EXTRA_IDS = 100  # T5's sentinel ids, for span-corruption pretraining


@dataclasses.dataclass(frozen=True)
class Corpus:
    """Text to train a vocabulary on: lines(seed) gives the lines; the name goes into the cache file name."""

    name: str
    lines: Callable[[int], Sequence[str]]


def cache_root() -> str:
    return os.environ.get("FLAN_MIX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "flan_mix")


MODEL_TYPES = ("bpe", "unigram")


def _trainer_options(vocab_size: int, model_type: str = "bpe") -> dict:
    if model_type not in MODEL_TYPES:
        raise ValueError(f"SentencePiece model_type must be one of {MODEL_TYPES}, got {model_type!r}.")
    return dict(
        model_type=model_type,
        vocab_size=vocab_size,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1,  # T5 ids
        byte_fallback=True,
        split_digits=True,
        normalization_rule_name="nfkc",  # identity on ASCII; keeps newlines
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        character_coverage=1.0,
        max_sentence_length=1 << 16,
        num_threads=2,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        minloglevel=2,
    )


def train_sentencepiece(lines: Sequence[str], vocab_size: int = DEFAULT_VOCAB_SIZE, model_type: str = "bpe") -> bytes:
    """Trains a SentencePiece model on `lines` and returns its serialized proto."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=buf,
                                   **_trainer_options(vocab_size, model_type))
    return buf.getvalue()


def _corpus_key(lines: Sequence[str], vocab_size: int, model_type: str = "bpe") -> str:
    h = hashlib.sha256()
    h.update(json.dumps(_trainer_options(vocab_size, model_type), sort_keys=True).encode())
    for line in lines:
        h.update(line.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:16]


def trained_sentencepiece_model(corpus: Corpus, vocab_size: int = DEFAULT_VOCAB_SIZE, seed: int = 0,
                                cache_dir: str | None = None, model_type: str = "bpe") -> str:
    """Path of the SentencePiece model trained on `corpus.lines(seed)`; trains and caches it on first use.

    The file name carries the corpus name, the size and a hash of the lines and the trainer options; a unigram
    model (T5's kind) also carries "unigram", so the bpe models keep the names (and keys) they always had.
    """
    lines = list(corpus.lines(seed))
    key = _corpus_key(lines, vocab_size, model_type)
    directory = os.path.join(cache_dir or cache_root(), "vocab")
    os.makedirs(directory, exist_ok=True)
    kind = "" if model_type == "bpe" else f"{model_type}_"
    path = os.path.join(directory, f"{corpus.name}_spm_{kind}{vocab_size}_{key}.model")
    if os.path.exists(path):
        return path
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be training the same model
        try:
            if os.path.exists(path):
                return path
            start = time.time()
            proto = train_sentencepiece(lines, vocab_size, model_type)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".spm_", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(proto)
            os.replace(tmp, path)  # atomic publish
            logger.info("Trained the %s-corpus SentencePiece %s model (%d lines, vocab %d) in %.1fs: %s",
                        corpus.name, model_type, len(lines), vocab_size, time.time() - start, path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return path


@gin.configurable
def get_vocabulary(sentencepiece_model_path: str | None = None, *, corpus: Corpus | None = None,
                   extra_ids: int = DEFAULT_EXTRA_IDS, vocab_size: int = DEFAULT_VOCAB_SIZE, seed: int = 0,
                   cache_dir: str | None = None, model_type: str = "bpe") -> seqio.SentencePieceVocabulary:
    """The seqio vocabulary: `sentencepiece_model_path` if given, else the cached model trained on `corpus`.

    Args:
      sentencepiece_model_path: a SentencePiece .model file (local or any tf.io.gfile path). None trains (once)
        a model on `corpus`.
      corpus: what to train on without a path (registration.register_all passes the generated corpus).
      extra_ids: sentinel ids appended after the pieces (T5 uses 100).
      vocab_size, seed: the trained model's size and the corpus seed (ignored with a path).
      cache_dir: where the trained model is cached (default $FLAN_MIX_CACHE or ~/.cache/flan_mix).
      model_type: "bpe" (the default vocabulary) or "unigram" (T5's kind; the 32k Flan vocabulary).
    """
    if sentencepiece_model_path:
        import tensorflow as tf

        if not tf.io.gfile.exists(sentencepiece_model_path):
            raise FileNotFoundError(
                f"SentencePiece model file not found: '{sentencepiece_model_path}' "
                "(get_vocabulary.sentencepiece_model_path). Point the gin binding at an existing .model file, or "
                "leave it unset (None) to train a vocabulary on the generated corpus.")
        path = sentencepiece_model_path
    elif corpus is None:
        raise ValueError("get_vocabulary needs a SentencePiece model file (get_vocabulary.sentencepiece_model_path) "
                         "or a corpus to train one on; flan_mix.data.registration.register_all() passes the "
                         "generated corpus.")
    else:
        path = trained_sentencepiece_model(corpus, vocab_size=vocab_size, seed=seed, cache_dir=cache_dir,
                                           model_type=model_type)
    vocab = seqio.SentencePieceVocabulary(path, extra_ids=extra_ids)
    try:
        vocab.tokenizer  # load now, so a corrupt file fails here with its name
    except Exception as e:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f"Could not load SentencePiece model '{path}': {e}. Is it a SentencePiece .model file?") \
            from e
    return vocab
