"""Rendering a task's raw examples into prompts: a bounded Python generator over the source's examples.

Each raw example is adapted to its template family schema (flan_adapters), then rendered with a seed derived
from the registration seed and the example's content, so the same example renders the same way on any number of
hosts. Few-shot exemplars come from a small window of neighbouring examples of the same stream (NIv2: the task's
positive examples). Input inversion happens per example with probability RenderSpec.inversion_weight. Memory
is bounded by the window, whatever the data size.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import random
import zlib
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import numpy as np

from flan_mix.data import templates
from flan_mix.data.flan import flan_adapters

logger = logging.getLogger(__name__)

OUTPUT_KEYS = ("inputs", "targets", "task_name", "source", "template_id", "template_type")
MAX_EXEMPLARS = 3  # few-shot: 1..MAX_EXEMPLARS exemplars
_HISTORY = 8  # few-shot window: examples already emitted
_LOOKAHEAD = 2  # few-shot window: examples read ahead (so the first example has exemplars too)


@dataclasses.dataclass(frozen=True)
class RenderSpec:
    task: str  # catalog task name
    source: str  # catalog source (FLAN, T0, NIv2, CoT, Dialog)
    family: str
    template_type: str
    inversion_weight: float  # probability that an example renders input-inverted (0: never)
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
    window = RenderWindow(spec, adapter, encoders, max_input_tokens)
    for raw in raw_examples:
        rec = window.push(raw)
        if rec is not None:
            yield rec
    yield from window.drain()
    window.log_counts()


class RenderWindow:
    """render_stream as a state machine: push raw examples in (each gives at most one rendered record), drain()
    at the end of the stream.

    Few-shot tasks (not NIv2) draw exemplars from a window: up to _HISTORY examples already emitted and
    _LOOKAHEAD read ahead. The window is the renderer's only state: keys() names its examples by the key each
    was pushed with, and restore() refills it, so a stream can be resumed exactly (flan_mix.data.flan.streaming).
    """

    def __init__(self, spec: RenderSpec, adapter: Callable, encoders: Optional[Encoders] = None,
                 max_input_tokens: Optional[int] = None):
        self.spec, self.adapter, self.encoders, self.max_input_tokens = spec, adapter, encoders, max_input_tokens
        self.windowed = spec.template_type.startswith("fs_") and not spec.is_niv2
        self.history: collections.deque = collections.deque(maxlen=_HISTORY)
        self.ahead: collections.deque = collections.deque()
        self.counts = collections.Counter()

    def _adapt(self, raw, key):
        seed = _content_seed(self.spec, raw)
        ex = self.adapter(raw, random.Random(seed))
        return None if ex is None else (ex, seed, raw, key)

    def push(self, raw: Mapping[str, Any], key: Any = None) -> Optional[dict]:
        item = self._adapt(raw, key)
        if item is None:
            self.counts["skipped"] += 1
            return None
        if not self.windowed:
            return self._emit(item, [])
        self.ahead.append(item)
        if len(self.ahead) <= _LOOKAHEAD:
            return None
        return self._emit_next()

    def _emit_next(self) -> dict:
        q = self.ahead.popleft()
        rec = self._emit(q, list(self.history) + list(self.ahead))
        self.history.append(q)
        return rec

    def drain(self) -> Iterator[dict]:
        while self.ahead:
            yield self._emit_next()

    def keys(self) -> dict[str, list]:
        """The keys of the window's examples: what restore() needs to rebuild it."""
        return {"history": [item[3] for item in self.history], "ahead": [item[3] for item in self.ahead]}

    def restore(self, history: Sequence[tuple[Mapping[str, Any], Any]],
                ahead: Sequence[tuple[Mapping[str, Any], Any]]) -> None:
        """Refills the window from (raw example, key) pairs, as keys() named them (all were adapted before)."""
        self.history.extend(self._adapt(raw, key) for raw, key in history)
        self.ahead.extend(self._adapt(raw, key) for raw, key in ahead)

    def _emit(self, item, pool) -> dict:
        spec, counts = self.spec, self.counts
        ex, seed, raw, _ = item
        rng = random.Random(seed ^ 0x5EED)
        # No draw at weight 0, so that the exemplar draws below stay those of a task without inversion.
        inverted = spec.inversion_weight > 0 and rng.random() < spec.inversion_weight
        exemplars: list = []
        if spec.template_type.startswith("fs_"):
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
        encoders, max_input_tokens = self.encoders, self.max_input_tokens
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

    def log_counts(self) -> None:
        spec, counts = self.spec, self.counts
        if counts["skipped"]:
            logger.warning("Task %r (%s): skipped %d raw example(s) without a usable label/answer; rendered %d.",
                           spec.task, spec.template_type, counts["skipped"], counts["emitted"])
        if counts["shortened"]:
            logger.info("Task %r (%s): dropped %d few-shot exemplar(s) so that prompts fit %d input tokens.",
                        spec.task, spec.template_type, counts["shortened"], self.max_input_tokens)
