"""orbax checkpoints: save every N steps, keep K, resume, and restore params for inference.

On disk a step holds {step, params, opt_state} (TrainState). Restores go straight into the
shardings of the current mesh, so a checkpoint written on one mesh restores onto another. Before
restoring, shapes are compared with the model being built, so a MODEL_DIR holding another model
fails with a message instead of an orbax stack trace. restore_params needs only the model: no
optimizer and no batch shapes.

Saves are asynchronous (orbax's async checkpointing): save() returns once the arrays are copied to
host memory; the files are written and committed in a background thread while training goes on.
A step directory gets its final name only when complete (orbax writes <step>.orbax-checkpoint-tmp
and renames it), so a process killed mid-write leaves nothing that a restore would read. The next
save, wait() and close() wait for the write in flight, so a closed Checkpointer has every
checkpoint complete.

Several processes (jax.distributed): every process calls save() and restore_latest() for the same
step, in the same order (the step loop does), and MODEL_DIR must be one shared directory. Each
process writes the shards its devices hold; orbax synchronizes the processes through the
jax.distributed client and process 0 commits the step (the rename) once all are done. What is
on disk is the global arrays, not per-process pieces, so a checkpoint written by N processes
restores on any process count and mesh (tests/test_multihost.py: 2 processes -> 1).
"""
from __future__ import annotations

import gzip
import json
import os
import re
from typing import Any

import flax.linen as nn
import flax.struct
import gin
import jax
import orbax.checkpoint as ocp
from jax.sharding import Mesh

from flan_mix.runtime import partitioning


class MissingCheckpointError(FileNotFoundError):
    """No checkpoint where one was asked for; the message says where it looked and what to do."""


class CheckpointMismatchError(ValueError):
    """A checkpoint whose parameter shapes do not fit the model being built."""


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any


def _as_tree(state: TrainState) -> dict[str, Any]:
    return {"step": state.step, "params": state.params, "opt_state": state.opt_state}


def _restore_args(abstract_tree):
    return jax.tree_util.tree_map(
        lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding, global_shape=a.shape, dtype=a.dtype),
        abstract_tree)


def _metadata_tree(meta):
    """The saved pytree's metadata, whichever orbax wrapper (step/item metadata) it comes in."""
    meta = getattr(meta, "item_metadata", meta)
    return getattr(meta, "tree", meta)


