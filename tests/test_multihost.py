"""Multi-host training on one machine: 2 real `python run.py train` processes on 127.0.0.1 (gloo CPU
collectives, 2 fake CPU devices each) against 1 process with 4 devices.

- fed the same global batches (host_feed.global_batch_on_every_host), 2 processes give the
  1-process losses;
- with per-host shards (the default) both finish with finite, falling losses;
- a checkpoint the 2 processes wrote restores in 1 process, which trains on with the losses of
  the uninterrupted 1-process run;
- SIGTERM to one process stops both at the same step, saved;
- a coordinator that is not there, or a peer killed mid-run, ends the other process with a message
  within a bounded time.

Every process runs under a deadline and is killed in `finally`; a failure names the process that
died and shows its stderr tail.
"""
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from flan_mix.runtime import distributed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {"T5Config.emb_dim": "32", "T5Config.num_heads": "2", "T5Config.head_dim": "16", "T5Config.mlp_dim": "64",
        "T5Config.num_encoder_layers": "1", "T5Config.num_decoder_layers": "1",
        "TASK_FEATURE_LENGTHS": "{'inputs': 128, 'targets': 16}", "BATCH_SIZE": "4",
        "register_generated_tasks.num_train": "40", "register_generated_tasks.num_validation": "6",
        "train.log_every_steps": "1", "make_schedule.warmup_steps": "0",
        "train_command.evaluate_after": "False",
        # Bounded: a missing peer fails the start after 120 s, a dead one is noticed after 30 s.
        "distributed_timeouts.initialization_timeout": "120", "distributed_timeouts.heartbeat_timeout": "30"}
DEADLINE = 420  # seconds for one run; the shared 2-core CI machine is slow, a hang is not
COMPARED = ("train/loss", "train/grad_norm")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _args(model_dir, steps, **bindings):
    flags = {**TINY, "MODEL_DIR": f"'{model_dir}'", "TRAIN_STEPS": str(steps), **bindings}
    return [sys.executable, "run.py", "train", *(f"--gin.{k}={v}" for k, v in flags.items())]


def _env(devices: int):
    return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
                PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))


class Proc:
    """One `run.py train` process; output to files (tqdm writes a lot to stderr)."""

    def __init__(self, tmp_path, name, args, devices):
        self.name = name
        self.out, self.err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(args, cwd=REPO, env=_env(devices), stdout=out, stderr=err)

    def stdout(self):
        return self.out.read_text()

    def tail(self):
        """stdout and stderr's last lines, the progress bar's redraws left out."""
        lines = [x for x in self.err.read_text().replace("\r", "\n").splitlines()
                 if x.strip() and not x.startswith("train:")]
        return (f"--- {self.name} (exit {self.proc.poll()}) stdout:\n{self.stdout()[-1500:]}\n"
                f"--- {self.name} stderr:\n" + "\n".join(lines[-25:]))

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


class Job:
    """Processes that run together; finish() waits for all of them under one deadline."""

    def __init__(self, procs):
        self.procs = procs

    def report(self):
        return "\n".join(p.tail() for p in self.procs)

    def finish(self, timeout=DEADLINE, expect=0):
        deadline = time.monotonic() + timeout
        try:
            while any(p.proc.poll() is None for p in self.procs):
                failed = [p for p in self.procs if p.proc.poll() not in (None, expect)]
                if failed:  # one died: the others would wait for it until their heartbeat timeout
                    raise AssertionError(f"process {failed[0].name} exited with {failed[0].proc.returncode}\n"
                                         + self.report())
                if time.monotonic() > deadline:
                    hung = [p.name for p in self.procs if p.proc.poll() is None]
                    raise AssertionError(f"{', '.join(hung)} still running after {timeout} s\n" + self.report())
                time.sleep(0.2)
            codes = [p.proc.returncode for p in self.procs]
            assert codes == [expect] * len(codes), f"exit codes {codes}\n" + self.report()
        finally:
            self.kill()

    def kill(self):
        for p in self.procs:
            p.kill()


