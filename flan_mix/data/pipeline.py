"""seqio dataset -> host-local numpy batches for JAX.

get_batches() gives each host its share of a global batch: token_stream() reads this host's shard of every task
(seqio.ShardInfo), mixes the tasks in Python by their seqio mixture rates (a task's stream opens when it is first
drawn), and packs the examples first-fit into rows, global_batch_size // num_shards rows per batch. The layout
picks the rows' features: "encoder_decoder" (flan_mix.data.packing, seqio.EncDecFeatureConverter's features),
"decoder" or "prefix_lm" (flan_mix.data.decoder_packing, seqio's decoder converters' features). With the same
seed and the same number of shards the batch sequence is identical on every run. The stream is resumable: its
state() after batch N (mixture RNG, each open task's position, the packer's open rows) restarts it at batch
N + 1 without re-reading anything (get_batches(state=...)); start_batch=N regenerates and drops N batches.

get_eval_examples() gives the examples of one task in order with their pretokenized text, for greedy decoding.
"""
from __future__ import annotations

import difflib
import itertools
import logging
import queue
import threading
import zlib
from typing import Callable, Iterator, Mapping, Optional, Protocol, runtime_checkable

import numpy as np
import seqio
import tensorflow as tf

from flan_mix.data import decoder_packing, packing, task_streams, tf_errors
from flan_mix.data.data_errors import DataError

logger = logging.getLogger(__name__)

MODEL_FEATURES = packing.PACKED_FEATURES  # the encoder_decoder layout's (packed) features
# The batch layouts get_batches(layout=...) produces, and each one's packed features (the unpacked ones:
# decoder_packing.layout_features(layout, pack=False)).
LAYOUTS = decoder_packing.LAYOUTS
ENCODER_DECODER_FEATURES = packing.PACKED_FEATURES
DECODER_FEATURES = decoder_packing.DECODER_FEATURES
PREFIX_LM_FEATURES = decoder_packing.PREFIX_LM_FEATURES
PACK_OPEN_ROWS = 64  # first-fit packing: rows kept open at once (see flan_mix.data.packing)
_CHUNK = 16  # examples per tf.data -> Python crossing: ~0.1 ms each, and every task of a mixture
# processes one chunk ahead, so small (100 generated tasks x 256 would be 25,600 examples before the first batch)
_DRAW_BLOCK = 1024  # mixture draws made at once (one numpy call)


class UnknownTaskError(DataError, ValueError):
    """A task or mixture name that is not registered."""


@runtime_checkable
class TokenStreamTask(Protocol):
    """A seqio Task that streams its own (inputs, targets) token ids in Python, bypassing seqio's tf.data
    pipeline (the Flan 2022 tasks: one tf.data pipeline per task does not scale to thousands of tasks)."""

    def token_stream(self, *, sequence_length: Optional[Mapping[str, int]], split: str, shuffle: bool,
                     seed: Optional[int], shard_info: Optional[seqio.ShardInfo], num_epochs: Optional[int],
                     state: Optional[dict] = None) -> task_streams.TaskStream:
        """A resumable stream (flan_mix.data.task_streams.TaskStream); state: one it gave, to continue."""
        ...


@runtime_checkable
class SizedPromptSource(Protocol):
    """A task source whose few-shot prompts drop exemplars until inputs + EOS fit max_input_tokens; the gin
    binding that sets it is max_input_tokens_binding."""

    max_input_tokens: int
    max_input_tokens_binding: str


# Collections that are not registered yet cannot name their tasks here; the driver that knows them
# (flan_mix.data.registration) adds a hint: name -> a sentence saying how to register it, or None.
_UNKNOWN_NAME_HINTS: list[Callable[[str], Optional[str]]] = []


def add_unknown_name_hint(hint: Callable[[str], Optional[str]]) -> None:
    """Adds a hint to the UnknownTaskError message (once per hint)."""
    if hint not in _UNKNOWN_NAME_HINTS:
        _UNKNOWN_NAME_HINTS.append(hint)


