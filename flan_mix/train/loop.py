"""train(): the gin-configurable training entry behind `python run.py train`.

Register the data, build the mesh, model and optimizer, resume from MODEL_DIR (or warm start
from INITIAL_CHECKPOINT_PATH), run the jitted step over host-local packed batches with a
progress bar, log metrics to TensorBoard and MODEL_DIR/metrics.jsonl, and checkpoint. What runs
after training (evaluation) is the launcher's business: train() returns the trained state.

The data side (seqio, TensorFlow) is imported inside train(), not at module level, so the rest
of flan_mix.train stays importable on machines without TensorFlow (the GPU benchmarks).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any, Callable, Mapping

import gin
import jax
import numpy as np
from jax.sharding import Mesh
from tqdm.auto import tqdm

from flan_mix.models.base import Model
from flan_mix.models.build import build_model
from flan_mix.runtime import checkpoints, partitioning
from flan_mix.runtime.run_config import run_config
from flan_mix.train import optim
from flan_mix.train.trainer import Trainer

log = logging.getLogger(__name__)


class MetricsWriter:
    """Append-only MODEL_DIR/metrics.jsonl plus TensorBoard event files (written by host 0)."""

    def __init__(self, model_dir: str):
        self.enabled = jax.process_index() == 0
        if not self.enabled:
            return
        from tensorboardX import SummaryWriter
        self.jsonl = open(os.path.join(model_dir, "metrics.jsonl"), "a")
        self.tb = SummaryWriter(os.path.join(model_dir, "tensorboard"))

    def write(self, step: int, metrics: Mapping[str, float], prefix: str = "train"):
        if not self.enabled:
            return
        record = {"step": step, **{f"{prefix}/{k}": float(v) for k, v in metrics.items()}}
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        for k, v in metrics.items():
            self.tb.add_scalar(f"{prefix}/{k}", float(v), step)

    def close(self):
        if self.enabled:
            self.jsonl.close()
            self.tb.close()


def write_config(model_dir: str, name: str = "config.gin"):
    if jax.process_index() == 0:
        with open(os.path.join(model_dir, name), "w") as f:
            f.write(gin.config_str())


@dataclasses.dataclass
class TrainResult:
    """What a caller needs to go on with the trained model (e.g. evaluate it in memory)."""
    model: Model
    params: Any
    mesh: Mesh
    vocabulary: Any
    final_step: int
    train_metrics: dict[str, float]


@gin.configurable
def train(use_packing: bool = True,
          num_microbatches: int = 1,
          dropout: bool = True,
          initial_checkpoint_path: str | None = None,
          log_every_steps: int = 20,
          periodic: Callable[[TrainResult], Mapping[str, float]] | None = None,
          periodic_every_steps: int = 0) -> TrainResult:
    """Trains to TRAIN_STEPS (resuming if MODEL_DIR has a checkpoint).

    periodic (given by the caller, e.g. the launcher's evaluation) runs every periodic_every_steps
    steps on the current state; the figures it returns are logged under "eval/". train/ itself
    knows nothing of evaluation.
    """
    from flan_mix.data import pipeline, registration
    run = run_config()
    if not run.mixture_or_task_name or not run.train_steps:
        raise ValueError("training needs MIXTURE_OR_TASK_NAME and TRAIN_STEPS (gin: run_config.*); "
                         "see gin/runs/default.gin.")
    os.makedirs(run.model_dir, exist_ok=True)
    vocabulary = registration.register_all()
    registration.check_name(run.mixture_or_task_name)
    model = build_model(vocab_size=vocabulary.vocab_size)
    mesh = partitioning.make_mesh()
    tx, schedule = optim.make_optimizer()
    trainer = Trainer(model, tx, mesh, partitioning.logical_axis_rules(), schedule=schedule,
                      num_microbatches=num_microbatches, dropout_seed=run.seed)
    abstract, shardings = trainer.abstract_state()
    ckpt = checkpoints.Checkpointer(run.model_dir)
    state = ckpt.restore_latest(abstract)
    if state is not None:
        log.info("resumed from %s at step %d", ckpt.directory, int(state.step))
    else:
        state = trainer.init_state(run.seed)
        if initial_checkpoint_path:
            params = checkpoints.restore_params(initial_checkpoint_path, model=model, mesh=mesh,
                                                rules=trainer.rules)
            state = state.replace(params=params)
    write_config(run.model_dir)
    start = int(jax.device_get(state.step))
    print(f"model: {model.config}\nmesh: {dict(mesh.shape)}  params: "
          f"{sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(abstract.params)):,}")

    batches = pipeline.get_batches(
        run.mixture_or_task_name, task_feature_lengths=run.task_feature_lengths, split="train",
        global_batch_size=run.batch_size, seed=run.seed, shuffle=True, pack=use_packing,
        shard_index=jax.process_index(), num_shards=jax.process_count(), start_batch=start,
        **model.batch_layout())
    step_fn = trainer.compile_train_step(shardings, dropout=dropout)
    writer = MetricsWriter(run.model_dir)
    metrics: dict[str, float] = {}
    bar = tqdm(total=run.train_steps, initial=start, desc="train", unit="step", dynamic_ncols=True)
    window_tokens, window_start = 0, time.perf_counter()
    try:
        for step in range(start, run.train_steps):
            batch = next(batches)
            window_tokens += model.count_tokens(batch)
            state, device_metrics = trainer.run_step(step_fn, state, batch)
            if (step + 1) % log_every_steps == 0 or step + 1 == run.train_steps:
                metrics = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
                elapsed = time.perf_counter() - window_start
                metrics["tokens_per_second"] = window_tokens * jax.process_count() / max(elapsed, 1e-9)
                window_tokens, window_start = 0, time.perf_counter()
                writer.write(step + 1, metrics)
                bar.set_postfix(loss=f"{metrics['loss']:.3f}", tok_s=f"{metrics['tokens_per_second']:.0f}")
            if periodic is not None and periodic_every_steps and (step + 1) % periodic_every_steps == 0:
                current = TrainResult(model=model, params=state.params, mesh=mesh, vocabulary=vocabulary,
                                      final_step=step + 1, train_metrics=metrics)
                writer.write(step + 1, periodic(current), prefix="eval")
            bar.update(1)
            ckpt.save(state)
        ckpt.save(state, force=True)
    finally:
        bar.close()
        ckpt.close()
        writer.close()
    write_config(run.model_dir, "operative_config.gin")
    return TrainResult(model=model, params=state.params, mesh=mesh, vocabulary=vocabulary,
                       final_step=run.train_steps, train_metrics=metrics)
