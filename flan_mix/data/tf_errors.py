"""Errors raised by Python code that runs inside tf.data reach the caller as themselves.

A Python generator behind tf.data.Dataset.from_generator runs in a TensorFlow thread; an exception there comes
out of the iterator as a tf.errors.OpError whose text is a long TensorFlow traceback ending in
``[[PyFunc]] [Op:IteratorGetNext]``, with the useful message (a malformed file's name, line and column) buried
in the middle. :func:`from_generator` keeps the original exception aside and sends a key along with its message
through TensorFlow; :func:`numpy_rows` (the Python side of the iteration) finds the key in the OpError and
raises the original exception, type and message unchanged. Nested pipelines (a generator that iterates another dataset)
pass the original on, because each level iterates with numpy_rows.
"""
from __future__ import annotations

import collections
import itertools
import re
import threading
from typing import Any, Callable, Iterable, Iterator

import tensorflow as tf

_KEY = "flan_mix-kept-error-{}"
_KEY_RE = re.compile(r"flan_mix-kept-error-(\d+)")
_KEEP = 256  # errors kept for the caller; an iteration nobody finishes must not hold errors forever
_kept: collections.OrderedDict[int, BaseException] = collections.OrderedDict()
_lock = threading.Lock()
_ids = itertools.count()


class _KeptError(RuntimeError):
    """What crosses TensorFlow in place of the original exception: its text and the key to the original."""


def _keep(error: Exception) -> _KeptError:
    with _lock:
        key = next(_ids)
        _kept[key] = error
        while len(_kept) > _KEEP:
            _kept.popitem(last=False)
    # The message goes along too: code that iterates the dataset itself still reads it in the OpError.
    return _KeptError(f"{type(error).__name__}: {error} [{_KEY.format(key)}]")


def _take(op_error: tf.errors.OpError) -> BaseException | None:
    match = _KEY_RE.search(op_error.message or "")
    if match is None:
        return None
    with _lock:
        return _kept.pop(int(match.group(1)), None)


def from_generator(generator: Callable[[], Iterable[Any]], output_signature: Any) -> tf.data.Dataset:
    """tf.data.Dataset.from_generator, but an exception of the generator is kept for :func:`numpy_rows`."""

    def guarded():
        try:
            yield from generator()
        except Exception as e:  # noqa: BLE001 - handed to the caller by numpy_rows, unchanged
            raise _keep(e) from None

    return tf.data.Dataset.from_generator(guarded, output_signature=output_signature)


def numpy_rows(dataset: tf.data.Dataset) -> Iterator[Any]:
    """dataset.as_numpy_iterator(), raising an error kept by :func:`from_generator` as the original exception."""
    iterator = dataset.as_numpy_iterator()
    while True:
        try:
            row = next(iterator)
        except StopIteration:
            return
        except tf.errors.OpError as e:
            original = _take(e)
            if original is None:
                raise
            raise original from None
        yield row