def _unknown(name: str, kinds: str = "task or mixture") -> UnknownTaskError:
    tasks, mixtures = list(seqio.TaskRegistry.names()), list(seqio.MixtureRegistry.names())
    close = difflib.get_close_matches(name, tasks + mixtures, n=5, cutoff=0.5)
    msg = f"Unknown {kinds} '{name}'."
    if close:
        msg += f" Did you mean: {', '.join(close)}?"
    for hint in _UNKNOWN_NAME_HINTS:
        sentence = hint(name)
        if sentence:
            msg += f" {sentence}"
    msg += (f" {len(tasks)} tasks and {len(mixtures)} mixtures are registered; list them with "
            "`python run.py inspect`.")
    return UnknownTaskError(msg)


def get_task_or_mixture(name: str) -> seqio.Task | seqio.Mixture:
    """The registered seqio Mixture or Task of that name; UnknownTaskError (with close matches) otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"Expected a task or mixture name (str), got {type(name).__name__} {name!r}.")
    if name in seqio.MixtureRegistry.names():
        return seqio.MixtureRegistry.get(name)
    if name in seqio.TaskRegistry.names():
        return seqio.TaskRegistry.get(name)
    raise _unknown(name)


def _check_stream_args(name: str, provider, task_feature_lengths: Mapping[str, int], split: str, shard_index: int,
                       num_shards: int) -> None:
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index must be in [0, num_shards); got shard_index={shard_index}, "
                         f"num_shards={num_shards}.")
    if split not in provider.splits:
        raise ValueError(f"'{name}' has no split '{split}'; its splits are {sorted(provider.splits)}.")
    missing = {"inputs", "targets"} - set(task_feature_lengths)
    if missing:
        raise ValueError(f"task_feature_lengths needs lengths for {sorted(missing)}; "
                         f"got {dict(task_feature_lengths)} "
                         "(e.g. TASK_FEATURE_LENGTHS = {'inputs': 256, 'targets': 64}).")
    budgets = {(t.source.max_input_tokens, t.source.max_input_tokens_binding)
               for t in seqio.get_subtasks(provider) if isinstance(t.source, SizedPromptSource)}
    if budgets:
        budget, binding = max(budgets)
        if task_feature_lengths["inputs"] < budget:
            logger.warning("task_feature_lengths['inputs']=%d is below the %d tokens the few-shot prompts of "
                           "'%s' are sized for; longer prompts will be truncated. Set %s to match.",
                           task_feature_lengths["inputs"], budget, name, binding)


def _task_seed(seed: int, task_name: str) -> int:
    return zlib.crc32(f"{seed}|{task_name}".encode())


def token_pairs(ds: tf.data.Dataset) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(inputs, targets) numpy arrays of a tf.data stream, crossing into Python a chunk at a time (one crossing
    per example costs ~0.1 ms, more than packing it)."""
    for chunk in tf_errors.numpy_rows(ds.ragged_batch(_CHUNK).prefetch(2)):
        yield from zip(_split_rows(chunk["inputs"]), _split_rows(chunk["targets"]))


def _split_rows(batch: np.ndarray) -> list[np.ndarray]:
    # as_numpy_iterator turns a ragged chunk into an object array of rows, or a 2-D array when all rows have
    # the static length.
    return [np.asarray(row, dtype=np.int32) for row in batch]


