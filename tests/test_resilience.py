"""Preemption and numerical faults: SIGTERM to a real `python run.py train` saves and exits 0 and the
next start resumes there exactly; metrics.jsonl keeps one row per step across kills and resumes;
a NaN/inf stops training without saving it, or (train.nonfinite='skip') is skipped and counted."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings

import gin
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from flan_mix import launcher
from flan_mix.runtime import checkpoints, partitioning
from flan_mix.train import loop, optim, resilience
from flan_mix.train.trainer import NONFINITE_BITS, Trainer
from tests.helpers import packed_batch
from tests.test_trainer import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The tiny model and data of the CLI tests; one metrics row per step.
SMALL = {"T5Config.emb_dim": "32", "T5Config.num_heads": "2", "T5Config.head_dim": "16", "T5Config.mlp_dim": "64",
         "T5Config.num_encoder_layers": "1", "T5Config.num_decoder_layers": "1",
         "TASK_FEATURE_LENGTHS": "{'inputs': 128, 'targets': 16}", "BATCH_SIZE": "4",
         "register_generated_tasks.num_train": "40", "register_generated_tasks.num_validation": "6",
         "train.log_every_steps": "1"}
COMPARED = ("train/loss", "train/grad_norm", "train/accuracy", "train/z_loss")


# ----- pieces -----

def test_preemption_guard_turns_sigterm_into_a_flag_and_restores_the_handler():
    before = signal.getsignal(signal.SIGTERM)
    with resilience.PreemptionGuard() as guard:
        assert not guard
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100):  # the handler runs in the main thread at the next bytecode
            if guard:
                break
            time.sleep(0.01)
        assert guard and guard.name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


def test_drop_rows_after_keeps_earlier_rows_and_drops_a_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "train/loss": 1.0 / s} for s in range(1, 6)] + [{"step": 3, "eval/x": 0.5}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 6, "train/lo')
    assert loop.drop_rows_after(str(path), 3) == 3  # steps 4 and 5, and the torn line
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows[:3] + rows[5:]
    assert loop.drop_rows_after(str(path), 3) == 0
    assert loop.drop_rows_after(str(tmp_path / "absent.jsonl"), 0) == 0


def _nan_batch(seed):
    batch = packed_batch(np.random.default_rng(seed))
    batch["decoder_loss_weights"] = batch["decoder_loss_weights"].astype(np.float32)
    batch["decoder_loss_weights"][0, 0] = np.nan  # one corrupted weight: NaN loss and gradients
    return batch


@pytest.mark.parametrize("skip", [True, False])
def test_jitted_step_skips_a_nan_step_on_device(skip):
    """skip: the NaN step leaves params and optimizer state bit for bit as they were and the next
    good step trains on; without skip the NaN goes into the params (the loop then stops the run)."""
    tx, schedule = optim.make_optimizer("adafactor", optim.make_schedule("constant", 1e-2))
    trainer = Trainer(tiny(num_encoder_layers=1, num_decoder_layers=1), tx,
                      partitioning.make_mesh(devices=jax.devices()[:1]), partitioning.logical_axis_rules(),
                      schedule=schedule, skip_nonfinite=skip)
    state = trainer.init_state(0)
    step_fn = trainer.compile_train_step(trainer.abstract_state()[1], dropout=False)
    state, m1 = trainer.run_step(step_fn, state, packed_batch(np.random.default_rng(0)))
    before = jax.device_get(state)
    state, m2 = trainer.run_step(step_fn, state, _nan_batch(1))
    after_nan = jax.device_get(state)
    state, m3 = trainer.run_step(step_fn, state, packed_batch(np.random.default_rng(2)))
    assert int(m1["nonfinite"]) == 0 and int(m3["nonfinite"]) == (0 if skip else 7)
    assert int(m2["nonfinite"]) == sum(NONFINITE_BITS.values())  # loss, grad_norm and update
    assert int(after_nan.step) == 2 and int(state.step) == 3  # the step counter advances either way
    if skip:
        for a, b in zip(jax.tree_util.tree_leaves((before.params, before.opt_state)),
                        jax.tree_util.tree_leaves((after_nan.params, after_nan.opt_state))):
            np.testing.assert_array_equal(a, b)
        assert np.isfinite(float(m3["loss"]))
        assert not np.array_equal(state.params["decoder"]["logits_dense"]["kernel"],
                                  before.params["decoder"]["logits_dense"]["kernel"])
    else:
        assert not all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(after_nan.params))


# ----- train() in process: NaN injected through a learning rate of inf -----

def configure(model_dir, **bindings):
    gin.clear_config()
    merged = {**SMALL, "MODEL_DIR": f"'{model_dir}'", **bindings}
    launcher.parse_gin([launcher.DEFAULT_GIN], [f"{k} = {v}" for k, v in merged.items()])


def read_rows(model_dir):
    """The rows of metrics.jsonl, less a last line cut short by a kill -9."""
    with open(os.path.join(model_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.endswith("\n")]


def saved_steps(model_dir):
    root = os.path.join(model_dir, "checkpoints")
    return sorted(int(d) for d in os.listdir(root) if d.isdigit())


def saved_state(model_dir, step):
    """A checkpoint read back by orbax alone (its saved shardings; one device here)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sharding info not provided")
        return ocp.PyTreeCheckpointer().restore(os.path.join(model_dir, "checkpoints", str(step), "default"))


