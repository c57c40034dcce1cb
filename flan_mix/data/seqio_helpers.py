"""seqio pieces both collections use: the metric and postprocessors of generative tasks, and lean versions of
seqio's tokenize / append_eos_after_trim preprocessors."""
from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import seqio
import tensorflow as tf

from flan_mix.data import templates

# Per-task shuffle buffer. The sources already read in a seeded random order, so a small buffer only has to
# vary the order between epochs; a big one would tokenize every task's whole buffer before batch one.
SHUFFLE_BUFFER_SIZE = 64


def _normalize(text: Any) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    return " ".join(str(text).split())


def exact_match(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """Percentage of predictions equal to their target (whitespace-normalized). seqio metric_fn."""
    if len(targets) != len(predictions):
        raise ValueError(f"exact_match: {len(targets)} targets but {len(predictions)} predictions.")
    if not targets:
        return {"exact_match": 0.0}
    hits = sum(_normalize(t) == _normalize(p) for t, p in zip(targets, predictions))
    return {"exact_match": 100.0 * hits / len(targets)}


def strip_postprocess(output: Any, example: Mapping | None = None, is_target: bool = False) -> str:
    del example, is_target
    return _normalize(output)


def cot_answer_postprocess(output: Any, example: Mapping | None = None, is_target: bool = False) -> str:
    """The answer of a CoT output (the text of its answer sentence); the whole output if it has none."""
    del example, is_target
    text = _normalize(output)
    answer = templates.extract_cot_answer(text)
    return text if answer is None else answer


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
