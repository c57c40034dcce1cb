"""seqio pieces both collections use: lean versions of seqio's tokenize / append_eos_after_trim preprocessors.

Tasks carry no metric_fns or postprocess_fn: scoring lives in flan_mix.evaluation (one exact_match)."""
from __future__ import annotations

import functools
from typing import Mapping, Optional, Sequence

import numpy as np
import seqio
import tensorflow as tf

from flan_mix.data import task_streams


# Per-task shuffle buffer. The sources already read in a seeded random order, so a small buffer only has to
# vary the order between epochs; a big one would tokenize every task's whole buffer before batch one.
SHUFFLE_BUFFER_SIZE = 64


# seqio's own tokenize / append_eos_after_trim implementations, mapped sequentially and without AutoGraph. A
# mixture has ~100 generated tasks: seqio's stock versions (AutoGraph tracing, 256 parallel calls each) made
# building and starting the mixture's pipeline take over a minute on 2 cores; these take seconds.
def tokenize(dataset: tf.data.Dataset, output_features: Mapping[str, seqio.Feature],
             copy_pretokenized: bool = True) -> tf.data.Dataset:
    """seqio.preprocessors.tokenize (inputs/targets -> ids, *_pretokenized copies kept), mapped sequentially."""
    fn = functools.partial(seqio.preprocessors.tokenize_impl, output_features=output_features,
                           copy_pretokenized=copy_pretokenized, with_eos=False)
    return dataset.map(tf.autograph.experimental.do_not_convert(fn))


def append_eos_after_trim(dataset: tf.data.Dataset, output_features: Mapping[str, seqio.Feature],
                          sequence_length: Mapping[str, int] | None = None) -> tf.data.Dataset:
    """seqio.preprocessors.append_eos_after_trim: trims to the feature length minus one, then appends EOS."""
    fn = functools.partial(seqio.preprocessors.append_eos_after_trim_impl, output_features=output_features,
                           sequence_length=sequence_length)
    return dataset.map(tf.autograph.experimental.do_not_convert(fn))


class PythonTokenizer:
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

    def pair(self, inputs: str, targets: str):
        """(inputs, targets) int32 ids of two texts, trimmed and ending in EOS."""
        return (np.asarray(self.finish(self.encoders["inputs"](inputs), "inputs"), np.int32),
                np.asarray(self.finish(self.encoders["targets"](targets), "targets"), np.int32))


class InMemoryTask(seqio.Task):
    """A seqio Task over text records held in memory ({"inputs", "targets"} strings per split) whose training
    stream is also plain Python and indexable (a pipeline.TokenStreamTask): position i of an epoch's seeded order
    is records[order[i]], tokenized on the way out. So the stream resumes at any example without re-reading
    (flan_mix.data.task_streams). seqio.get_dataset on the task still works (the source's tf.data path)."""

    def __init__(self, name: str, *, records_fn, **kwargs):
        super().__init__(name, **kwargs)
        self._records_fn = records_fn  # split -> sequence of {"inputs": str, "targets": str}

    def token_stream(self, *, sequence_length, split: str = "train", shuffle: bool = True, seed=None,
                     shard_info=None, num_epochs=1, state=None):
        if split not in self.splits:
            raise ValueError(f"Task '{self.name}' has no split '{split}'; its splits are {list(self.splits)}.")
        records = self._records_fn(split)
        tok = PythonTokenizer(self.output_features, sequence_length)
        return task_streams.IndexedStream(
            len(records), lambda positions: [tok.pair(records[p]["inputs"], records[p]["targets"]) for p in positions],
            seed=seed, shuffle=shuffle, shard_info=shard_info, num_epochs=num_epochs, state=state)