def _task_stream(task: seqio.Task, lengths: Mapping[str, int], split: str, seed: int, shuffle: bool,
                 shard_info: seqio.ShardInfo, num_epochs: int | None,
                 state: Optional[dict]) -> task_streams.TaskStream:
    """One task's resumable (inputs, targets) stream: its own Python stream if it has one, else seqio's tf.data
    pipeline behind a ReplayStream."""
    if isinstance(task, TokenStreamTask):
        return task.token_stream(sequence_length=lengths, split=split, shuffle=shuffle, seed=seed,
                                 shard_info=shard_info, num_epochs=num_epochs, state=state)

    def open_pipeline():
        # What seqio.get_dataset does, plus try_in_mem_cache=False: the sources are in memory already.
        ds = task.get_dataset(sequence_length=dict(lengths), split=split, use_cached=False, shuffle=shuffle,
                              seed=seed, shard_info=shard_info, num_epochs=num_epochs, trim_output_features=True,
                              try_in_mem_cache=False)
        return token_pairs(ds.map(lambda ex: {k: ex[k] for k in ("inputs", "targets")}))

    return task_streams.ReplayStream(open_pipeline, task.name, state)


class MixtureStream:
    """This host's (inputs, targets) stream of a mixture, sampled by rate; resumable through state().

    Each draw picks a task with a seeded RNG (_DRAW_BLOCK draws per numpy call) and takes that task's next
    example. A task's stream opens the first time it is drawn and, with num_epochs set, closes and leaves the
    draw when exhausted (the others' rates renormalize). state() holds the RNG state at the start of the
    current block of draws, the position in it, the live rates and every open task's stream state: restoring
    regenerates the block and reopens each task at its position, reading nothing already consumed.
    """

    def __init__(self, tasks: list[seqio.Task], rates: np.ndarray, open_task: Callable, seed: int,
                 state: Optional[dict] = None):
        self._tasks, self._open = tasks, open_task
        self._rng = np.random.default_rng(seed)
        self._live = rates.astype(np.float64)  # replaced, never written in place: state() shares it
        self._streams: dict[int, task_streams.TaskStream] = {}
        self._block: Optional[np.ndarray] = None
        self._block_start: Optional[tuple[dict, np.ndarray]] = None  # (rng state, live) the block was drawn with
        self._pos = 0
        if state is not None:
            self._restore(state)

    def _draw_block(self) -> None:
        self._block_start = (self._rng.bit_generator.state, self._live)
        self._block = self._rng.choice(len(self._tasks), size=_DRAW_BLOCK, p=self._live / self._live.sum())
        self._pos = 0

    def __iter__(self) -> "MixtureStream":
        return self

    def __next__(self) -> tuple[np.ndarray, np.ndarray]:
        while True:
            if self._block is None or self._pos == len(self._block):
                if self._live.sum() <= 0:
                    raise StopIteration
                self._draw_block()
            i = int(self._block[self._pos])
            self._pos += 1
            if not self._live[i]:  # exhausted earlier in this block
                continue
            stream = self._streams.get(i)
            if stream is None:
                stream = self._streams[i] = self._open(self._tasks[i], None)
            pair = next(stream, None)
            if pair is None:
                self._close(i)
                continue
            return pair

    def _close(self, i: int) -> None:
        live = self._live.copy()
        live[i] = 0.0
        self._live = live
        close = getattr(self._streams.pop(i), "close", None)
        if close is not None:
            close()

    def state(self) -> dict:
        rng_state, block_live = self._block_start if self._block_start else (None, None)
        return {"block_rng": rng_state, "block_live": None if block_live is None else block_live.tolist(),
                "pos": self._pos, "live": self._live.tolist(),
                "tasks": {self._tasks[i].name: s.state() for i, s in self._streams.items()}}

    def _restore(self, state: dict) -> None:
        names = {t.name: i for i, t in enumerate(self._tasks)}
        unknown = sorted(set(state["tasks"]) - set(names))
        if unknown or len(state["live"]) != len(self._tasks):
            what = ", ".join(unknown[:5]) if unknown else f"{len(state['live'])} tasks, now {len(self._tasks)}"
            raise DataStateMismatch(f"the saved data state does not fit this mixture ({what}): was the mixture "
                                    "changed since? Resume with the same one, or train into a fresh MODEL_DIR.")
        if state["block_rng"] is not None:
            self._rng.bit_generator.state = state["block_rng"]
            self._live = np.asarray(state["block_live"], np.float64)
            self._draw_block()
            self._pos = int(state["pos"])
        self._live = np.asarray(state["live"], np.float64)
        for name, task_state in state["tasks"].items():
            i = names[name]
            self._streams[i] = self._open(self._tasks[i], task_state)