def start_pair(tmp_path, name, model_dir, steps, **bindings) -> Job:
    """2 processes x 2 CPU devices, coordinated on a free port of 127.0.0.1."""
    address = f"127.0.0.1:{free_port()}"
    procs = []
    try:
        for i in range(2):
            args = _args(model_dir, steps, **bindings) + [
                f"--coordinator_address={address}", "--num_processes=2", f"--process_id={i}"]
            procs.append(Proc(tmp_path, f"{name}-process{i}", args, devices=2))
    except BaseException:
        Job(procs).kill()
        raise
    return Job(procs)


def run_single(tmp_path, name, model_dir, steps, **bindings) -> Proc:
    """1 process x 4 CPU devices, to completion."""
    proc = Proc(tmp_path, name, _args(model_dir, steps, **bindings), devices=4)
    Job([proc]).finish()
    return proc


def rows(model_dir):
    with open(os.path.join(model_dir, "metrics.jsonl")) as f:
        return {r["step"]: r for r in map(json.loads, f) if "train/loss" in r}


def saved_steps(model_dir):
    return sorted(int(d) for d in os.listdir(os.path.join(model_dir, "checkpoints")) if d.isdigit())


def assert_close_rows(got, want, steps, tol=1e-5):
    for step in steps:
        for key in COMPARED:
            a, b = got[step][key], want[step][key]
            assert abs(a - b) <= tol * max(1.0, abs(b)), f"step {step} {key}: {a} vs {b} (1 process)"


# ----- flags and detection (no processes) -----

def test_flags_are_all_or_none_and_checked():
    assert distributed.parse_flags(None, None, None) is None
    spec = distributed.parse_flags("10.0.0.1:8476", "4", "3")
    assert (spec.coordinator_address, spec.num_processes, spec.process_id) == ("10.0.0.1:8476", 4, 3)
    with pytest.raises(ValueError, match="--num_processes, --process_id missing"):
        distributed.parse_flags("10.0.0.1:8476", None, None)
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        distributed.parse_flags("10.0.0.1", "2", "0")
    with pytest.raises(ValueError, match=r"--process_id=2: must be in 0..1"):
        distributed.parse_flags("h:1", "2", "2")
    with pytest.raises(ValueError, match="--distributed=maybe: choose one of auto, off"):
        distributed.initialize_from_flags({"distributed": "maybe"})


def test_detection_reads_the_environment_and_leaves_single_runs_alone(monkeypatch):
    for name in ("JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
                 "SLURM_LOCALID", "OMPI_MCA_orte_hnp_uri", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.detect_cluster() is None  # this machine: one process, nothing started
    assert distributed.initialize_from_flags({}) is False
    slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "1", "SLURM_PROCID": "0",
             "SLURM_LOCALID": "0"}
    for k, v in slurm.items():
        monkeypatch.setenv(k, v)
    assert distributed.detect_cluster() is None  # a one-task job stays a plain run
    monkeypatch.setenv("SLURM_NTASKS", "2")
    assert distributed.detect_cluster() == "slurm"
    assert distributed.initialize_from_flags({"distributed": "off"}) is False  # off: detection skipped
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "w-0,w-1")
    assert distributed.detect_cluster() == "tpu"


