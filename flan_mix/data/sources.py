"""Real data sources for the Flan 2022 catalog, as seqio DataSources.

One builder per loader kind of ``flan_mix.data.catalog``:

* ``tfds_source``    -- a TFDS dataset (read-only: never downloads), fields mapped and turned into strings;
* ``hf_source``      -- a Hugging Face dataset (P3), an optional extra that needs ``datasets``;
* ``niv2_source``    -- one task file of a local natural-instructions clone (tasks/taskNNN_*.json);
  fields id, definition, input, output (the first of the instance's outputs), all_outputs, and the
  task's positive examples as pos_inputs / pos_outputs / pos_explanations (string vectors);
* ``cot_tsv_source`` -- one ``question \\t answer \\t rationale`` TSV from a CoT data directory;
  fields question, answer, rationale;
* ``source_for_task`` picks the right one for a ``catalog.TaskRecord``.

Every source yields dict examples whose values are tf.string scalars or tf.string vectors. Every
source is deterministic (a ``shuffle=True`` with ``seed=None`` uses seed 0) and shards per host
with ``seqio.ShardInfo``: the examples are put in one global order (the same on every host) and
host ``i`` of ``n`` takes positions ``i, i+n, i+2n, ...``. The shards are disjoint and together
they cover the split.

Missing data raises ``MissingDataError`` (task name, what is missing, how to get it). Malformed
files raise ``MalformedDataError`` (file, line or field, problem). Nothing is dropped silently:
``skip_malformed=True`` skips bad lines/instances and logs how many were skipped.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import numpy as np
import seqio
import tensorflow as tf

from flan_mix.data import catalog as catalog_lib
from flan_mix.data.data_errors import (MalformedDataError, MissingDataError, OptionalDependencyError,  # noqa: F401
                                       report_skipped)
from flan_mix.data.niv2_files import _index_niv2_file, _NIv2Index, _parse_instance, find_niv2_tasks_dir
from flan_mix.data.niv2_files import read_niv2_task  # noqa: F401  (re-exported: part of this module's API)

logger = logging.getLogger(__name__)

TRAIN = "train"
_CHUNK = 256  # examples per Python-generator step (see _IndexedDataSource._dataset_for_order)
_PY_CHUNK = 32  # examples read at a time by iter_examples (one file open per chunk for NIv2)

NIV2_REPO_URL = "https://github.com/allenai/natural-instructions"
FLAN_REPO_URL = "https://github.com/google-research/FLAN"

COT_FIELDS = ("question", "answer", "rationale")
NIV2_FIELDS = ("id", "definition", "input", "output", "all_outputs", "pos_inputs", "pos_outputs", "pos_explanations")
_NIV2_VECTOR_FIELDS = ("all_outputs", "pos_inputs", "pos_outputs", "pos_explanations")


# --------------------------------------------------------------------------------------------
# Shared machinery.


def _as_int_seed(seed: Any) -> int:
    if seed is None:
        return 0
    if isinstance(seed, tf.Tensor):
        seed = seed.numpy()
    return int(seed)


def example_order(
    num_examples: int, shuffle: bool, seed: Optional[int], shard_info: Optional[seqio.ShardInfo]
) -> np.ndarray:
    """Positions this host reads, in order: one global order, then every num_shards-th position."""
    if shuffle:
        order = np.random.default_rng(_as_int_seed(seed)).permutation(num_examples)
    else:
        order = np.arange(num_examples)
    if shard_info is not None and shard_info.num_shards > 1:
        if not 0 <= shard_info.index < shard_info.num_shards:
            raise ValueError(f"Bad shard_info {shard_info}: index must be in [0, {shard_info.num_shards})")
        order = order[shard_info.index :: shard_info.num_shards]
    return order


def _check_split(task: str, split: str, splits: Sequence[str]) -> None:
    if split not in splits:
        raise ValueError(f"Task {task!r}: unknown split {split!r}; this source has {', '.join(splits)}")


def _require_local_file(task_name: str, directory: Optional[Path], dir_label: str, param: str,
                        locate: Callable[[], tuple[Path, str]], how_to_get: str) -> None:
    """The check shared by the file-backed sources: the directory was given, exists and holds the file.

    `locate` is called only once the directory exists (finding the file may search inside it) and
    returns the file's path and the message to give if it is missing.
    """
    if directory is None:
        raise MissingDataError(task_name, f"no {dir_label} was given ({param} is None)", how_to_get)
    if not directory.is_dir():
        raise MissingDataError(task_name, f"{dir_label} {directory} does not exist", how_to_get)
    path, missing = locate()
    if not path.is_file():
        raise MissingDataError(task_name, missing, how_to_get)


class _IndexedDataSource(seqio.DataSource, abc.ABC):
    """A source whose examples can be addressed by position 0..n-1 (CoT TSV, NIv2 file, HF dataset)."""

    def __init__(self, task_name: str, output_signature: Mapping[str, tf.TensorSpec]):
        super().__init__(splits=(TRAIN,), num_input_examples=None, caching_permitted=True)
        self.task_name = task_name
        self.output_signature = dict(output_signature)

    @property
    def supports_arbitrary_sharding(self) -> bool:
        return True

    def list_shards(self, split: str) -> Sequence[str]:
        return [f"{self.task_name}:{split}"]

    def num_input_examples(self, split: str) -> int:
        _check_split(self.task_name, split, self.splits)
        return self._prepare()

    @abc.abstractmethod
    def _check_available(self) -> None:
        """Raises MissingDataError if the data cannot be found. Cheap; called by get_dataset."""

    @abc.abstractmethod
    def _prepare(self) -> int:
        """Reads/validates what is needed to address examples; returns how many there are."""

    @abc.abstractmethod
    def _example(self, position: int) -> dict[str, Any]:
        """The example at a position, as str / list-of-str values."""

    def _examples(self, positions: np.ndarray) -> list[dict[str, Any]]:
        return [self._example(int(p)) for p in positions]

    #: Whether _prepare runs when iteration starts (True) or inside get_dataset (False).
    lazy: bool = False

    def get_dataset(
        self,
        split: str = TRAIN,
        shuffle: bool = True,
        seed: Optional[int] = None,
        shard_info: Optional[seqio.ShardInfo] = None,
        *,
        sequence_length: Optional[Mapping[str, int]] = None,  # unused
        use_cached: bool = False,  # unused
        num_epochs: Optional[int] = 1,  # unused
    ) -> tf.data.Dataset:
        del sequence_length, use_cached, num_epochs
        _check_split(self.task_name, split, self.splits)
        self._check_available()
        seed = _as_int_seed(seed)
        if not self.lazy:
            n = self._prepare()
            return self._dataset_for_order(lambda: example_order(n, shuffle, seed, shard_info))
        return self._dataset_for_order(lambda: example_order(self._prepare(), shuffle, seed, shard_info))

    def iter_examples(
        self,
        split: str = TRAIN,
        shuffle: bool = True,
        seed: Optional[int] = None,
        shard_info: Optional[seqio.ShardInfo] = None,
        num_epochs: Optional[int] = 1,
    ) -> Iterator[dict[str, Any]]:
        """The same examples as get_dataset, as Python dicts and without TensorFlow (what the mixture streamer
        reads); num_epochs=None repeats forever, each epoch in a new order when shuffling."""
        _check_split(self.task_name, split, self.splits)
        self._check_available()
        n, base, epoch = self._prepare(), _as_int_seed(seed), 0
        while num_epochs is None or epoch < num_epochs:
            order = example_order(n, shuffle, base + 1_000_003 * epoch, shard_info)
            if not len(order):
                return  # this host's shard is empty: nothing to repeat
            for start in range(0, len(order), _PY_CHUNK):
                yield from self._examples(order[start:start + _PY_CHUNK])
            epoch += 1

    def _dataset_for_order(self, order_fn: Callable[[], np.ndarray]) -> tf.data.Dataset:
        """Examples at the positions order_fn() returns (called when iteration starts).

        A Python generator costs ~0.3 ms per element in tf.data, so examples are produced in
        chunks of _CHUNK (vector fields as values + row lengths) and unbatched in the graph.
        """
        signature = self.output_signature
        vectors = [k for k, spec in signature.items() if spec.shape.rank == 1]
        scalars = [k for k in signature if k not in vectors]
        chunk_signature = {k: tf.TensorSpec([None], tf.string) for k in scalars}
        for k in vectors:
            chunk_signature[f"{k}/values"] = tf.TensorSpec([None], tf.string)
            chunk_signature[f"{k}/lengths"] = tf.TensorSpec([None], tf.int64)

        def strings(values: list) -> np.ndarray:
            return np.array(values, dtype=object) if values else np.zeros([0], dtype=np.bytes_)

        def generate():
            order = order_fn()
            for start in range(0, len(order), _CHUNK):
                examples = self._examples(order[start : start + _CHUNK])
                chunk = {k: strings([e[k] for e in examples]) for k in scalars}
                for k in vectors:
                    chunk[f"{k}/values"] = strings([v for e in examples for v in e[k]])
                    chunk[f"{k}/lengths"] = np.array([len(e[k]) for e in examples], dtype=np.int64)
                yield chunk

        def assemble(chunk):
            out = {}
            for k in signature:
                if k in vectors:
                    lengths = chunk[f"{k}/lengths"]
                    padded = tf.RaggedTensor.from_row_lengths(chunk[f"{k}/values"], lengths).to_tensor("")
                    out[k] = (padded, lengths)
                else:
                    out[k] = chunk[k]
            return out

        def trim(example):  # padded rows back to variable-length string vectors (plain tf.Tensor)
            return {k: (v[0][: v[1]] if k in vectors else v) for k, v in example.items()}

        ds = tf.data.Dataset.from_generator(generate, output_signature=chunk_signature)
        return ds.map(assemble).unbatch().map(trim)


# --------------------------------------------------------------------------------------------
# CoT TSV: question \t answer \t rationale, one example per line.


@dataclasses.dataclass(frozen=True)
class CotExample:
    question: str
    answer: str
    rationale: str


def read_cot_tsv(path: os.PathLike | str, *, skip_malformed: bool = False, task_name: str = "") -> list[CotExample]:
    """Parses a CoT TSV. A final newline is fine; any other empty line is malformed."""
    path = Path(path)
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    examples: list[CotExample] = []
    skipped: list[str] = []
    for lineno, line in enumerate(lines, start=1):
        try:
            examples.append(_parse_cot_line(path, lineno, line))
        except MalformedDataError as e:
            if not skip_malformed:
                raise
            skipped.append(str(e))
    report_skipped(task_name or path.stem, path, skipped)
    if not examples:
        raise MalformedDataError(path, "line 1", "no examples (the file is empty)" + (f"; {len(skipped)} malformed lines skipped" if skipped else ""))
    return examples


def _parse_cot_line(path: Path, lineno: int, line: bytes) -> CotExample:
    if line.endswith(b"\r"):
        line = line[:-1]
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MalformedDataError(path, f"line {lineno}", f"invalid UTF-8 at byte {e.start} of the line") from None
    if not text.strip():
        raise MalformedDataError(path, f"line {lineno}", "empty line (expected question<TAB>answer<TAB>rationale)")
    fields = text.split("\t")
    if len(fields) != 3:
        raise MalformedDataError(
            path, f"line {lineno}", f"expected 3 tab-separated fields (question, answer, rationale), got {len(fields)}"
        )
    for name, value in zip(COT_FIELDS, fields):
        if not value.strip():
            raise MalformedDataError(path, f"line {lineno}", f"field {name!r} is empty")
    return CotExample(*fields)


class CotTsvDataSource(_IndexedDataSource):
    """Examples {question, answer, rationale} from one CoT TSV file."""

    def __init__(self, task_name: str, cot_dir: Optional[os.PathLike | str], file_name: str, *, skip_malformed: bool = False):
        super().__init__(task_name, {f: tf.TensorSpec([], tf.string) for f in COT_FIELDS})
        self.cot_dir = None if cot_dir is None else Path(cot_dir)
        self.file_name = file_name
        self.skip_malformed = skip_malformed
        self._rows: Optional[list[CotExample]] = None

    @property
    def path(self) -> Optional[Path]:
        return None if self.cot_dir is None else self.cot_dir / self.file_name

    def _how_to_get(self) -> str:
        return (
            f"The CoT TSVs ship with {FLAN_REPO_URL} under flan/v2/cot_data/; put {self.file_name} in a directory "
            "and pass it as cot_dir (or drop the task with allow_missing_tasks)."
        )

    def _check_available(self) -> None:
        _require_local_file(self.task_name, self.cot_dir, "CoT data directory", "cot_dir",
                            lambda: (self.path, f"{self.file_name} is not in {self.cot_dir}"), self._how_to_get())

    def _prepare(self) -> int:
        if self._rows is None:
            self._check_available()
            self._rows = read_cot_tsv(self.path, skip_malformed=self.skip_malformed, task_name=self.task_name)
        return len(self._rows)

    def _example(self, position: int) -> dict[str, Any]:
        row = self._rows[position]
        return {"question": row.question, "answer": row.answer, "rationale": row.rationale}

    def _dataset_for_order(self, order_fn: Callable[[], np.ndarray]) -> tf.data.Dataset:
        # The file is small (tens of MB at most) and already parsed: slice tensors directly.
        rows, order = self._rows, order_fn()
        columns = {f: tf.constant([getattr(rows[i], f) for i in order], dtype=tf.string) for f in COT_FIELDS}
        return tf.data.Dataset.from_tensor_slices(columns)


def cot_tsv_source(task_name: str, cot_dir: Optional[os.PathLike | str], file_name: str, *, skip_malformed: bool = False) -> CotTsvDataSource:
    return CotTsvDataSource(task_name, cot_dir, file_name, skip_malformed=skip_malformed)


# --------------------------------------------------------------------------------------------
# NIv2: the files are read by flan_mix.data.niv2_files; this is the seqio source over them.


class NIv2DataSource(_IndexedDataSource):
    """Examples of one NIv2 task: the instance plus the task definition and positive examples."""

    lazy = True  # the file is indexed when iteration starts, not when the mixture is built

    def __init__(
        self,
        task_name: str,
        niv2_dir: Optional[os.PathLike | str],
        task_file: Optional[str] = None,
        *,
        max_instances: Optional[int] = None,
        skip_malformed: bool = False,
    ):
        signature = {f: tf.TensorSpec([None] if f in _NIV2_VECTOR_FIELDS else [], tf.string) for f in NIV2_FIELDS}
        super().__init__(task_name, signature)
        self.niv2_dir = None if niv2_dir is None else Path(niv2_dir)
        self.task_file = task_file or f"{task_name}.json"
        if max_instances is not None and max_instances <= 0:
            raise ValueError(f"Task {task_name!r}: max_instances must be positive, got {max_instances}")
        self.max_instances = max_instances
        self.skip_malformed = skip_malformed
        self._index: Optional[_NIv2Index] = None
        self._path: Optional[Path] = None

    @property
    def path(self) -> Optional[Path]:
        if self._path is None and self.niv2_dir is not None:
            self._path = find_niv2_tasks_dir(self.niv2_dir) / self.task_file
        return self._path

    def _how_to_get(self) -> str:
        return (
            f"Clone {NIV2_REPO_URL} (git clone --depth 1 {NIV2_REPO_URL}) and pass the clone as niv2_dir "
            "(or drop the task with allow_missing_tasks)."
        )

    def _check_available(self) -> None:
        _require_local_file(self.task_name, self.niv2_dir, "natural-instructions directory", "niv2_dir",
                            lambda: (self.path, f"task file {self.path} does not exist"), self._how_to_get())

    def validate(self) -> int:
        """Reads and validates the task file now; returns the number of instances used."""
        self._check_available()
        return self._prepare()

    def _prepare(self) -> int:
        if self._index is None:
            self._check_available()
            self._index = _index_niv2_file(self.path, self.task_name, self.skip_malformed)
        n = len(self._index.starts)
        return n if self.max_instances is None else min(n, self.max_instances)

    def _example(self, position: int) -> dict[str, Any]:
        return self._examples(np.array([position]))[0]

    def _examples(self, positions: np.ndarray) -> list[dict[str, Any]]:
        index = self._index
        pos = index.positive_examples
        shared = {
            "definition": index.definition,
            "pos_inputs": [p.input for p in pos],
            "pos_outputs": [p.output for p in pos],
            "pos_explanations": [p.explanation for p in pos],
        }
        out = []
        # One open per chunk keeps file handles few when many NIv2 tasks stream side by side.
        with open(self.path, "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_size != index.file_size or st.st_mtime_ns != index.file_mtime_ns:
                raise MalformedDataError(self.path, "file", "changed on disk after it was indexed; restart the input pipeline")
            for position in positions:
                position = int(position)
                start, end = index.starts[position], index.ends[position]
                f.seek(start)
                blob = f.read(end - start)
                inst = _parse_instance(self.path, position, json.loads(blob.decode("utf-8")), self.task_name)
                out.append({"id": inst.id, "input": inst.input, "output": inst.outputs[0], "all_outputs": list(inst.outputs), **shared})
        return out


def niv2_source(
    task_name: str,
    niv2_dir: Optional[os.PathLike | str],
    task_file: Optional[str] = None,
    *,
    max_instances: Optional[int] = None,
    skip_malformed: bool = False,
) -> NIv2DataSource:
    return NIv2DataSource(task_name, niv2_dir, task_file, max_instances=max_instances, skip_malformed=skip_malformed)


# --------------------------------------------------------------------------------------------
# TFDS.


#: Joins the items of one row when a rank-2 feature (e.g. DART's [subject, relation, object] triples) is turned
#: into a vector of strings. A visible separator keeps the row's structure recoverable by splitting on it.
ROW_JOINER = " | "


def _stringify(task: str, out: str, value: Any) -> tf.Tensor:
    if isinstance(value, dict):
        raise ValueError(
            f"Task {task!r}: field {out!r} maps to a nested feature with keys {sorted(value)}; map one of its leaves, e.g. '{out}=<path>/{sorted(value)[0]}'"
        )
    rank = value.shape.rank
    if rank == 2:
        # Sources and adapters deal in scalars and vectors of strings only, so a matrix (dense, or ragged when the
        # rows vary in length) becomes one string per row, its items joined by ROW_JOINER.
        if value.dtype != tf.string:  # items to strings first (flat values: rank 1, so no recursion here)
            if isinstance(value, tf.RaggedTensor):
                value = value.with_flat_values(_stringify(task, out, value.flat_values))
            else:
                value = tf.reshape(_stringify(task, out, tf.reshape(value, [-1])), tf.shape(value))
        return tf.strings.reduce_join(value, axis=-1, separator=ROW_JOINER)
    if isinstance(value, tf.RaggedTensor):
        raise ValueError(f"Task {task!r}: field {out!r} is a nested sequence (ragged, rank {rank}); map a feature of "
                         "rank 2 or less instead")
    if rank is not None and rank > 2:
        raise ValueError(f"Task {task!r}: field {out!r} has rank {rank}; only scalars, vectors and rank-2 rows "
                         "(joined per row) are supported")
    if value.dtype == tf.string:
        return value
    if value.dtype == tf.bool:
        return tf.where(value, tf.constant("true"), tf.constant("false"))
    if value.dtype.is_floating:
        return tf.strings.as_string(value, shortest=True)
    if value.dtype.is_integer:
        return tf.strings.as_string(value)
    raise ValueError(f"Task {task!r}: field {out!r} has dtype {value.dtype.name}, which cannot be turned into a string")


def _lookup(task: str, example: Mapping[str, Any], out: str, path: str) -> Any:
    value: Any = example
    walked = []
    for part in path.split("/"):
        if not isinstance(value, Mapping) or part not in value:
            have = sorted(value) if isinstance(value, Mapping) else []
            at = "/".join(walked) or "<top level>"
            raise ValueError(
                f"Task {task!r}: field {out!r} reads feature {path!r}, but {at} has no {part!r}; available: {', '.join(have)}"
            )
        value = value[part]
        walked.append(part)
    return value


class TfdsFieldsDataSource(seqio.TfdsDataSource):
    """A seqio.TfdsDataSource that never downloads, maps fields and returns strings.

    sharding="examples" (default) reads the split in one global order on every host and keeps
    every num_shards-th example: exact, disjoint shards for any number of hosts and files.
    sharding="files" lets TFDS/seqio shard by files (less I/O; needs at least as many files as hosts).
    """

    def __init__(
        self,
        task_name: str,
        tfds_name: str,
        split: str,
        field_map: Mapping[str, str] | Sequence[tuple[str, str]],
        data_dir: Optional[os.PathLike | str] = None,
        *,
        sharding: str = "examples",
    ):
        if sharding not in ("examples", "files"):
            raise ValueError(f"Task {task_name!r}: sharding must be 'examples' or 'files', got {sharding!r}")
        fmap = tuple(field_map.items()) if isinstance(field_map, Mapping) else tuple(field_map)
        if not fmap:
            raise ValueError(f"Task {task_name!r}: empty field map for TFDS dataset {tfds_name!r}")
        super().__init__(
            tfds_name=tfds_name,
            tfds_data_dir=None if data_dir is None else os.fspath(data_dir),
            splits={TRAIN: split},
            read_only=True,
        )
        self.task_name = task_name
        self.tfds_name = tfds_name
        self.tfds_split = split
        self.field_map = fmap
        self.data_dir = None if data_dir is None else Path(data_dir)
        self.sharding = sharding

    @property
    def supports_arbitrary_sharding(self) -> bool:
        return self.sharding == "examples"

    def _how_to_get(self) -> str:
        name = self.tfds_name.split(":")[0]
        where = self.data_dir or "~/tensorflow_datasets"
        return (
            f"Prepare it on a machine with network access: `tfds build {name} --data_dir {where}` "
            "(datasets such as newsroom and story_cloze need a manual download first), then copy the directory "
            "here and pass it as tfds_data_dir (or drop the task with allow_missing_tasks)."
        )

    def _missing(self, detail: str) -> MissingDataError:
        where = self.data_dir or "the default TFDS data_dir"
        return MissingDataError(self.task_name, f"TFDS dataset {self.tfds_name!r} is not prepared in {where} ({detail})", self._how_to_get())

    def get_dataset(
        self,
        split: Optional[str] = TRAIN,
        shuffle: bool = True,
        seed: Optional[int] = None,
        shard_info: Optional[seqio.ShardInfo] = None,
        *,
        sequence_length: Optional[Mapping[str, int]] = None,
        use_cached: bool = False,
        num_epochs: Optional[int] = 1,
    ) -> tf.data.Dataset:
        split = split or TRAIN
        _check_split(self.task_name, split, tuple(self._splits))
        seed = _as_int_seed(seed)
        try:
            ds = super().get_dataset(
                split, shuffle=shuffle, seed=seed, shard_info=shard_info if self.sharding == "files" else None
            )
        except AssertionError as e:  # TFDS: "could not find data in <dir>"
            if "could not find data" in str(e) or "download_and_prepare" in str(e):
                raise self._missing(str(e).split(" Please")[0].rstrip(".")) from e
            raise
        except Exception as e:  # unknown dataset/version with nothing on disk
            if type(e).__name__ in ("DatasetNotFoundError", "DatasetVariantBlockedError") or isinstance(e, FileNotFoundError):
                raise self._missing(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
            raise
        if self.sharding == "examples" and shard_info is not None and shard_info.num_shards > 1:
            ds = ds.shard(shard_info.num_shards, shard_info.index)
        # Fail now (not mid-iteration) if a mapped feature does not exist.
        spec = ds.element_spec
        for out, path in self.field_map:
            _lookup(self.task_name, spec, out, path)
        task, fmap = self.task_name, self.field_map

        def to_strings(example):
            return {out: _stringify(task, out, _lookup(task, example, out, path)) for out, path in fmap}

        return ds.map(to_strings, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def tfds_source(
    task_name: str,
    tfds_name: str,
    split: str,
    field_map: Mapping[str, str] | Sequence[tuple[str, str]],
    data_dir: Optional[os.PathLike | str] = None,
    *,
    sharding: str = "examples",
) -> TfdsFieldsDataSource:
    return TfdsFieldsDataSource(task_name, tfds_name, split, field_map, data_dir, sharding=sharding)


# --------------------------------------------------------------------------------------------
# Hugging Face datasets (P3). Optional: needs `pip install datasets`.


def _import_datasets(task_name: str, dataset: str):
    try:
        import datasets  # type: ignore
    except ImportError as e:
        raise OptionalDependencyError(
            f"Task {task_name!r} reads {dataset} through the Hugging Face `datasets` package, which is not installed. "
            "Install it (pip install datasets) to use the P3/T0 tasks, or drop them with allow_missing_tasks."
        ) from e
    return datasets


class HfDataSource(_IndexedDataSource):
    """Rows of a Hugging Face dataset split, fields mapped to strings (P3: inputs/targets/answer choices).

    Paths in ``optional_lists`` are list columns that only some configs (or rows) have: they are always declared
    as string vectors and read as [] where absent. P3 is the case in point: a subset has an ``answer_choices``
    column only if its prompt defines answer choices, yet one catalog field map serves all 193 subsets.
    """

    #: Optional list columns when the caller names none.
    DEFAULT_OPTIONAL_LISTS = frozenset({"answer_choices"})

    def __init__(
        self,
        task_name: str,
        dataset: str,
        config: Optional[str],
        split: str,
        field_map: Mapping[str, str] | Sequence[tuple[str, str]],
        cache_dir: Optional[os.PathLike | str] = None,
        *,
        load_fn: Optional[Callable[..., Any]] = None,
        optional_lists: Optional[Sequence[str] | frozenset[str]] = None,
    ):
        fmap = tuple(field_map.items()) if isinstance(field_map, Mapping) else tuple(field_map)
        if not fmap:
            raise ValueError(f"Task {task_name!r}: empty field map for HF dataset {dataset!r}")
        self.dataset = dataset
        self.config = config or None
        self.hf_split = split
        self.field_map = fmap
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self._load_fn = load_fn
        self.optional_lists = frozenset(self.DEFAULT_OPTIONAL_LISTS if optional_lists is None else optional_lists)
        self._rows = None
        self._vector_fields: Optional[set[str]] = None
        # The signature is known once the dataset's features are; vectors are declared lazily.
        super().__init__(task_name, {out: tf.TensorSpec([], tf.string) for out, _ in fmap})

    def _how_to_get(self) -> str:
        cfg = f", {self.config!r}" if self.config else ""
        cache = f", cache_dir={str(self.cache_dir)!r}" if self.cache_dir else ""
        return (
            "Download it on a machine with network access: python -c \"import datasets; "
            f"datasets.load_dataset({self.dataset!r}{cfg}, split={self.hf_split!r}{cache})\", copy the cache here, "
            "pass it as hf_cache_dir and set HF_DATASETS_OFFLINE=1 (or drop the task with allow_missing_tasks)."
        )

    def _check_available(self) -> None:
        if self._load_fn is None:
            _import_datasets(self.task_name, self.dataset)

    def _prepare(self) -> int:
        if self._rows is None:
            load = self._load_fn
            if load is None:
                load = _import_datasets(self.task_name, self.dataset).load_dataset
            try:
                rows = load(self.dataset, self.config, split=self.hf_split,
                            **({"cache_dir": os.fspath(self.cache_dir)} if self.cache_dir else {}))
            except (FileNotFoundError, ConnectionError, OSError) as e:
                raise MissingDataError(
                    self.task_name, f"HF dataset {self.dataset!r} config {self.config!r} is not available ({type(e).__name__}: {e})",
                    self._how_to_get(),
                ) from e
            except Exception as e:
                if type(e).__name__ in ("DatasetNotFoundError", "DataFilesNotFoundError", "OfflineModeIsEnabled"):
                    raise MissingDataError(
                        self.task_name, f"HF dataset {self.dataset!r} config {self.config!r} is not available ({type(e).__name__}: {e})",
                        self._how_to_get(),
                    ) from e
                raise
            if len(rows) == 0:
                raise MissingDataError(self.task_name, f"HF dataset {self.dataset!r} config {self.config!r} split {self.hf_split!r} is empty", self._how_to_get())
            first = rows[0]
            vectors = set()
            for out, path in self.field_map:
                if path in self.optional_lists:  # a vector whether or not this config has the column
                    vectors.add(out)
                    continue
                value = _lookup(self.task_name, first, out, path)
                if isinstance(value, (list, tuple)):
                    vectors.add(out)
            self._vector_fields = vectors
            self.output_signature = {out: tf.TensorSpec([None] if out in vectors else [], tf.string) for out, _ in self.field_map}
            self._rows = rows
        return len(self._rows)

    def _example(self, position: int) -> dict[str, Any]:
        row = self._rows[position]
        out = {}
        for name, path in self.field_map:
            if path in self.optional_lists and not _has_path(row, path):
                out[name] = []
                continue
            value = _lookup(self.task_name, row, name, path)
            if path in self.optional_lists and value is None:  # datasets fills a column some rows lack with None
                value = []
            if name in self._vector_fields:
                if not isinstance(value, (list, tuple)):
                    raise MalformedDataError(f"{self.dataset}/{self.config}", f"row {position}", f"field {path!r} is not a list")
                out[name] = [_to_str(self.dataset, position, path, v) for v in value]
            else:
                out[name] = _to_str(self.dataset, position, path, value)
        return out


def _has_path(row: Mapping[str, Any], path: str) -> bool:
    value: Any = row
    for part in path.split("/"):
        if not isinstance(value, Mapping) or part not in value:
            return False
        value = value[part]
    return True


def _to_str(where: str, position: int, path: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return str(value)
    raise MalformedDataError(where, f"row {position}", f"field {path!r} has type {type(value).__name__}, not a string or number")


def hf_source(
    task_name: str,
    dataset: str,
    config: Optional[str],
    split: str,
    field_map: Mapping[str, str] | Sequence[tuple[str, str]],
    cache_dir: Optional[os.PathLike | str] = None,
    *,
    load_fn: Optional[Callable[..., Any]] = None,
    optional_lists: Optional[Sequence[str] | frozenset[str]] = None,
) -> HfDataSource:
    """``load_fn`` replaces datasets.load_dataset (tests, or a custom offline reader); ``optional_lists``: see
    :class:`HfDataSource`."""
    return HfDataSource(task_name, dataset, config, split, field_map, cache_dir, load_fn=load_fn,
                        optional_lists=optional_lists)


# --------------------------------------------------------------------------------------------
# Catalog records -> sources.


def source_for_task(
    record: catalog_lib.TaskRecord,
    *,
    tfds_data_dir: Optional[os.PathLike | str] = None,
    niv2_dir: Optional[os.PathLike | str] = None,
    cot_dir: Optional[os.PathLike | str] = None,
    hf_cache_dir: Optional[os.PathLike | str] = None,
    skip_malformed: bool = False,
    niv2_max_instances: Optional[int] = None,
    tfds_sharding: str = "examples",
) -> seqio.DataSource:
    """The seqio DataSource for a catalog task. Building one reads nothing; get_dataset does."""
    spec = record.loader
    if spec.kind == "tfds":
        return tfds_source(record.name, spec.name, spec.split, spec.field_map, tfds_data_dir, sharding=tfds_sharding)
    if spec.kind == "hf":
        return hf_source(record.name, spec.name, spec.config or None, spec.split, spec.field_map, hf_cache_dir)
    if spec.kind == "niv2":
        return niv2_source(record.name, niv2_dir, spec.name, max_instances=niv2_max_instances, skip_malformed=skip_malformed)
    if spec.kind == "cot_tsv":
        return cot_tsv_source(record.name, cot_dir, spec.name, skip_malformed=skip_malformed)
    reason = record.disabled_reason or "its data was never released"
    raise MissingDataError(record.name, f"no loader exists for this task: {reason}", "It cannot be trained on; leave it disabled.")