class DataStateMismatch(DataError, ValueError):
    """A saved data-stream state that does not fit the stream being resumed (other mixture, seed, hosts...)."""


def token_stream(mixture_or_task_name: str, *, task_feature_lengths: Mapping[str, int], split: str = "train",
                 seed: int, shuffle: bool = True, shard_index: int = 0, num_shards: int = 1,
                 num_epochs: int | None = None, state: Optional[dict] = None) -> MixtureStream:
    """This host's stream of (inputs, targets) int32 token ids (trimmed, ending in EOS) of a task or mixture.

    A mixture is sampled here, in Python, by its seqio rates (MixtureStream); a task is a mixture of one. A
    task's stream is opened the first time it is drawn (so a mixture of thousands of tasks costs memory only
    for the tasks in use), reads this host's shard of the task (seqio.ShardInfo) in an order seeded by (seed,
    task name), and with num_epochs set, leaves the draw when exhausted. state: a MixtureStream.state() of the
    same stream, to continue after it. Arguments are checked at the call.
    """
    provider = get_task_or_mixture(mixture_or_task_name)
    _check_stream_args(mixture_or_task_name, provider, task_feature_lengths, split, shard_index, num_shards)
    lengths = {k: task_feature_lengths[k] for k in ("inputs", "targets")}
    shard_info = seqio.ShardInfo(index=shard_index, num_shards=num_shards)
    if isinstance(provider, seqio.Task):
        tasks, rates = [provider], np.ones(1)
    else:
        tasks = [t for t in provider.tasks if split in t.splits]
        if not tasks:
            raise ValueError(f"Mixture '{mixture_or_task_name}' has no task with a '{split}' split.")
        rates = np.array([provider.get_rate(t) for t in tasks], dtype=np.float64)

    def open_task(task: seqio.Task, task_state: Optional[dict]) -> task_streams.TaskStream:
        return _task_stream(task, lengths, split, _task_seed(seed, task.name), shuffle, shard_info, num_epochs,
                            task_state)

    return MixtureStream(tasks, rates, open_task, seed, state)


STATE_VERSION = 1


