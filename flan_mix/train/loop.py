"""train(): the gin-configurable training entry behind `python run.py train`.

Register the data, build the mesh, model and optimizer, resume from MODEL_DIR (or warm start
from INITIAL_CHECKPOINT_PATH), run the jitted step over host-local packed batches with a
progress bar, log metrics to TensorBoard and MODEL_DIR/metrics.jsonl, and checkpoint. What runs
after training (evaluation) is the launcher's business: train() returns the trained state.

The step loop waits for the devices only every log_every_steps steps (to log) and at checkpoint
saves; checkpoints are written in the background (runtime/checkpoints.py). SIGTERM saves and
exits cleanly, and NaN/inf steps stop the run or are skipped (train.nonfinite): see resilience.py.

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
from flan_mix.train import optim, resilience
from flan_mix.train.trainer import Trainer, tree_all_finite

log = logging.getLogger(__name__)


class MetricsWriter:
    """MODEL_DIR/metrics.jsonl plus TensorBoard event files (written by host 0).

    Opened at start_step (a resume), it first drops the rows of steps after start_step: they were
    logged after the checkpoint being resumed from, and those steps are about to run again and be
    logged anew (the same figures: resume is exact), so keeping them would list each step twice.
    """

    def __init__(self, model_dir: str, start_step: int = 0):
        self.enabled = jax.process_index() == 0
        if not self.enabled:
            return
        from tensorboardX import SummaryWriter
        path = os.path.join(model_dir, "metrics.jsonl")
        dropped = drop_rows_after(path, start_step)
        if dropped:
            log.info("metrics.jsonl: dropped %d row(s) after step %d, which run again from the checkpoint",
                     dropped, start_step)
        self.jsonl = open(path, "a")
        # purge_step: TensorBoard hides the events of steps > start_step that earlier event files hold, so a
        # resumed run's curves have each step once, as metrics.jsonl does.
        self.tb = SummaryWriter(os.path.join(model_dir, "tensorboard"),
                                purge_step=start_step + 1 if start_step else None)

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


def drop_rows_after(path: str, step: int) -> int:
    """Rewrites the JSONL file at `path` without its rows whose "step" is past `step` (atomically:
    a temporary file renamed over it). A last line cut short by a kill is dropped too; any other
    line that does not parse is kept as it is. Returns how many lines were dropped."""
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        lines = f.readlines()
    kept = []
    for i, line in enumerate(lines):
        try:
            row_step = json.loads(line).get("step")
        except (json.JSONDecodeError, AttributeError):
            if i == len(lines) - 1 and not line.endswith("\n"):
                continue  # torn final write
            kept.append(line)
            continue
        if not isinstance(row_step, int) or row_step <= step:
            kept.append(line)
    if len(kept) == len(lines):
        return 0
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.writelines(kept)
    os.replace(tmp, path)
    return len(lines) - len(kept)


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
    skipped_steps: int = 0  # non-finite steps skipped (train.nonfinite = 'skip'), resumed runs included


@gin.configurable
def train(use_packing: bool = True,
          num_microbatches: int = 1,
          dropout: bool = True,
          initial_checkpoint_path: str | None = None,
          log_every_steps: int = 20,
          periodic: Callable[[TrainResult], Mapping[str, float]] | None = None,
          periodic_every_steps: int = 0,
          nonfinite: str = "stop") -> TrainResult:
    """Trains to TRAIN_STEPS (resuming if MODEL_DIR has a checkpoint).

    periodic (given by the caller, e.g. the launcher's evaluation) runs every periodic_every_steps
    steps on the current state; the figures it returns are logged under "eval/". train/ itself
    knows nothing of evaluation.

    nonfinite: what a step whose loss, gradient norm or optimizer update is NaN or inf does.
      'stop': raise resilience.NonFiniteError naming the first such step, the metric(s) and what
        to try. It is noticed where the loop reads the devices anyway: every log_every_steps steps
        and before each checkpoint save, which also checks that the whole state is finite, so a
        non-finite state is never saved and the last good checkpoint stays the latest.
      'skip': such a step leaves params and optimizer state unchanged (decided on the device); the
        step counter still advances, so the step keeps naming the batch it consumed. Skipped steps
        are counted (kept in the checkpoint metadata across resumes), logged as
        train/skipped_steps and reported at the end.

    SIGTERM (preemption, a SLURM time limit) while the steps run saves a checkpoint at the
    current step and raises resilience.Preempted (SystemExit with code 0); the next start resumes
    there. On a resume, the rows of metrics.jsonl past the resumed step are dropped (they run again).
    """
    from flan_mix.data import pipeline, registration
    if nonfinite not in resilience.NONFINITE_POLICIES:
        raise ValueError(f"train.nonfinite={nonfinite!r}: choose one of {resilience.NONFINITE_POLICIES}.")
    skip = nonfinite == "skip"
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
                      num_microbatches=num_microbatches, dropout_seed=run.seed, skip_nonfinite=skip)
    abstract, shardings = trainer.abstract_state()
    ckpt = checkpoints.Checkpointer(run.model_dir)
    state = ckpt.restore_latest(abstract)
    skipped_before = 0
    if state is not None:
        skipped_before = int(ckpt.metadata().get("skipped_steps", 0))
        print(f"resuming from {ckpt.directory}/{ckpt.latest_step()} at step {int(state.step)}")
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

    feed = partitioning.host_feed(mesh, run.batch_size)  # this process's rows of the global batch
    stream_args = dict(task_feature_lengths=run.task_feature_lengths, split="train", global_batch_size=run.batch_size,
                       seed=run.seed, shuffle=True, pack=use_packing, **feed.pipeline_shard, **model.batch_layout())
    batches = None
    data_state = ckpt.data_state(start) if start else None
    if data_state is not None:
        try:  # instant: continues the saved stream (mixture RNG, task positions, open rows)
            batches = pipeline.get_batches(run.mixture_or_task_name, state=data_state, **stream_args)
        except pipeline.DataStateMismatch as e:  # e.g. another number of hosts
            log.warning("the data-stream state saved with step %d does not fit this run: %s Regenerating and "
                        "dropping %d batches of this run's stream instead.", start, e, start)
    elif start:
        log.warning("no data-stream state was saved with step %d (a checkpoint from before data states were "
                    "saved): regenerating and dropping %d batches to resume the stream.", start, start)
    if batches is None:
        batches = pipeline.get_batches(run.mixture_or_task_name, start_batch=start, **stream_args)
    step_fn = trainer.compile_train_step(shardings, dropout=dropout)
    state_is_finite = jax.jit(tree_all_finite)
    writer = MetricsWriter(run.model_dir, start_step=start)
    faults = resilience.FaultTracker(start)
    skipped_reported = 0
    metrics: dict[str, float] = {}
    device_metrics = None
    bar = tqdm(total=run.train_steps, initial=start, desc="train", unit="step", dynamic_ncols=True)
    window_tokens, window_start = 0, time.perf_counter()

    def host_metrics() -> dict[str, float]:
        if device_metrics is None:
            return {}
        return {k: float(v) for k, v in jax.device_get(device_metrics).items() if k != "nonfinite"}

    def react(found: resilience.Faults, done: int, shown: dict[str, float] | None):
        """stop: raise on any non-finite step; skip: say when more were skipped."""
        nonlocal skipped_reported
        if not found.count:
            return
        if skip:
            if found.count > skipped_reported:
                log.warning("skipped %d non-finite step(s) by step %d (%d in all; the first at step %d: %s)",
                            found.count - skipped_reported, done, skipped_before + found.count,
                            found.first_step, ", ".join(found.first_names))
                skipped_reported = found.count
            return
        message = resilience.nonfinite_message(
            found, detected_at=done, metrics=host_metrics() if shown is None else shown,
            last_checkpoint=ckpt.latest_step(), checkpoint_dir=ckpt.directory)
        raise resilience.NonFiniteError(message, step=found.first_step)

    def save(done: int, force: bool = False):
        """Checks (stop: no non-finite step; always: a finite state), then saves in the background."""
        if done == ckpt.latest_step():
            return
        found = faults.read()
        react(found, done, None)
        if not bool(jax.device_get(state_is_finite(state))):
            message = resilience.nonfinite_message(
                found, detected_at=done, metrics=host_metrics(), last_checkpoint=ckpt.latest_step(),
                checkpoint_dir=ckpt.directory, state_only=True)
            raise resilience.NonFiniteError(message, step=done)
        ckpt.save(state, force=force, step=done, metadata={"skipped_steps": skipped_before + found.count},
                  data_state=batches.state())

    preempt = resilience.PreemptionGuard()
    done = start
    with preempt:  # SIGTERM sets a flag; it is acted on between steps
        try:
            for step in range(start, run.train_steps):
                if preempt.agreed(step):  # every process stops at the same step
                    break
                batch = feed.own_rows(next(batches))
                window_tokens += model.count_tokens(batch)
                state, device_metrics = trainer.run_step(step_fn, state, batch)
                faults.update(device_metrics)
                done = step + 1
                if done % log_every_steps == 0 or done == run.train_steps:
                    metrics = host_metrics()  # the loop's only regular wait for the devices
                    elapsed = time.perf_counter() - window_start
                    metrics["tokens_per_second"] = window_tokens * feed.num_shards / max(elapsed, 1e-9)
                    window_tokens, window_start = 0, time.perf_counter()
                    found = faults.read()
                    if skip:
                        metrics["skipped_steps"] = skipped_before + found.count
                    writer.write(done, metrics)
                    bar.set_postfix(loss=f"{metrics['loss']:.3f}", tok_s=f"{metrics['tokens_per_second']:.0f}")
                    react(found, done, metrics)
                if periodic is not None and periodic_every_steps and done % periodic_every_steps == 0:
                    current = TrainResult(model=model, params=state.params, mesh=mesh, vocabulary=vocabulary,
                                          final_step=done, train_metrics=metrics)
                    writer.write(done, periodic(current), prefix="eval")
                bar.update(1)
                if ckpt.should_save(done):
                    save(done)
            save(done, force=True)  # the final step, or where SIGTERM stopped the loop
        finally:
            bar.close()
            batches.close()
            ckpt.close()  # waits for the background writes: every checkpoint is complete
            writer.close()
    skipped = skipped_before + faults.read().count
    if preempt.stopped:
        message = (f"{preempt.name} received: saved a checkpoint at step {done} ({ckpt.directory}/{done}); "
                   f"the next start resumes at step {done}.")
        print(message, flush=True)
        raise resilience.Preempted(done, message)
    if skip:
        print(f"non-finite steps skipped: {skipped}"
              + (" (train/skipped_steps in metrics.jsonl)" if skipped else ""))
    write_config(run.model_dir, "operative_config.gin")
    return TrainResult(model=model, params=state.params, mesh=mesh, vocabulary=vocabulary,
                       final_step=run.train_steps, train_metrics=metrics, skipped_steps=skipped)
