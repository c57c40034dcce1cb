"""Resume benchmark: wall time from `python run.py train` starting to its first train step, resuming at step S.

    python benchmarks/resume.py [--steps 0,1000,10000] [--cot_steps 10000] [--cot_batch 8]
                                [--out benchmarks/results/resume_cpu.json]

For each case and step S > 0 the benchmark makes a real checkpoint at step S: it runs the trainer for one step
(the S = 0 row, timed), then re-saves that state as step S together with the data-stream state after S batches
(computed by running the pipeline S batches: that time is what a resume without a saved data state pays, and it
is printed as "replay"). Then it times a fresh `run.py train` process that resumes at S, from its start to the
moment the metrics row of step S + 1 is written (log_every_steps = 1, so the loop waits for that step).

Cases:
  default   gin/runs/default.gin (generated mini-collection, tiny T5, inputs 256 / targets 64, batch 16).
  cot       the same model on mixture flan2022_cot (real CoT TSVs of ../shared/data, registered with
            allow_missing_tasks: esnli and qed have none) at inputs 2048 / targets 512, batch --cot_batch.
The target is a resume time that is flat in S (within noise); the replay column is what it was before.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.attention import environment  # noqa: E402

COT_DIR = os.path.join(os.path.dirname(ROOT), "shared", "data", "flan", "cot")


def case_bindings(case: str, model_dir: str, cot_batch: int) -> list[str]:
    common = [f"MODEL_DIR='{model_dir}'", "train_command.evaluate_after=False", "train.log_every_steps=1",
              "Checkpointer.save_every_steps=1000000"]
    if case == "default":
        return common
    return common + ["register_all.collections=['flan2022']", "register_flan2022.submixtures=['cot']",
                     f"register_flan2022.cot_dir='{COT_DIR}'", "register_flan2022.allow_missing_tasks=True",
                     "MIXTURE_OR_TASK_NAME='flan2022_cot'", "TASK_FEATURE_LENGTHS={'inputs': 2048, 'targets': 512}",
                     f"BATCH_SIZE={cot_batch}"]


def run_to_first_step(bindings: list[str], step: int, log_path: str, timeout: float = 1800) -> float:
    """Seconds from starting `run.py train` (TRAIN_STEPS = step + 1) to its metrics row of step + 1."""
    args = [sys.executable, "run.py", "train", *(f"--gin.{b}" for b in bindings), f"--gin.TRAIN_STEPS={step + 1}"]
    model_dir = next(b.split("=", 1)[1].strip("'") for b in bindings if b.startswith("MODEL_DIR="))
    metrics = os.path.join(model_dir, "metrics.jsonl")
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            while True:
                if os.path.exists(metrics):
                    with open(metrics) as f:
                        if any(json.loads(line).get("step") == step + 1 for line in f if line.strip()):
                            elapsed = time.perf_counter() - start
                            break
                if proc.poll() is not None:
                    raise RuntimeError(f"run.py exited ({proc.returncode}) before step {step + 1}; see {log_path}")
                if time.perf_counter() - start > timeout:
                    raise RuntimeError(f"no step {step + 1} within {timeout} s; see {log_path}")
                time.sleep(0.05)
            if proc.wait(timeout=timeout) != 0:
                raise RuntimeError(f"run.py failed ({proc.returncode}); see {log_path}")
        finally:
            if proc.poll() is None:
                proc.kill()
    return elapsed


def checkpoint_at(model_dir: str, bindings: list[str], step: int) -> float:
    """Re-saves the step-1 checkpoint of model_dir as step `step`, with the data state after `step` batches.
    Returns the seconds the pipeline took to reach that batch (the replay a resume without a state pays)."""
    import gin
    import jax
    import jax.numpy as jnp

    from flan_mix import launcher
    from flan_mix.data import pipeline, registration
    from flan_mix.models.build import build_model
    from flan_mix.runtime import checkpoints, partitioning
    from flan_mix.runtime.run_config import run_config
    from flan_mix.train import optim
    from flan_mix.train.trainer import Trainer

    gin.clear_config()
    launcher.parse_gin([launcher.DEFAULT_GIN], [b.replace("=", " = ", 1) for b in bindings])
    run = run_config()
    vocabulary = registration.register_all()
    model = build_model(vocab_size=vocabulary.vocab_size)
    trainer = Trainer(model, optim.make_optimizer()[0], partitioning.make_mesh(), partitioning.logical_axis_rules())
    ckpt = checkpoints.Checkpointer(model_dir)
    state = ckpt.restore_latest(trainer.abstract_state()[0])
    state = state.replace(step=jnp.asarray(step, state.step.dtype))
    start = time.perf_counter()
    batches = pipeline.get_batches(
        run.mixture_or_task_name, task_feature_lengths=run.task_feature_lengths, split="train",
        global_batch_size=run.batch_size, seed=run.seed, shuffle=True, pack=True,
        shard_index=jax.process_index(), num_shards=jax.process_count(), **model.batch_layout())
    for _ in range(step):
        next(batches)
    replay = time.perf_counter() - start
    ckpt.save(state, step=step, force=True, data_state=batches.state())
    batches.close()
    ckpt.close()
    gin.clear_config()
    return replay


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", default="0,1000,10000", help="resume steps of the default case")
    ap.add_argument("--cot_steps", default="10000", help="resume steps of the CoT 2048/512 case ('' skips it)")
    ap.add_argument("--cot_batch", type=int, default=8)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "resume_cpu.json"))
    args = ap.parse_args()
    cases = [("default", [int(s) for s in args.steps.split(",") if s])]
    if args.cot_steps and os.path.isdir(COT_DIR):
        cases.append(("cot", [0] + [int(s) for s in args.cot_steps.split(",") if s and int(s)]))
    elif args.cot_steps:
        print(f"skipping the cot case: {COT_DIR} not found")
    rows = []
    work = tempfile.mkdtemp(prefix="flan_mix_resume_")
    try:
        for case, steps in cases:
            base = os.path.join(work, f"{case}_0")
            bindings = case_bindings(case, base, args.cot_batch)
            first = run_to_first_step(bindings, 0, os.path.join(work, f"{case}_0.log"))
            for step in steps:
                if step == 0:
                    rows.append({"case": case, "step": 0, "resume_s": round(first, 2), "replay_s": 0.0})
                else:
                    model_dir = os.path.join(work, f"{case}_{step}")
                    shutil.copytree(base, model_dir)
                    shutil.rmtree(os.path.join(model_dir, "data_state"), ignore_errors=True)
                    b = case_bindings(case, model_dir, args.cot_batch)
                    replay = checkpoint_at(model_dir, b, step)
                    resume = run_to_first_step(b, step, os.path.join(work, f"{case}_{step}.log"))
                    rows.append({"case": case, "step": step, "resume_s": round(resume, 2),
                                 "replay_s": round(replay, 2)})
                r = rows[-1]
                print(f"{case:8s} step {r['step']:>6}: start -> first step {r['resume_s']:7.2f} s   "
                      f"(replaying the stream instead: +{r['replay_s']:.2f} s)", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"benchmark": "resume", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "environment": environment(("jax", "seqio", "tensorflow", "orbax-checkpoint")),
              "load_average": os.getloadavg(), "rows": rows}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