def get_batches(mixture_or_task_name: str, *, task_feature_lengths: Mapping[str, int], split: str = "train",
                global_batch_size: int, seed: int, shuffle: bool = True, pack: bool = True,
                max_open_rows: int = PACK_OPEN_ROWS, shard_index: int = 0, num_shards: int = 1,
                start_batch: int = 0, num_epochs: int | None = None,
                layout: str = decoder_packing.ENCODER_DECODER, bos_id: int = 0,
                state: Optional[dict] = None) -> "BatchStream":
    """Host-local batches {feature: int32 [global_batch_size // num_shards, length]}, as a BatchStream.

    layout:
      "encoder_decoder" (default): seqio.EncDecFeatureConverter's features (encoder_input_tokens,
        decoder_target_tokens, decoder_input_tokens, decoder_loss_weights, and with pack=True the encoder/decoder
        segment ids and positions); encoder rows are task_feature_lengths["inputs"] long, decoder rows
        ["targets"].
      "decoder": the targets alone, as seqio.DecoderFeatureConverter with only a "targets" length
        (DECODER_FEATURES); rows are ["targets"] long. The stream still trims inputs, so both lengths are needed.
      "prefix_lm": inputs and targets concatenated, as seqio.PrefixLMFeatureConverter (PREFIX_LM_FEATURES: the
        decoder features plus decoder_causal_attention; loss on the targets only); rows are
        ["inputs"] + ["targets"] long. A plain causal LM ignores decoder_causal_attention.
      See flan_mix.data.decoder_packing.model_feature_lengths for each feature's length.
    bos_id: the id each decoder-only segment's shifted inputs start with (seqio: 0; an imported Llama: its BOS).
    Packing is first-fit over max_open_rows open rows (1 = seqio's next-fit). num_epochs=None repeats forever.

    Resuming: state (a BatchStream.state() of a stream with the same arguments) continues right after the batch
    it was taken at, reading nothing already consumed; start_batch instead regenerates and drops that many
    batches (for a run without a saved state; the same batches, at a cost that grows with start_batch).
    """
    # Checked and built here, not in a generator, so that bad arguments raise at the call.
    if num_shards >= 1 and (global_batch_size < 1 or global_batch_size % num_shards):
        raise ValueError(f"global_batch_size={global_batch_size} must be a positive multiple of the number of "
                         f"hosts/shards num_shards={num_shards}; each host loads global_batch_size // num_shards "
                         "rows. Change BATCH_SIZE or the number of hosts.")
    if start_batch < 0:
        raise ValueError(f"start_batch must be >= 0, got {start_batch}.")
    if state is not None and start_batch:
        raise ValueError("get_batches: pass a saved state or start_batch, not both.")
    if max_open_rows < 1:
        raise ValueError(f"max_open_rows must be >= 1 (1 = next-fit packing), got {max_open_rows}.")
    decoder_packing.check_layout(layout)
    lengths = {k: task_feature_lengths[k] for k in ("inputs", "targets")}
    config = {"mixture_or_task_name": mixture_or_task_name, "split": split, "lengths": lengths,
              "global_batch_size": global_batch_size, "seed": seed, "shuffle": shuffle, "pack": pack,
              "max_open_rows": max_open_rows, "shard_index": shard_index, "num_shards": num_shards,
              "num_epochs": num_epochs, "layout": layout, "bos_id": bos_id}
    if state is not None:
        _check_state(state, config)
    pairs = token_stream(mixture_or_task_name, task_feature_lengths=task_feature_lengths, split=split, seed=seed,
                         shuffle=shuffle, shard_index=shard_index, num_shards=num_shards, num_epochs=num_epochs,
                         state=state["mixture"] if state else None)
    rows = global_batch_size // num_shards
    packer = decoder_packing if layout != decoder_packing.ENCODER_DECODER else packing
    open_rows = packer.rows_from_state(state["packer"]) if state else []
    if layout != decoder_packing.ENCODER_DECODER:
        if pack:
            batches = decoder_packing.pack_decoder_batches(pairs, layout, lengths, rows, max_open_rows,
                                                           bos_id=bos_id, open_rows=open_rows)
        else:
            batches = decoder_packing.unpacked_decoder_batches(pairs, layout, lengths, rows, bos_id=bos_id)
    elif pack:
        batches = packing.pack_batches(pairs, lengths, rows, max_open_rows, open_rows=open_rows)
    else:
        batches = packing.unpacked_batches(pairs, lengths, rows)

    def with_state() -> Iterator[tuple[dict[str, np.ndarray], dict]]:
        # Taken while the packer waits at its yield: every example read is in the batch or in open_rows.
        for batch in itertools.islice(batches, start_batch, None):
            yield batch, {"version": STATE_VERSION, "config": config, "mixture": pairs.state(),
                          "packer": packer.rows_state(open_rows)}

    initial = state or {"version": STATE_VERSION, "config": config, "mixture": pairs.state(),
                        "packer": packer.rows_state(open_rows)}
    return BatchStream(with_state(), initial if not start_batch else None)


def _check_state(state: dict, config: dict) -> None:
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise DataStateMismatch(f"the saved data state has version {state.get('version') if isinstance(state, dict) else None}, "
                                f"this code reads version {STATE_VERSION}.")
    saved = state["config"]
    diff = {k: (saved.get(k), v) for k, v in config.items() if saved.get(k) != v}
    if diff:
        raise DataStateMismatch(
            "the saved data state was written for a different stream: "
            + "; ".join(f"{k} was {a!r}, now {b!r}" for k, (a, b) in diff.items())
            + ". Resume with the settings it was written with, or train into a fresh MODEL_DIR.")


