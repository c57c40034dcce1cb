"""HF tokenizers behind seqio's Vocabulary interface, and a loader for a model's tokenizer directory.

HfTokenizerVocabulary loads a ``tokenizer.json`` (the `tokenizers` library's format, which every HF fast
tokenizer saves: Llama, T5, Mistral, ...) so a Flan mixture can be tokenized for an imported model with exactly
the ids the model was trained on. vocabulary_from_dir() picks ``tokenizer.json`` in a model directory, or else a
SentencePiece ``spiece.model`` / ``tokenizer.model`` (seqio.SentencePieceVocabulary).

Special tokens: the tokenizer.json does not say which of its tokens is EOS, BOS or PAD; HF keeps that in
``tokenizer_config.json`` / ``special_tokens_map.json`` beside it. They are read from there when present, else
recognized by their usual names (``</s>``, ``<|end_of_text|>``, ``<eos>``, ...), and can always be named
explicitly. Llama: bos ``<s>`` 1, eos ``</s>`` 2, unk ``<unk>`` 0. T5: pad ``<pad>`` 0, eos ``</s>`` 1, unk 2.

Encoding never adds special tokens (no BOS from a Llama post-processor): seqio appends EOS itself, and the
decoder layouts start each segment with their own BOS id. Padding and truncation saved in a tokenizer.json
are switched off, since seqio trims and pads.

seqio pads with id 0 and treats 0 as padding (loss weights, packing), so id 0 must be a special token that
text never encodes to (T5's ``<pad>``, Llama's ``<unk>``); a tokenizer whose id 0 is an ordinary token
(GPT-2's ``!``) is refused with a ValueError rather than having that token silently dropped from the loss.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping, Optional, Sequence

import gin
import numpy as np
import seqio
import tensorflow as tf

TOKENIZER_JSON = "tokenizer.json"
SENTENCEPIECE_FILES = ("spiece.model", "tokenizer.model")  # T5's and Llama's names
_CONFIG_FILES = ("tokenizer_config.json", "special_tokens_map.json")  # later ones win, as in transformers

# Usual names of special tokens, for a tokenizer.json without a tokenizer_config.json.
_USUAL_NAMES = {
    "eos": ("</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>", "<|eot_id|>"),
    "bos": ("<s>", "<|begin_of_text|>", "<bos>"),
    "pad": ("<pad>", "<|pad|>"),
    "unk": ("<unk>", "<|unk|>"),
}


def _token_content(value: Any) -> Optional[str]:
    """A special-token entry of a HF config: a string or a serialized AddedToken ({"content": ...})."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _configured_tokens(directory: str) -> dict[str, str]:
    """{"eos": "</s>", ...} from tokenizer_config.json / special_tokens_map.json in `directory`, if any."""
    found: dict[str, str] = {}
    for name in _CONFIG_FILES:
        path = os.path.join(directory, name)
        if not tf.io.gfile.exists(path):
            continue
        with tf.io.gfile.GFile(path, "r") as f:
            try:
                config = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} is not valid JSON ({e}); fix or remove it.") from e
        for kind in _USUAL_NAMES:
            content = _token_content(config.get(f"{kind}_token"))
            if content:
                found[kind] = content
    return found


def _import_tokenizers():
    try:
        import tokenizers
    except ImportError as e:  # not a hard dependency: only HF tokenizer directories need it
        raise ImportError("Loading a tokenizer.json needs the `tokenizers` package: pip install tokenizers") from e
    return tokenizers