@pytest.fixture(scope="module")
def trained_4_steps(tmp_path_factory):
    """4 good steps with checkpoints at 2 and 4 (the learning rate the NaN tests then set to inf)."""
    path = str(tmp_path_factory.mktemp("nan") / "base")
    configure(path, TRAIN_STEPS="4", **{"Checkpointer.save_every_steps": "2"})
    loop.train()
    gin.clear_config()
    assert saved_steps(path) == [2, 4]
    return path


def test_nonfinite_stops_with_a_message_and_saves_nothing_after_it(trained_4_steps, tmp_path):
    model_dir = str(tmp_path / "run")
    shutil.copytree(trained_4_steps, model_dir)
    # lr = inf: step 5's gradients are finite but its update is not; step 6's loss is NaN.
    configure(model_dir, TRAIN_STEPS="12", **{"make_schedule.learning_rate": "1e999",
                                              "train.log_every_steps": "3", "Checkpointer.save_every_steps": "2"})
    with pytest.raises(resilience.NonFiniteError) as info:
        loop.train()
    gin.clear_config()
    message = str(info.value)
    assert info.value.step == 5
    assert "non-finite update at step 5 (found at step 6" in message
    assert f"{model_dir}/checkpoints/4 (step 4)" in message
    for hint in ("make_schedule.learning_rate", "build_model.z_loss", "start_batch=4", "train.nonfinite"):
        assert hint in message, hint
    # Nothing after step 4 was saved (step 6 was a save step): the latest checkpoint is the good step 4.
    assert saved_steps(model_dir) == [2, 4]
    state = saved_state(model_dir, 4)
    assert int(state["step"]) == 4
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(state))
    rows = read_rows(model_dir)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 6] and np.isnan(rows[-1]["train/loss"])


def test_nonfinite_skip_counts_and_keeps_the_state(trained_4_steps, tmp_path):
    model_dir = str(tmp_path / "run")
    shutil.copytree(trained_4_steps, model_dir)
    configure(model_dir, TRAIN_STEPS="7", **{"make_schedule.learning_rate": "1e999", "train.nonfinite": "'skip'",
                                             "Checkpointer.save_every_steps": "2"})
    result = loop.train()
    gin.clear_config()
    assert result.skipped_steps == 3  # steps 5, 6, 7: every update is inf
    rows = read_rows(model_dir)
    assert [r["step"] for r in rows] == list(range(1, 8))
    assert [r["train/skipped_steps"] for r in rows[4:]] == [1, 2, 3]
    assert saved_steps(model_dir) == [6, 7]
    good, final = saved_state(trained_4_steps, 4), saved_state(model_dir, 7)
    assert int(final["step"]) == 7
    # Nothing was applied: params and optimizer state are the step-4 checkpoint's, bit for bit.
    for a, b in zip(jax.tree_util.tree_leaves((good["params"], good["opt_state"])),
                    jax.tree_util.tree_leaves((final["params"], final["opt_state"]))):
        np.testing.assert_array_equal(a, b)
    ckpt = checkpoints.Checkpointer(model_dir)
    assert ckpt.metadata(7) == {"skipped_steps": 3}  # a resume goes on counting from here
    ckpt.close()


def test_unknown_nonfinite_policy_is_refused(tmp_path):
    configure(str(tmp_path), TRAIN_STEPS="1", **{"train.nonfinite": "'ignore'"})
    with pytest.raises(ValueError, match=r"train.nonfinite='ignore': choose one of \('stop', 'skip'\)"):
        loop.train()
    gin.clear_config()


# ----- real processes: kill -9, then SIGTERM, then the rest -----

