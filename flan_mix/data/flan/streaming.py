"""The Flan 2022 seqio Task: rendered and tokenized in Python, on the seqio path (a preprocessor over the source
dataset) and on the streaming path (StreamingTask.token_stream, what the training mixture reads)."""

from __future__ import annotations

from typing import Callable, Iterator, Mapping, Optional, Sequence

import numpy as np
import seqio
import tensorflow as tf

from flan_mix.data import seqio_helpers, task_streams, tf_errors
from flan_mix.data.flan.rendering import OUTPUT_KEYS, RenderSpec, RenderWindow, render_stream
from flan_mix.data.flan.sources.base import ExampleSource, IndexedDataSource, dataset_rows

_CHUNK = 256  # examples per Python -> tf.data crossing on the seqio path

_TEXT_KEYS = OUTPUT_KEYS + ("inputs_pretokenized", "targets_pretokenized")


def render_preprocessor(dataset: tf.data.Dataset, sequence_length: Optional[Mapping[str, int]] = None,
                         output_features: Optional[Mapping[str, seqio.Feature]] = None, *, spec: RenderSpec,
                         adapter: Callable) -> tf.data.Dataset:
    """Source dataset -> rendered and tokenized examples (a chunked Python generator over the source).

    Output: inputs/targets int32 token ids (trimmed to sequence_length with EOS last, as seqio's
    append_eos_after_trim does), their *_pretokenized text, and the metadata keys.
    Tokenizing here, in Python, is ~5x cheaper per example than a tf.data map of the SentencePiece op.
    This is the seqio path (seqio.get_dataset, eval, inspect); training streams use StreamingTask.token_stream.
    """
    tok = seqio_helpers.PythonTokenizer(output_features, sequence_length)
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
        for rec in render_stream(dataset_rows(dataset), spec, adapter, tok.encoders, tok.limit["inputs"]):
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

    ds = tf_errors.from_generator(gen, output_signature=signature).unbatch()
    return ds.map(tf.autograph.experimental.do_not_convert(unpad))


class StreamingTask(seqio.Task):
    """A seqio Task that can also stream its (inputs, targets) token ids in plain Python.

    Why: a seqio Mixture builds one tf.data pipeline per task up front; for the NIv2 submixture (3,108 tasks)
    that took ~5 MB and 0.2 s per task to build and ~10 MB more per task once iterating (>12 GB before the
    first batch, measured). flan_mix.data.pipeline mixes these tasks in Python instead and opens a task's
    stream only when the task is first drawn; an open stream holds its source's position index and a window of
    a few examples. seqio.get_dataset on the task still works (the render_preprocessor path).
    """

    def __init__(self, name: str, *, spec: RenderSpec, adapter: Callable, source: ExampleSource, **kwargs):
        if not isinstance(source, ExampleSource):
            raise TypeError(f"Task {name!r}: its source {type(source).__name__} is not an ExampleSource "
                            "(flan_mix.data.flan.sources.base): it needs check_available and iter_examples.")
        super().__init__(name, source=source, **kwargs)
        self.spec = spec
        self.adapter = adapter

    def token_stream(self, *, sequence_length: Optional[Mapping[str, int]], split: str = "train",
                     shuffle: bool = True, seed: Optional[int] = None,
                     shard_info: Optional[seqio.ShardInfo] = None, num_epochs: Optional[int] = 1,
                     state: Optional[dict] = None) -> task_streams.TaskStream:
        """(inputs, targets) int32 ids, rendered exactly as the seqio path renders them (order aside: no
        shuffle buffer here; the sources already read in a seeded random order); resumable from `state`."""
        tok = seqio_helpers.PythonTokenizer(self.output_features, sequence_length)
        if isinstance(self.source, IndexedDataSource):
            return _IndexedRenderStream(self, tok, split=split, shuffle=shuffle, seed=seed, shard_info=shard_info,
                                        num_epochs=num_epochs, state=state)

        def pairs() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            # A source without positions (TFDS through tf.data): resumable only by re-reading (ReplayStream).
            raws = self.source.iter_examples(split, shuffle=shuffle, seed=seed, shard_info=shard_info,
                                             num_epochs=num_epochs)
            for rec in render_stream(raws, self.spec, self.adapter, tok.encoders, tok.limit["inputs"]):
                yield _token_pair(tok, rec)

        return task_streams.ReplayStream(pairs, self.name, state)


def _token_pair(tok: seqio_helpers.PythonTokenizer, rec: dict) -> tuple[np.ndarray, np.ndarray]:
    return (np.asarray(tok.finish(rec["inputs_ids"], "inputs"), np.int32),
            np.asarray(tok.finish(rec["targets_ids"], "targets"), np.int32))


class _IndexedRenderStream:
    """A StreamingTask's token stream over a source with positions, resumable without re-reading: the state is
    the source cursor plus the cursors of the few-shot window's examples (RenderWindow.keys()), which are
    fetched again one by one on restore (at most _HISTORY + _LOOKAHEAD of them)."""

    def __init__(self, task: StreamingTask, tok: seqio_helpers.PythonTokenizer, *, split: str, shuffle: bool,
                 seed, shard_info, num_epochs, state: Optional[dict]):
        self._tok = tok
        self._raw = task.source.indexed_stream(split, shuffle=shuffle, seed=seed, shard_info=shard_info,
                                               num_epochs=num_epochs, state=state["raw"] if state else None)
        self._window = RenderWindow(task.spec, task.adapter, tok.encoders, tok.limit["inputs"])
        self._draining: Optional[Iterator[dict]] = None
        if state:
            self._window.restore([(self._raw.example_at(k), k) for k in state["history"]],
                                 [(self._raw.example_at(k), k) for k in state["ahead"]])

    def __iter__(self) -> "_IndexedRenderStream":
        return self

    def __next__(self) -> tuple[np.ndarray, np.ndarray]:
        while self._draining is None:
            raw = next(self._raw, None)
            if raw is None:
                self._draining = self._window.drain()
                break
            rec = self._window.push(raw, self._raw.last_cursor)
            if rec is not None:
                return _token_pair(self._tok, rec)
        try:
            return _token_pair(self._tok, next(self._draining))
        except StopIteration:
            self._window.log_counts()
            raise

    def state(self) -> dict:
        return {"raw": self._raw.state(), **self._window.keys()}