class HfTokenizerVocabulary(seqio.Vocabulary):
    """A seqio Vocabulary over a HF fast tokenizer (tokenizer.json), through the `tokenizers` library.

    Args:
      tokenizer_file: path of a tokenizer.json (local or any tf.io.gfile path).
      eos_token, bos_token, pad_token, unk_token: special tokens by their text, overriding what the files
        beside tokenizer_file say (see the module docstring); "" means "this tokenizer has none".
      extra_ids: seqio's extra ids appended after the tokenizer's ids (0 for HF tokenizers: T5's sentinels are
        already in its tokenizer.json).
    """

    def __init__(self, tokenizer_file: str, *, eos_token: Optional[str] = None, bos_token: Optional[str] = None,
                 pad_token: Optional[str] = None, unk_token: Optional[str] = None, extra_ids: int = 0):
        tokenizers = _import_tokenizers()
        self._file = tokenizer_file
        with tf.io.gfile.GFile(tokenizer_file, "rb") as f:
            raw = f.read()
        self._digest = hashlib.sha256(raw).hexdigest()
        try:
            spec = json.loads(raw)
            self._tokenizer = tokenizers.Tokenizer.from_str(raw.decode("utf-8"))
        except Exception as e:  # noqa: BLE001 - re-raised with the file name
            raise ValueError(f"Could not load HF tokenizer '{tokenizer_file}': {e}. Is it a tokenizers "
                             "tokenizer.json (saved by tokenizers or a transformers fast tokenizer)?") from e
        # seqio trims and pads; a saved truncation or padding setting would change the ids.
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        vocab = self._tokenizer.get_vocab(with_added_tokens=True)
        # Ids may have gaps (added tokens placed past the model's vocabulary): the size is the largest id + 1.
        self._size = max(vocab.values()) + 1
        self._ids = self._special_ids(spec, vocab, os.path.dirname(tokenizer_file),
                                      {"eos": eos_token, "bos": bos_token, "pad": pad_token, "unk": unk_token})
        if self._ids["eos"] is None:
            raise ValueError(f"No EOS token found for '{tokenizer_file}': no eos_token in "
                             f"{' or '.join(_CONFIG_FILES)} beside it and none of {list(_USUAL_NAMES['eos'])} in "
                             "its vocabulary. Name it: HfTokenizerVocabulary(..., eos_token='...').")
        self._check_id_zero(spec)
        super().__init__(extra_ids=extra_ids)

    def _special_ids(self, spec: Mapping, vocab: Mapping[str, int], directory: str,
                     explicit: Mapping[str, Optional[str]]) -> dict[str, Optional[int]]:
        configured = _configured_tokens(directory) if directory else {}
        model = spec.get("model") or {}
        ids: dict[str, Optional[int]] = {}
        for kind, names in _USUAL_NAMES.items():
            if explicit[kind] is not None:
                token = explicit[kind] or None
                where = f"{kind}_token={explicit[kind]!r}"
            elif kind in configured:
                token, where = configured[kind], f"{kind}_token in {directory}/{'|'.join(_CONFIG_FILES)}"
            elif kind == "unk" and model.get("unk_token"):
                token, where = model["unk_token"], "the tokenizer model's unk_token"
            elif kind == "unk" and model.get("unk_id") is not None:  # Unigram names its unk by id
                ids[kind] = int(model["unk_id"])
                continue
            else:
                token, where = next((n for n in names if n in vocab), None), "its usual names"
            if token is not None and token not in vocab:
                raise ValueError(f"{kind} token {token!r} (from {where}) is not in the vocabulary of "
                                 f"'{self._file}'.")
            ids[kind] = vocab[token] if token is not None else None
        return ids

    def _check_id_zero(self, spec: Mapping) -> None:
        special = {t["id"] for t in spec.get("added_tokens", []) if t.get("special")}
        special |= {i for k, i in self._ids.items() if k != "eos" and i is not None}
        if 0 not in special or self._ids["eos"] == 0:
            raise ValueError(
                f"Id 0 of '{self._file}' is {self._tokenizer.id_to_token(0)!r}, "
                f"{'the EOS token' if self._ids['eos'] == 0 else 'an ordinary token'}; seqio and flan_mix pad "
                "with id 0 and give it no loss, so this tokenizer's text would lose that token. Use a tokenizer "
                "whose id 0 is a special token (pad or unk), as T5's and Llama's are.")

    # --- ids ---------------------------------------------------------------------------------------------------
    @property
    def tokenizer(self):
        """The `tokenizers.Tokenizer`."""
        return self._tokenizer

    @property
    def tokenizer_file(self) -> str:
        return self._file

    @property
    def eos_id(self) -> Optional[int]:
        return self._ids["eos"]

    @property
    def bos_id(self) -> Optional[int]:
        return self._ids["bos"]

    @property
    def unk_id(self) -> Optional[int]:
        return self._ids["unk"]

    @property
    def pad_id(self) -> int:
        # The id the batches are padded with: always seqio's 0 (its converters and our packing pad with 0). The
        # constructor checked that 0 is a special token; for T5 it is "<pad>", for Llama "<unk>".
        return seqio.vocabularies.PAD_ID

    @property
    def tokenizer_pad_id(self) -> Optional[int]:
        """The tokenizer's own pad token id (None for Llama), which may differ from pad_id."""
        return self._ids["pad"]

    @property
    def _base_vocab_size(self) -> int:
        return self._size

    # --- python ------------------------------------------------------------------------------------------------
    def _encode(self, s: str) -> Sequence[int]:
        return self._tokenizer.encode(s, add_special_tokens=False).ids

    def _decode(self, ids) -> str:
        # Special tokens (EOS, padding) are not text, as in SentencePiece's DecodeIds; ids past the tokenizer
        # (seqio's extra ids, a padded model vocabulary) have no text either.
        return self._tokenizer.decode([int(i) for i in ids if 0 <= int(i) < self._size], skip_special_tokens=True)

    # --- tf ----------------------------------------------------------------------------------------------------
    # The `tokenizers` library has no TensorFlow op (tf_text covers SentencePiece and WordPiece, not HF's
    # BPE/Unigram with their normalizers and pre-tokenizers), so the TF path calls the same Rust tokenizer
    # through tf.numpy_function: the ids are identical to the Python path by construction. numpy_function rather
    # than py_function because it hands over plain numpy bytes (no eager tensors) and runs inside tf.data's
    # graph-mode map. The cost: it holds the GIL and cannot be serialized into a SavedModel graph.
    def _encode_np(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        texts = [t.decode("utf-8") for t in np.reshape(s, [-1])]
        encoded = self._tokenizer.encode_batch(texts, add_special_tokens=False)
        ids = [np.asarray(e.ids, np.int32) for e in encoded]
        flat = np.concatenate(ids) if ids else np.zeros([0], np.int32)
        return flat.astype(np.int32), np.asarray([len(i) for i in ids], np.int64)

    def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
        """A scalar string -> int32 [n]; a 1-D batch of strings -> int32 RaggedTensor [batch, None]."""
        s = tf.convert_to_tensor(s, tf.string)
        flat, lengths = tf.numpy_function(self._encode_np, [s], (tf.int32, tf.int64), stateful=False)
        flat.set_shape([None])
        if s.shape.rank == 0:
            return flat
        if s.shape.rank != 1:
            raise ValueError(f"encode_tf takes a scalar or 1-D string tensor, got shape {s.shape}.")
        lengths.set_shape([s.shape[0]])
        return tf.RaggedTensor.from_row_lengths(flat, lengths)

    def _decode_np(self, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        rows = np.split(ids, np.cumsum(lengths)[:-1]) if len(lengths) else []
        return np.asarray([self._decode(r).encode("utf-8") for r in rows], dtype=object)

    def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
        """int [n] -> a scalar string; int [batch, n] or a RaggedTensor [batch, None] -> strings [batch]."""
        if isinstance(ids, tf.RaggedTensor):
            flat, lengths = ids.flat_values, ids.row_lengths()
        else:
            ids = tf.convert_to_tensor(ids)
            if ids.shape.rank not in (1, 2):
                raise ValueError(f"decode_tf takes int ids of rank 1 or 2, got shape {ids.shape}.")
            rows = ids[None] if ids.shape.rank == 1 else ids
            flat = tf.reshape(rows, [-1])
            lengths = tf.fill([tf.shape(rows)[0]], tf.cast(tf.shape(rows)[1], tf.int64))
        texts = tf.numpy_function(self._decode_np, [tf.cast(flat, tf.int64), tf.cast(lengths, tf.int64)],
                                  tf.string, stateful=False)
        if not isinstance(ids, tf.RaggedTensor) and ids.shape.rank == 1:
            return tf.reshape(texts, [])
        return tf.reshape(texts, [-1])

    # --- identity ----------------------------------------------------------------------------------------------
    def __eq__(self, other) -> bool:
        # Same tokenizer file content and the same special ids: seqio compares the vocabularies of a mixture's
        # tasks, which may each have loaded the file.
        return (isinstance(other, HfTokenizerVocabulary) and self._digest == other._digest
                and self._ids == other._ids and self.extra_ids == other.extra_ids)

    def __hash__(self) -> int:
        return hash((self._digest, self.extra_ids))

    def __str__(self) -> str:
        return (f"HfTokenizerVocabulary(file={self._file}, sha256={self._digest[:12]}, size={self.vocab_size}, "
                f"eos={self.eos_id}, bos={self.bos_id}, unk={self.unk_id})")


def _sentencepiece_extra_ids(directory: str) -> int:
    # HF's T5 adds its 100 sentinels on top of spiece.model and records the count as "extra_ids" in
    # tokenizer_config.json; seqio adds them as extra ids. Llama's tokenizer.model has none.
    path = os.path.join(directory, _CONFIG_FILES[0])
    if not tf.io.gfile.exists(path):
        return 0
    with tf.io.gfile.GFile(path, "r") as f:
        try:
            return int(json.load(f).get("extra_ids", 0) or 0)
        except (json.JSONDecodeError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: cannot read 'extra_ids' ({e}).") from e


@gin.configurable
def vocabulary_from_dir(path: str, *, extra_ids: Optional[int] = None, **special_tokens: str) -> seqio.Vocabulary:
    """The vocabulary of a model directory (e.g. an HF checkpoint): tokenizer.json through `tokenizers`, else a
    SentencePiece spiece.model or tokenizer.model through seqio.SentencePieceVocabulary.

    Args:
      path: the directory (local or any tf.io.gfile path).
      extra_ids: seqio extra ids. None: 0 for tokenizer.json (its added tokens are in it already); for a
        SentencePiece file, tokenizer_config.json's "extra_ids" if present (HF T5: 100), else 0.
      **special_tokens: eos_token= / bos_token= / pad_token= / unk_token= for a tokenizer.json whose files do
        not name them.
    """
    if not tf.io.gfile.isdir(path):
        raise FileNotFoundError(f"Tokenizer directory not found: '{path}' (vocabulary_from_dir.path).")
    json_path = os.path.join(path, TOKENIZER_JSON)
    if tf.io.gfile.exists(json_path):
        return HfTokenizerVocabulary(json_path, extra_ids=extra_ids or 0, **special_tokens)
    for name in SENTENCEPIECE_FILES:
        model_path = os.path.join(path, name)
        if tf.io.gfile.exists(model_path):
            if special_tokens:
                raise ValueError(f"{sorted(special_tokens)} apply to a tokenizer.json; '{model_path}' is a "
                                 "SentencePiece model, which names its own special tokens.")
            n_extra = _sentencepiece_extra_ids(path) if extra_ids is None else extra_ids
            vocab = seqio.SentencePieceVocabulary(model_path, extra_ids=n_extra)
            try:
                vocab.tokenizer  # load now, so a corrupt file fails here with its name
            except Exception as e:  # noqa: BLE001 - re-raised with the file name
                raise ValueError(f"Could not load SentencePiece model '{model_path}': {e}.") from e
            return vocab
    present = sorted(tf.io.gfile.listdir(path))[:20]
    raise FileNotFoundError(
        f"No tokenizer in '{path}': looked for {TOKENIZER_JSON} (HF tokenizers) and "
        f"{' / '.join(SENTENCEPIECE_FILES)} (SentencePiece); the directory holds {present}. Point it at the "
        "directory the model's tokenizer was saved to (tokenizer.save_pretrained).")


def check_vocabulary_fits(vocabulary: seqio.Vocabulary | int, model_vocab_size: int, *,
                          model_name: str = "the model") -> None:
    """Raises ValueError when the tokenizer has more ids than the model's embedding table has rows.

    A smaller tokenizer is fine (T5 pads its embedding to 32128 for 32100 ids; the extra rows are never
    produced as inputs, and decoding masks them). vocabulary: a seqio Vocabulary or its size.
    """
    size = vocabulary if isinstance(vocabulary, int) else vocabulary.vocab_size
    if size > model_vocab_size:
        name = vocabulary if isinstance(vocabulary, int) else str(vocabulary)
        raise ValueError(f"The tokenizer has {size} ids ({name}) but {model_name}'s embedding has only "
                         f"{model_vocab_size} rows; ids >= {model_vocab_size} would index past it. Use the "
                         "model's own tokenizer, or a model whose vocab_size is at least the tokenizer's.")


def copy_tokenizer_files(source: str, destination: str) -> list[str]:
    """Copies a model directory's tokenizer files (tokenizer.json, spiece.model / tokenizer.model and
    their config files) into `destination`; returns the names copied ([] when there are none).

    `run.py convert --from_hf` keeps an imported model's tokenizer beside its checkpoint this way,
    so evaluating or fine-tuning it tokenizes with the tokenizer the weights were trained with.
    """
    names = [n for n in (TOKENIZER_JSON, *SENTENCEPIECE_FILES, *_CONFIG_FILES)
             if tf.io.gfile.exists(os.path.join(source, n))]
    if not any(n in names for n in (TOKENIZER_JSON, *SENTENCEPIECE_FILES)):
        return []
    tf.io.gfile.makedirs(destination)
    for name in names:
        tf.io.gfile.copy(os.path.join(source, name), os.path.join(destination, name), overwrite=True)
    return names
