"""Resumable per-task example streams: what makes the training data stream restartable at any batch.

A task stream yields (inputs, targets) token ids and has state(): a small JSON-able value that, passed back
when the stream is opened again, continues right after the last example returned. Two kinds:

- IndexedStream: a source that can fetch examples by position (the generated collection, the CoT/NIv2/HF
  sources). Each epoch reads this host's shard of one seeded permutation; the state is (epoch, offset), so
  resuming reads nothing that was already consumed.
- ReplayStream: anything else (a seqio tf.data pipeline, e.g. a TFDS task). Its state is the number of examples
  consumed, and resuming re-reads and drops them: exact, but it costs time in proportion to the position.
"""
from __future__ import annotations

import logging
from typing import Callable, Iterator, Optional, Protocol, Sequence, runtime_checkable

import numpy as np
import seqio

logger = logging.getLogger(__name__)

Pair = tuple[np.ndarray, np.ndarray]
_EPOCH_SEED_STRIDE = 1_000_003  # epoch e of a stream seeded s reads the order seeded s + stride * e


@runtime_checkable
class TaskStream(Protocol):
    def __next__(self) -> Pair:
        ...

    def state(self) -> dict:
        """JSON-able; opening the task's stream with it continues after the last example returned."""
        ...


def epoch_seed(seed: int, epoch: int) -> int:
    return int(seed) + _EPOCH_SEED_STRIDE * int(epoch)


def epoch_order(num_examples: int, shuffle: bool, seed: int, epoch: int,
                shard_info: Optional[seqio.ShardInfo]) -> np.ndarray:
    """The positions this host reads in one epoch: a permutation seeded by (seed, epoch), then every
    num_shards-th position from shard_info.index."""
    order = (np.random.default_rng(epoch_seed(seed, epoch)).permutation(num_examples) if shuffle
             else np.arange(num_examples))
    if shard_info is not None and shard_info.num_shards > 1:
        order = order[shard_info.index::shard_info.num_shards]
    return order


class IndexedStream:
    """Examples fetched by position, epoch after epoch (num_epochs=None: forever), `chunk` positions at a time.

    examples_at(positions) -> the (inputs, targets) at those positions. state: {"epoch", "offset"} of the next
    example; opening with it computes that epoch's order and fetches from the offset on. Items may be anything
    examples_at returns (token-id pairs, or raw examples for a renderer to consume).
    """

    def __init__(self, num_examples: int, examples_at: Callable[[np.ndarray], Sequence[Pair]], *, seed: int,
                 shuffle: bool, shard_info: Optional[seqio.ShardInfo], num_epochs: Optional[int],
                 state: Optional[dict] = None, chunk: int = 16):
        self._n, self._fetch, self._seed, self._shuffle = num_examples, examples_at, int(seed or 0), shuffle
        self._shard, self._epochs, self._chunk = shard_info, num_epochs, chunk
        self._epoch = int(state["epoch"]) if state else 0
        self._offset = int(state["offset"]) if state else 0
        self._order: Optional[np.ndarray] = None
        self._buffer: list[Pair] = []  # fetched, starting at self._offset
        self.last_cursor: Optional[dict] = None

    def __iter__(self) -> "IndexedStream":
        return self

    def __next__(self) -> Pair:
        if not self._buffer:
            self._fill()
        self.last_cursor = {"epoch": self._epoch, "offset": self._offset}  # of the example returned
        self._offset += 1
        return self._buffer.pop(0)

    def example_at(self, cursor: dict):
        """The example at a cursor (a last_cursor value) of this stream, fetched alone."""
        order = epoch_order(self._n, self._shuffle, self._seed, int(cursor["epoch"]), self._shard)
        offset = int(cursor["offset"])
        return self._fetch(order[offset:offset + 1])[0]

    def _fill(self) -> None:
        while True:
            if self._epochs is not None and self._epoch >= self._epochs:
                raise StopIteration
            if self._order is None:
                self._order = epoch_order(self._n, self._shuffle, self._seed, self._epoch, self._shard)
                if not len(self._order):  # this host's shard is empty: nothing to repeat
                    self._epochs = self._epoch
                    raise StopIteration
            if self._offset < len(self._order):
                self._buffer = list(self._fetch(self._order[self._offset:self._offset + self._chunk]))
                return
            self._epoch, self._offset, self._order = self._epoch + 1, 0, None

    def state(self) -> dict:
        return {"epoch": self._epoch, "offset": self._offset}


class ReplayStream:
    """Wraps an iterator that cannot seek; state {"consumed": n}. Opening with a state skips n examples (logged:
    the cost grows with the position)."""

    def __init__(self, open_fn: Callable[[], Iterator[Pair]], name: str, state: Optional[dict] = None):
        self._it = open_fn()
        self._consumed = 0
        skip = int(state["consumed"]) if state else 0
        if skip:
            logger.info("task %s cannot seek: re-reading %d example(s) to resume its stream.", name, skip)
            for _ in range(skip):
                if next(self._it, None) is None:
                    break
                self._consumed += 1

    def __iter__(self) -> "ReplayStream":
        return self

    def __next__(self) -> Pair:
        pair = next(self._it)
        self._consumed += 1
        return pair

    def state(self) -> dict:
        return {"consumed": self._consumed}

    def close(self) -> None:
        close = getattr(self._it, "close", None)
        if close is not None:
            close()