def _flat_shapes(tree) -> dict[str, tuple]:
    return {jax.tree_util.keystr(p): tuple(getattr(x, "shape", ()))
            for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def check_shapes(saved_tree, expected_tree, where: str):
    """Raises if the saved parameter shapes differ from the model being built."""
    saved, expected = _flat_shapes(saved_tree), _flat_shapes(expected_tree)
    missing = sorted(set(expected) - set(saved))
    extra = sorted(set(saved) - set(expected))
    wrong = [(k, saved[k], expected[k]) for k in sorted(set(saved) & set(expected))
             if saved[k] != expected[k]]
    if not (missing or extra or wrong):
        return
    lines = [f"the checkpoint at {where} does not fit the model being built:"]
    lines += [f"  {k}: checkpoint {s}, model {e}" for k, s, e in wrong[:8]]
    lines += [f"  missing in checkpoint: {k}" for k in missing[:4]]
    lines += [f"  not in model: {k}" for k in extra[:4]]
    lines.append("Fix: point MODEL_DIR at a fresh directory, or use the model gin file (and vocabulary) "
                 "the checkpoint was trained with.")
    raise CheckpointMismatchError("\n".join(lines))


@gin.configurable
class Checkpointer:
    """A thin wrapper over ocp.CheckpointManager in MODEL_DIR/checkpoints."""

    def __init__(self, model_dir: str, save_every_steps: int = 1000, keep: int = 3):
        self.directory = os.path.join(os.path.abspath(model_dir), "checkpoints")
        options = ocp.CheckpointManagerOptions(save_interval_steps=save_every_steps, max_to_keep=keep,
                                               create=True, enable_async_checkpointing=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_handlers=ocp.PyTreeCheckpointHandler())
        # One file per process and step: each host's data stream reads its own shard, so positions differ.
        self.data_state_dir = os.path.join(os.path.abspath(model_dir), "data_state")

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def should_save(self, step: int) -> bool:
        """Whether save(state, step=step) would write (the interval, the first save of a fresh run,
        orbax's multi-host preemption notice); host-side only, nothing is read from the devices."""
        return step != self.manager.latest_step() and self.manager.should_save(step)

    def save(self, state: TrainState, force: bool = False, *, step: int | None = None,
             metadata: dict[str, Any] | None = None, data_state: dict | None = None) -> bool:
        """Saves if the interval says so (or force); a step already on disk is not written twice.

        step: state.step as a host int, when the caller knows it (the step loop does): reading it
        from the device would wait for the step to finish. metadata: small JSON-able figures kept
        with the step (read back with metadata()). data_state: this process's data-stream position after
        the step (JSON-able; read back with data_state()). Returns once the arrays are copied to the host;
        the write goes on in the background (wait() or close() to be sure it is on disk).
        """
        step = int(jax.device_get(state.step)) if step is None else step
        if step == self.manager.latest_step():
            return False
        if not (force or self.manager.should_save(step)):
            return False
        if data_state is not None:
            # Written (synchronously, it is small) before the step: a step on disk always has its data state.
            _write_json_gz(self._data_state_path(step), data_state)
        saved = self.manager.save(step, args=ocp.args.PyTreeSave(_as_tree(state)), force=True,
                                  custom_metadata=metadata)
        self._prune_data_states(keep={step})
        return saved

    def _data_state_path(self, step: int, process_index: int | None = None) -> str:
        process_index = jax.process_index() if process_index is None else process_index
        return os.path.join(self.data_state_dir, f"step_{step}.process_{process_index}.json.gz")

    def data_state(self, step: int) -> dict | None:
        """This process's data-stream state saved with `step`; None when none was (a checkpoint from before
        data states were saved, or one imported with save_params)."""
        path = self._data_state_path(step)
        if not os.path.exists(path):
            return None
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return json.load(f)

    def _prune_data_states(self, keep: set[int]) -> None:
        """Removes data states whose checkpoint step is gone (orbax keeps `keep` steps)."""
        if not os.path.isdir(self.data_state_dir):
            return
        live = set(self.manager.all_steps()) | keep
        for name in os.listdir(self.data_state_dir):
            m = re.fullmatch(r"step_(\d+)\.process_\d+\.json\.gz", name)
            if m and int(m.group(1)) not in live:
                os.remove(os.path.join(self.data_state_dir, name))

    def metadata(self, step: int | None = None) -> dict[str, Any]:
        """The metadata saved with a step (the latest by default); {} when none."""
        step = self.latest_step() if step is None else step
        if step is None:
            return {}
        return dict(getattr(self.manager.metadata(step), "custom_metadata", None) or {})

    def wait(self):
        self.manager.wait_until_finished()

    def restore_latest(self, abstract_state: TrainState) -> TrainState | None:
        step = self.latest_step()
        if step is None:
            return None
        target = _as_tree(abstract_state)
        step_dir = os.path.join(self.directory, str(step))
        check_shapes(_saved_params_metadata(step_dir), target["params"], step_dir)
        tree = self.manager.restore(step, args=ocp.args.PyTreeRestore(
            item=target, restore_args=_restore_args(target)))
        return TrainState(step=tree["step"], params=tree["params"], opt_state=tree["opt_state"])

    def close(self):
        self.manager.wait_until_finished()
        self._prune_data_states(keep=set())
        self.manager.close()


def _write_json_gz(path: str, value: Any) -> None:
    """Atomic: a reader never sees half a file (write to a temporary name, then rename)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=3) as f:
        json.dump(value, f, separators=(",", ":"))
    os.replace(tmp, path)


def checkpoint_step_dir(model_dir: str, step: int | None = None) -> str:
    """MODEL_DIR/checkpoints/<step>: the latest step unless `step` is given."""
    root = os.path.join(os.path.abspath(model_dir), "checkpoints")
    steps = sorted(int(d) for d in os.listdir(root) if d.isdigit()) if os.path.isdir(root) else []
    if not steps:
        raise MissingCheckpointError(f"no checkpoint in {root}; train first (python run.py train "
                                f"--gin.MODEL_DIR=\"'{model_dir}'\") or point MODEL_DIR at a trained run.")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise MissingCheckpointError(f"no checkpoint for step {step} in {root}; available: {steps}")
    return os.path.join(root, str(step))


def _item_dir(step_dir: str) -> str:
    """CheckpointManager keeps the pytree in <step>/default; accept either directory."""
    step_dir = os.path.abspath(step_dir)
    item_dir = os.path.join(step_dir, "default")
    path = item_dir if os.path.isdir(item_dir) else step_dir
    if not os.path.isdir(path):
        raise MissingCheckpointError(f"checkpoint directory {step_dir!r} does not exist; pass a model directory "
                                "or a step directory such as MODEL_DIR/checkpoints/<step>.")
    return path


def _saved_params_metadata(step_dir: str):
    path = _item_dir(step_dir)
    meta_tree = _metadata_tree(ocp.PyTreeCheckpointer().metadata(path))
    if meta_tree is None or "params" not in meta_tree:
        raise ValueError(f"{path} holds no 'params' entry; is it a flan_mix checkpoint?")
    return meta_tree["params"]


def abstract_params(model, mesh: Mesh, rules):
    """(ShapeDtypeStruct params carrying their shardings, the shardings) of `model` on `mesh`."""
    boxed = model.abstract_params()
    shardings = partitioning.logical_to_shardings(nn.get_partition_spec(boxed), mesh, rules)
    params = jax.tree_util.tree_map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                    nn.meta.unbox(boxed), shardings)
    return params, shardings


def restore_params(path: str, step: int | None = None, *, model, mesh: Mesh, rules=None):
    """The params of a checkpoint, sharded for `model` on `mesh`; no optimizer state is read.

    path: a MODEL_DIR (its latest step, or `step`) or a step directory (MODEL_DIR/checkpoints/N).
    """
    if os.path.isdir(os.path.join(path, "checkpoints")):
        path = checkpoint_step_dir(path, step)
    elif step is not None:
        raise ValueError(f"restore_params(step={step}) needs a MODEL_DIR; {path} has no checkpoints/ "
                         "directory (it is taken as one step's directory).")
    rules = partitioning.logical_axis_rules() if rules is None else rules
    target = {"params": abstract_params(model, mesh, rules)[0]}
    path = _item_dir(path)
    check_shapes(_saved_params_metadata(path), target["params"], path)
    tree = ocp.PyTreeCheckpointer().restore(path, args=ocp.args.PyTreeRestore(
        item=target, restore_args=_restore_args(target), partial_restore=True))
    return tree["params"]


def save_params(model_dir: str, params, step: int = 0) -> str:
    """Writes params alone as MODEL_DIR/checkpoints/<step> (e.g. an imported HF model); restore_params
    and INITIAL_CHECKPOINT_PATH read it. Returns the step directory."""
    step_dir = os.path.join(os.path.abspath(model_dir), "checkpoints", str(step))
    ocp.PyTreeCheckpointer().save(os.path.join(step_dir, "default"), {"params": params})
    return step_dir