class BatchStream:
    """Produces batches in a background thread, `size` ahead, in order; state() is the data stream's position
    after the last batch next() returned (prefetched batches are not counted, so none is lost or repeated).

    Why a thread: rendering, tokenizing and packing are Python; a jitted train step releases the GIL, so a
    producer thread overlaps data work with compute (without it, a 2-core CPU run took twice the wall time).
    Errors in the producer are re-raised by next(); close() (or dropping the stream) stops the thread.
    """

    _DONE = object()

    def __init__(self, it: Iterator[tuple[dict[str, np.ndarray], dict]], initial_state: Optional[dict],
                 size: int = 2):
        self._state = initial_state
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(it, self._queue, self._stop), daemon=True)
        self._thread.start()

    @staticmethod
    def _run(it, q: queue.Queue, stop: threading.Event) -> None:
        def put(item) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            for item in it:
                if not put(item):
                    return
            put(BatchStream._DONE)
        except BaseException as e:  # handed to the consumer, who re-raises it
            put(e)

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        item = self._queue.get()
        if item is BatchStream._DONE:
            self._queue.put(item)  # stay exhausted
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        batch, self._state = item
        return batch

    def state(self) -> dict:
        """JSON-able: get_batches(..., state=it) continues after the last batch returned."""
        if self._state is None:
            raise RuntimeError("no state before the first batch of a stream opened with start_batch.")
        return _jsonable(self._state)

    def close(self) -> None:
        """Stops the producer and waits for it (briefly: it checks every 0.1 s), so that no thread is still
        tokenizing when the interpreter exits."""
        self._stop.set()
        self._thread.join(timeout=5)

    def __del__(self):
        self._stop.set()


def _jsonable(value):
    """Token arrays (shared by the per-batch snapshots, see packing.rows_state) as lists, only when asked."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def get_eval_examples(task_name: str, *, split: str = "validation", max_examples: int | None = None,
                      feature_length: Mapping[str, int] | int | None = None) -> list[dict]:
    """The examples of one task, in order, for decoding and scoring.

    Each: inputs_pretokenized, targets_pretokenized (str), inputs, targets (np.int32 token ids ending in EOS), and
    the passthrough metadata (task_name, template_id, template_type, answer) when the task has it.
    feature_length: {"inputs": n, "targets": m} (or an int for inputs) trims tokens to that length, EOS kept.
    """
    if task_name in seqio.MixtureRegistry.names():
        mix = seqio.MixtureRegistry.get(task_name)
        raise ValueError(f"'{task_name}' is a mixture; evaluate its tasks one by one: "
                         f"{', '.join(t.name for t in mix.tasks[:10])}{' ...' if len(mix.tasks) > 10 else ''}.")
    if task_name not in seqio.TaskRegistry.names():
        raise _unknown(task_name, "task")
    task = seqio.TaskRegistry.get(task_name)
    if split not in task.splits:
        raise ValueError(f"Task '{task_name}' has no split '{split}'; its splits are {list(task.splits)}.")
    if isinstance(feature_length, int):
        feature_length = {"inputs": feature_length}
    ds = task.get_dataset(sequence_length=dict(feature_length) if feature_length else None, split=split,
                          shuffle=False, num_epochs=1, try_in_mem_cache=False)
    if max_examples is not None:
        ds = ds.take(max_examples)
    out = []
    for ex in tf_errors.numpy_rows(ds):
        rec = {}
        for k, v in ex.items():
            if isinstance(v, bytes):
                rec[k] = v.decode("utf-8")
            elif k in ("inputs", "targets"):
                rec[k] = np.asarray(v, dtype=np.int32)
            else:
                rec[k] = v
        out.append(rec)
    return out