def test_unreachable_coordinator_fails_within_the_timeout_naming_the_flags(tmp_path):
    """Process 1 of 2 with nobody serving the coordinator's port: exit 1 with the fix, not a hang."""
    port = free_port()
    args = _args(str(tmp_path / "run"), 2, **{"distributed_timeouts.initialization_timeout": "5"}) + [
        f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", "--process_id=1"]
    proc = Proc(tmp_path, "lonely-process1", args, devices=2)
    try:
        Job([proc]).finish(timeout=240, expect=1)
    finally:
        proc.kill()
    err = proc.err.read_text()
    assert "DistributedSetupError: jax.distributed.initialize failed for --coordinator_address=127.0.0.1:" in err
    assert "nothing answered on 127.0.0.1:" in err and "within 5 s" in err, proc.tail()
    assert "--process_id=0" in err and "distributed_timeouts.initialization_timeout" in err, proc.tail()


# ----- real runs -----

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("multihost")


@pytest.fixture(scope="module")
def reference(runs):
    """1 process x 4 devices, 5 steps."""
    model_dir = str(runs / "single")
    run_single(runs, "single", model_dir, 5)
    return model_dir


@pytest.fixture(scope="module")
def pair_global(runs):
    """2 processes x 2 devices, every host building the global batch and keeping its rows; 3 steps."""
    model_dir = str(runs / "pair_global")
    start_pair(runs, "pair_global", model_dir, 3, **{"host_feed.global_batch_on_every_host": "True"}).finish()
    return model_dir


def test_two_processes_fed_the_global_batch_match_one_process(reference, pair_global):
    assert_close_rows(rows(pair_global), rows(reference), steps=[1, 2, 3])


def test_checkpoint_of_two_processes_restores_in_one_and_trains_on(runs, reference, pair_global):
    model_dir = str(runs / "resumed")
    shutil.copytree(pair_global, model_dir)
    assert saved_steps(model_dir)[-1] == 3
    proc = run_single(runs, "resumed", model_dir, 5)
    assert f"resuming from {model_dir}/checkpoints/3 at step 3" in proc.stdout(), proc.tail()
    got = rows(model_dir)
    assert sorted(got) == [1, 2, 3, 4, 5]
    # Steps 4 and 5 ran in 1 process from the 2 processes' state: the uninterrupted run's figures.
    assert_close_rows(got, rows(reference), steps=[4, 5])


def test_per_host_shards_finish_with_finite_falling_losses(runs, reference):
    model_dir = str(runs / "pair_shards")
    start_pair(runs, "pair_shards", model_dir, 6).finish()
    got = rows(model_dir)
    losses = [got[s]["train/loss"] for s in range(1, 7)]
    assert all(math.isfinite(x) for x in losses), losses
    assert losses[-1] < losses[0] - 0.5, losses
    # Each host read its own shard, so the batches (and the first loss) differ from the global ones.
    assert abs(losses[0] - rows(reference)[1]["train/loss"]) > 1e-4
    assert saved_steps(model_dir)[-1] == 6


def _logged_steps(model_dir):
    try:
        return len(rows(model_dir))
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def _wait_for_steps(job, model_dir, n, timeout=DEADLINE):
    deadline = time.monotonic() + timeout
    while _logged_steps(model_dir) < n:
        dead = [p for p in job.procs if p.proc.poll() is not None]
        if dead:
            raise AssertionError(f"process {dead[0].name} exited ({dead[0].proc.returncode}) before step {n}\n"
                                 + job.report())
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {n} steps logged after {timeout} s\n" + job.report())
        time.sleep(0.2)


def test_sigterm_to_one_process_stops_both_at_the_same_saved_step(runs):
    model_dir = str(runs / "pair_sigterm")
    job = start_pair(runs, "pair_sigterm", model_dir, 1000)
    try:
        _wait_for_steps(job, model_dir, 3)
        job.procs[1].proc.send_signal(signal.SIGTERM)  # process 0 never gets a signal
        job.finish(timeout=300)
    finally:
        job.kill()
    stopped = []
    for p in job.procs:
        line = next((x for x in p.stdout().splitlines() if "received: saved a checkpoint at step" in x), None)
        assert line is not None, p.tail()
        stopped.append(int(line.split("at step ")[1].split(" ")[0]))
    assert stopped[0] == stopped[1] >= 3, stopped
    assert "SIGTERM (on another process) received" in job.procs[0].stdout()
    assert saved_steps(model_dir)[-1] == stopped[0]


def test_a_dead_peer_ends_the_other_process_in_bounded_time(runs):
    model_dir = str(runs / "pair_killed")
    job = start_pair(runs, "pair_killed", model_dir, 1000, **{"distributed_timeouts.heartbeat_timeout": "10"})
    try:
        _wait_for_steps(job, model_dir, 2)
        job.procs[1].proc.kill()
        t0 = time.monotonic()
        try:
            job.procs[0].proc.wait(timeout=180)
        except subprocess.TimeoutExpired:
            raise AssertionError("process 0 still running 180 s after its peer was killed\n" + job.report()) from None
        waited = time.monotonic() - t0
    finally:
        job.kill()
    assert job.procs[0].proc.returncode != 0, job.report()
    print(f"process 0 ended {waited:.1f} s after process 1 was killed (exit {job.procs[0].proc.returncode})")
