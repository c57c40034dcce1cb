"""The gin-configurable entries behind run.py: train() and evaluate().

train(): register the data, build the mesh, model and optimizer, resume from MODEL_DIR (or warm
start from INITIAL_CHECKPOINT_PATH), run the jitted step over host-local packed batches with a
progress bar, log metrics to TensorBoard and MODEL_DIR/metrics.jsonl, checkpoint, then evaluate.

The data side (seqio, TensorFlow) is imported inside the entries, not at module level, so the
rest of flan_mix.train stays importable on machines without TensorFlow (the GPU benchmarks).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any, Mapping, Sequence

import gin
import jax
import numpy as np
from tqdm.auto import tqdm

from flan_mix.models.t5 import T5Config, Transformer
from flan_mix.train import checkpoints, optim, partitioning
from flan_mix.train.trainer import Trainer

log = logging.getLogger(__name__)


def padded_vocab_size(vocab_size: int, multiple: int = 128) -> int:
    """T5 pads the embedding table to a multiple of 128 so it shards evenly over the model axis."""
    return -(-vocab_size // multiple) * multiple


@gin.configurable
def build_model(config: T5Config = gin.REQUIRED, vocabulary=None, attention_impl: str | None = None):
    """The Transformer for `config`, with vocab_size taken from the vocabulary when unset."""
    if config.vocab_size is None:
        if vocabulary is None:
            raise ValueError("T5Config.vocab_size is unset and no vocabulary was given.")
        config = dataclasses.replace(config, vocab_size=padded_vocab_size(vocabulary.vocab_size))
    elif vocabulary is not None and config.vocab_size < vocabulary.vocab_size:
        raise ValueError(f"T5Config.vocab_size={config.vocab_size} is smaller than the vocabulary "
                         f"({vocabulary.vocab_size} ids); fix the model gin file or the vocabulary.")
    if attention_impl is not None:
        config = dataclasses.replace(config, attention_impl=attention_impl)
    return Transformer(config)


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


def batch_shapes(task_feature_lengths: Mapping[str, int], batch_size: int):
    enc, dec = task_feature_lengths["inputs"], task_feature_lengths["targets"]
    return {"encoder_input_tokens": (batch_size, enc), "decoder_input_tokens": (batch_size, dec),
            "decoder_target_tokens": (batch_size, dec)}


def _count_tokens(batch: Mapping[str, np.ndarray]) -> int:
    return int(np.count_nonzero(batch["encoder_input_tokens"]) + batch["decoder_loss_weights"].sum())


@gin.configurable
def train(model_dir: str = gin.REQUIRED,
          mixture_or_task_name: str = gin.REQUIRED,
          task_feature_lengths: Mapping[str, int] = gin.REQUIRED,
          train_steps: int = gin.REQUIRED,
          batch_size: int = gin.REQUIRED,
          seed: int = 0,
          use_packing: bool = True,
          num_microbatches: int = 1,
          z_loss: float = 1e-4,
          loss_normalization: Any = "num_real_target_tokens",
          dropout: bool = True,
          initial_checkpoint_path: str | None = None,
          log_every_steps: int = 20,
          evaluate_after: bool = True) -> dict[str, Any]:
    """Trains to `train_steps` (resuming if MODEL_DIR has a checkpoint); returns the last metrics."""
    from flan_mix.data import pipeline, registration
    os.makedirs(model_dir, exist_ok=True)
    vocabulary = registration.register_all()
    registration.check_name(mixture_or_task_name)
    model = build_model(vocabulary=vocabulary)
    mesh = partitioning.make_mesh()
    rules = partitioning.logical_axis_rules()
    tx, schedule = optim.make_optimizer()
    trainer = Trainer(model, tx, mesh, rules, schedule=schedule, z_loss=z_loss,
                      loss_normalization=loss_normalization, num_microbatches=num_microbatches,
                      dropout_seed=seed)
    shapes = batch_shapes(task_feature_lengths, batch_size)
    abstract, shardings = trainer.abstract_state(shapes)
    ckpt = checkpoints.Checkpointer(model_dir)
    state = ckpt.restore_latest(abstract)
    if state is not None:
        log.info("resumed from %s at step %d", ckpt.directory, int(state.step))
    else:
        state = trainer.init_state(seed, shapes)
        if initial_checkpoint_path:
            params = checkpoints.restore_params(initial_checkpoint_path, abstract.params)
            state = state.replace(params=params)
    write_config(model_dir)
    start = int(jax.device_get(state.step))
    print(f"model: {model.config}\nmesh: {dict(mesh.shape)}  params: "
          f"{sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(abstract.params)):,}")

    batches = pipeline.get_batches(
        mixture_or_task_name, task_feature_lengths=task_feature_lengths, split="train",
        global_batch_size=batch_size, seed=seed, shuffle=True, pack=use_packing,
        shard_index=jax.process_index(), num_shards=jax.process_count(), start_batch=start)
    step_fn = trainer.compile_train_step(shardings, dropout=dropout)
    writer = MetricsWriter(model_dir)
    metrics: dict[str, float] = {}
    bar = tqdm(total=train_steps, initial=start, desc="train", unit="step", dynamic_ncols=True)
    window_tokens, window_start = 0, time.perf_counter()
    try:
        for step in range(start, train_steps):
            batch = next(batches)
            window_tokens += _count_tokens(batch)
            state, device_metrics = trainer.run_step(step_fn, state, batch)
            if (step + 1) % log_every_steps == 0 or step + 1 == train_steps:
                metrics = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
                elapsed = time.perf_counter() - window_start
                metrics["tokens_per_second"] = window_tokens * jax.process_count() / max(elapsed, 1e-9)
                window_tokens, window_start = 0, time.perf_counter()
                writer.write(step + 1, metrics)
                bar.set_postfix(loss=f"{metrics['loss']:.3f}", tok_s=f"{metrics['tokens_per_second']:.0f}")
            bar.update(1)
            ckpt.save(state)
        ckpt.save(state, force=True)
    finally:
        bar.close()
        ckpt.close()
        writer.close()
    write_config(model_dir, "operative_config.gin")
    result = {"final_step": train_steps, "train_metrics": metrics}
    if evaluate_after:
        from flan_mix.evaluation import generation
        result["eval"] = generation.evaluate_generation(model, state.params, mesh=mesh,
                                                        vocabulary=vocabulary, out_dir=model_dir)
    return result


@gin.configurable
def evaluate(model_dir: str = gin.REQUIRED, checkpoint_step: int | None = None,
             task_feature_lengths: Mapping[str, int] = gin.REQUIRED,
             batch_size: int = gin.REQUIRED) -> list[dict[str, Any]]:
    """Restores a checkpoint from MODEL_DIR (the latest unless checkpoint_step) and evaluates it."""
    from flan_mix.data import registration
    from flan_mix.evaluation import generation
    vocabulary = registration.register_all()
    model = build_model(vocabulary=vocabulary)
    mesh = partitioning.make_mesh()
    trainer = Trainer(model, optim.make_optimizer()[0], mesh, partitioning.logical_axis_rules())
    abstract, _ = trainer.abstract_state(batch_shapes(task_feature_lengths, batch_size))
    step_dir = checkpoint_step_dir(model_dir, checkpoint_step)
    params = checkpoints.restore_params(step_dir, abstract.params)
    return generation.evaluate_generation(model, params, mesh=mesh, vocabulary=vocabulary,
                                          out_dir=model_dir)


def checkpoint_step_dir(model_dir: str, step: int | None) -> str:
    root = os.path.join(os.path.abspath(model_dir), "checkpoints")
    steps = sorted(int(d) for d in os.listdir(root) if d.isdigit()) if os.path.isdir(root) else []
    if not steps:
        raise FileNotFoundError(f"no checkpoint in {root}; train first (python run.py train "
                                f"--gin.MODEL_DIR=\"'{model_dir}'\") or point MODEL_DIR at a trained run.")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise FileNotFoundError(f"no checkpoint for step {step} in {root}; available: {steps}")
    return os.path.join(root, str(step))