def _cli_args(model_dir, train_steps, save_every):
    flags = {**SMALL, "MODEL_DIR": f"'{model_dir}'", "TRAIN_STEPS": str(train_steps),
             "Checkpointer.save_every_steps": str(save_every), "train_command.evaluate_after": "False"}
    return [sys.executable, "run.py", "train", *(f"--gin.{k}={v}" for k, v in flags.items())]


class TrainProcess:
    """A `python run.py train` subprocess; its output goes to files (tqdm writes a lot to stderr)."""

    def __init__(self, tmp_path, name, args):
        self.out, self.err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(args, cwd=REPO, stdout=out, stderr=err)

    def output(self):
        return f"stdout:\n{self.out.read_text()[-2000:]}\nstderr:\n{self.err.read_text()[-3000:]}"

    def wait_for(self, condition, what, timeout=300):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"the run exited ({self.proc.returncode}) before {what}\n{self.output()}")
            time.sleep(0.05)
        raise AssertionError(f"no {what} after {timeout} s\n{self.output()}")

    def finish(self, timeout=300):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the run did not exit within {timeout} s\n{self.output()}") from None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=60)


def _steps_in(model_dir):
    try:
        return [r["step"] for r in read_rows(model_dir)]
    except FileNotFoundError:
        return []


def test_sigterm_saves_and_the_next_start_resumes_exactly(tmp_path):
    model_dir = str(tmp_path / "run")
    runs = []
    try:
        # A: checkpoint at step 25 (and the first step), killed -9 some steps later: its rows past
        # 25 are the uninterrupted run's figures for those steps.
        a = TrainProcess(tmp_path, "a", _cli_args(model_dir, 1000, 25))
        runs.append(a)
        a.wait_for(lambda: os.path.isdir(os.path.join(model_dir, "checkpoints", "25"))
                   and len(_steps_in(model_dir)) >= 40, "checkpoint 25 and 40 logged steps")
        a.proc.send_signal(signal.SIGKILL)
        a.finish(60)
        straight = {r["step"]: r for r in read_rows(model_dir)}
        assert max(straight) >= 40
        # B: resumes at 25 (rows 26.. dropped: they run again), gets SIGTERM a few steps in.
        b = TrainProcess(tmp_path, "b", _cli_args(model_dir, 1000, 25))
        runs.append(b)
        b.wait_for(lambda: (lambda s: s and 28 <= s[-1] <= 34 and len(s) == s[-1])(_steps_in(model_dir)),
                   "steps past 28 logged after the resume")
        b.proc.send_signal(signal.SIGTERM)
        assert b.finish() == 0, b.output()
        stdout = b.out.read_text()
        assert f"resuming from {model_dir}/checkpoints/25 at step 25" in stdout, b.output()
        line = next((x for x in stdout.splitlines() if x.startswith("SIGTERM received: saved a checkpoint")), None)
        assert line is not None, b.output()
        stopped = int(line.split("at step ")[1].split(" ")[0])
        assert line.endswith(f"the next start resumes at step {stopped}.")
        assert 28 <= stopped < max(straight) and stopped in saved_steps(model_dir)
        assert int(saved_state(model_dir, stopped)["step"]) == stopped
        assert _steps_in(model_dir) == list(range(1, stopped + 1))  # no row twice, none past the save
        # C: resumes at the SIGTERM step and finishes.
        c = TrainProcess(tmp_path, "c", _cli_args(model_dir, stopped + 3, 25))
        runs.append(c)
        assert c.finish() == 0, c.output()
        resumed = f"resuming from {model_dir}/checkpoints/{stopped} at step {stopped}"
        assert resumed in c.out.read_text(), c.output()
    finally:
        for run in runs:
            run.kill()
    # Both resumes restored the data stream from its saved state (no batch regenerated).
    assert os.path.exists(os.path.join(model_dir, "data_state", f"step_{stopped + 3}.process_0.json.gz"))
    assert "regenerating and dropping" not in (b.err.read_text() + c.err.read_text()).lower()
    rows = read_rows(model_dir)
    assert [r["step"] for r in rows] == list(range(1, stopped + 4))
    assert saved_steps(model_dir)[-1] == stopped + 3
    # Both resumes are exact: every step that ran again has the uninterrupted run's figures.
    again = [r for r in rows if 25 < r["step"] <= max(straight)]
    assert len(again) >= 6
    for r in again:
        assert {k: r[k] for k in COMPARED} == {k: straight[r["step"]][k] for k in COMPARED}, r["step"]
