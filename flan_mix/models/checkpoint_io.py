"""Reading and writing HF transformers checkpoint directories, for every model family.

What from_pretrained / save_pretrained use: config.json next to model.safetensors, or next to
shards listed in model.safetensors.index.json. Tensors are read lazily (one in memory at a time)
as numpy; bfloat16 is widened to float32 by hand because numpy has no bfloat16. Pure numpy +
safetensors: no torch, no TensorFlow. The name maps live in convert.py (T5) and hf_llama.py.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"


class CheckpointError(ValueError):
    """A checkpoint that does not fit our model: the message names the file and the tensor."""


class LazyCheckpoint(Mapping):
    """Tensor name -> numpy array, read from safetensors files on access (one tensor in memory at a time)."""

    def __init__(self, files: Mapping[str, str]):
        self._file_of = dict(files)  # tensor name -> path

    def file_of(self, name: str) -> str:
        return self._file_of.get(name, "")

    def __getitem__(self, name: str) -> np.ndarray:
        path = self._file_of[name]
        with safe_open(path, framework="np") as f:
            if f.get_slice(name).get_dtype() == "BF16":  # numpy has no bfloat16: widen by hand
                return _read_bf16(path, name)
            return f.get_tensor(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._file_of)

    def __len__(self) -> int:
        return len(self._file_of)


def _read_bf16(path: str, name: str) -> np.ndarray:
    with open(path, "rb") as fh:
        header_len = int.from_bytes(fh.read(8), "little")
        info = json.loads(fh.read(header_len))[name]
        begin, end = info["data_offsets"]
        fh.seek(8 + header_len + begin)
        raw = np.frombuffer(fh.read(end - begin), dtype="<u2")
    # bfloat16 is the top half of a float32: shifting it up is exact.
    return (raw.astype(np.uint32) << 16).view(np.float32).reshape(info["shape"])


def _tensor_names(path: str) -> list[str]:
    try:
        with safe_open(path, framework="np") as f:
            return list(f.keys())
    except Exception as e:  # safetensors raises its own error types for truncated/corrupt files
        raise CheckpointError(f"{path}: not a readable safetensors file ({e}).") from e


def read_config_json(directory: str | os.PathLike) -> tuple[dict[str, Any], str]:
    """(config.json as a dict, its path)."""
    config_path = os.path.join(os.fspath(directory), CONFIG_NAME)
    if not os.path.isfile(config_path):
        raise CheckpointError(f"{config_path}: not found; an HF checkpoint directory holds config.json "
                              "next to its weights.")
    with open(config_path) as f:
        try:
            return json.load(f), config_path
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{config_path}: not valid JSON ({e}).") from e


def open_weights(directory: str | os.PathLike, hf_class: str) -> tuple[LazyCheckpoint, str]:
    """(the directory's tensors, the weights file or index they came from).

    hf_class names the transformers class in the hint for directories holding only torch/TF weights.
    """
    directory = os.fspath(directory)
    single, index = os.path.join(directory, WEIGHTS_NAME), os.path.join(directory, WEIGHTS_INDEX_NAME)
    files: dict[str, str] = {}
    if os.path.isfile(single):
        return LazyCheckpoint({name: single for name in _tensor_names(single)}), single
    if os.path.isfile(index):
        with open(index) as f:
            try:
                weight_map = json.load(f)["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise CheckpointError(f"{index}: not a safetensors index (needs a 'weight_map'): {e}.") from e
        for shard in sorted(set(weight_map.values())):
            shard_path = os.path.join(directory, shard)
            if not os.path.isfile(shard_path):
                raise CheckpointError(f"{index} lists shard {shard!r}, but {shard_path} does not exist.")
            names = set(_tensor_names(shard_path))
            for name, where in weight_map.items():
                if where == shard:
                    if name not in names:
                        raise CheckpointError(
                            f"{index} puts tensor {name!r} in {shard_path}, which has no such tensor.")
                    files[name] = shard_path
        return LazyCheckpoint(files), index
    found = sorted(os.listdir(directory))
    hint = ""
    if any(n.endswith((".bin", ".pt", ".h5", ".msgpack")) for n in found):
        hint = (" Only safetensors are read; convert once with transformers: "
                f"{hf_class}.from_pretrained(dir).save_pretrained(out_dir).")
    raise CheckpointError(f"{directory}: neither {WEIGHTS_NAME} nor {WEIGHTS_INDEX_NAME} (found: "
                          f"{', '.join(found) or 'nothing'}).{hint}")


def write_checkpoint(directory: str | os.PathLike, hf_config: Mapping[str, Any], state: Mapping[str, np.ndarray],
                     max_shard_bytes: int | None = None) -> list[str]:
    """Writes config.json and the tensors (one model.safetensors, or shards + index when they exceed
    max_shard_bytes); returns the paths written."""
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    written = []
    config_path = os.path.join(directory, CONFIG_NAME)
    with open(config_path, "w") as f:
        json.dump(hf_config, f, indent=2, sort_keys=True)
        f.write("\n")
    written.append(config_path)

    metadata = {"format": "pt"}  # transformers refuses safetensors files without it
    total = sum(w.nbytes for w in state.values())
    if max_shard_bytes is None or total <= max_shard_bytes:
        path = os.path.join(directory, WEIGHTS_NAME)
        save_file(dict(state), path, metadata=metadata)
        return written + [path]

    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name, w in state.items():
        if shards[-1] and size + w.nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = w
        size += w.nbytes
    weight_map = {}
    for i, shard in enumerate(shards, start=1):
        shard_name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        path = os.path.join(directory, shard_name)
        save_file(shard, path, metadata=metadata)
        written.append(path)
        weight_map.update({name: shard_name for name in shard})
    index_path = os.path.join(directory, WEIGHTS_INDEX_NAME)
    with open(index_path, "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2, sort_keys=True)
        f.write("\n")
    return written + [index_path]
