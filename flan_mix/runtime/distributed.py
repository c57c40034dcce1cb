"""Multi-process JAX: jax.distributed.initialize from the launcher's flags or from the cluster.

  python run.py train --coordinator_address=HOST:PORT --num_processes=N --process_id=I [flags]

starts process I of N; process 0 also runs the coordinator service on HOST:PORT, and every process
must be given the same address and count. Without these flags (--distributed=auto, the default)
the launcher looks for a multi-process cluster in the environment and, when it finds one, calls
jax.distributed.initialize() with no arguments so that JAX's own detectors
(jax._src.clusters: SLURM, Open MPI, Cloud TPU VMs on GCE and GKE) fill in all three values:

  SLURM       SLURM_JOB_ID, SLURM_STEP_NODELIST, SLURM_NTASKS > 1, SLURM_PROCID, SLURM_LOCALID
              (the variables `srun` sets for each task)
  Open MPI    OMPI_MCA_orte_hnp_uri and OMPI_COMM_WORLD_SIZE > 1 (mpirun)
  Cloud TPU   TPU_WORKER_HOSTNAMES with more than one worker (GKE), or TPU chips under /dev with
              libtpu installed (a GCE TPU VM: JAX then asks the metadata server for the
              coordinator and the worker count; a one-host slice comes back as 1 process)
  any         JAX_COORDINATOR_ADDRESS set (JAX reads it in place of --coordinator_address)

Nothing is detected on a laptop or a single-host box, so one-process runs start exactly as before
and never open a socket. --distributed=off skips the detection (e.g. a one-process debug run
inside a multi-task SLURM allocation).

Why the flags must be acted on before anything else: jax.distributed.initialize refuses to run
once a JAX backend exists (jax.devices(), any computation), so the launcher calls
initialize_from_flags() right after parsing gin and before the command runs.

Failures are bounded. A coordinator that cannot be reached fails after initialization_timeout
seconds with a message naming the flags (we wait for its port ourselves: JAX's client would
abort the process with a C++ fatal error instead). A peer that dies is noticed by the
coordination service after heartbeat_timeout seconds, or at once by the CPU collectives, whose
connection breaks; JAX then ends the survivors itself ("Terminating process because the JAX
distributed service detected fatal errors ... another task died", SIGABRT), so nothing waits forever. Both timeouts are gin settings of
distributed_timeouts (JAX's defaults are 300 s and 100 s).

CPU collectives across processes use gloo (jax_cpu_collectives_implementation): without it a
multi-process CPU computation has no way to talk to the other processes.
"""
from __future__ import annotations

import dataclasses
import logging
import os

import gin
import jax

log = logging.getLogger(__name__)

FLAGS = ("coordinator_address", "num_processes", "process_id")
MODES = ("auto", "off")


class DistributedSetupError(RuntimeError):
    """jax.distributed could not be started (unreachable coordinator, backend already running, ...)."""


@dataclasses.dataclass(frozen=True)
class ProcessSpec:
    """Where this process sits in the job, as given on the command line."""
    coordinator_address: str
    num_processes: int
    process_id: int


@gin.configurable
def distributed_timeouts(initialization_timeout: int = 300, heartbeat_timeout: int = 100) -> dict[str, int]:
    """Seconds to wait for all processes to connect, and without heartbeats before a peer is
    declared dead. gin: distributed_timeouts.initialization_timeout = 60 (e.g. in tests)."""
    for name, value in (("initialization_timeout", initialization_timeout),
                        ("heartbeat_timeout", heartbeat_timeout)):
        if int(value) <= 0:
            raise ValueError(f"distributed_timeouts.{name}={value}: must be a positive number of seconds.")
    return {"initialization_timeout": int(initialization_timeout),
            "heartbeat_timeout_seconds": int(heartbeat_timeout)}


def parse_flags(coordinator_address: str | None, num_processes: str | int | None,
                process_id: str | int | None) -> ProcessSpec | None:
    """The three flags checked together: all of them (-> a ProcessSpec) or none (-> None).

    Raises ValueError with the flag to fix; the launcher shows it as a usage error.
    """
    given = {name: value for name, value in zip(FLAGS, (coordinator_address, num_processes, process_id))
             if value not in (None, "")}
    if not given:
        return None
    missing = [f"--{name}" for name in FLAGS if name not in given]
    if missing:
        raise ValueError(f"multi-process runs need all of --coordinator_address=HOST:PORT, --num_processes=N "
                         f"and --process_id=I; {', '.join(missing)} missing (the same address and N on "
                         "every process, I = 0..N-1).")
    host, colon, port = str(coordinator_address).rpartition(":")
    if not colon or not host or not port.isdigit():
        raise ValueError(f"--coordinator_address={coordinator_address}: expected HOST:PORT, e.g. 10.0.0.1:8476 "
                         "(process 0's address, reachable from every process, and a free port).")
    try:
        n, i = int(num_processes), int(process_id)
    except (TypeError, ValueError):
        raise ValueError(f"--num_processes={num_processes} and --process_id={process_id} must be integers.") from None
    if n < 1:
        raise ValueError(f"--num_processes={n}: must be at least 1.")
    if not 0 <= i < n:
        raise ValueError(f"--process_id={i}: must be in 0..{n - 1} for --num_processes={n}.")
    return ProcessSpec(str(coordinator_address), n, i)


def _int_env(name: str) -> int:
    try:
        return int(os.environ.get(name, "0"))
    except ValueError:
        return 0


def detect_cluster() -> str | None:
    """The multi-process cluster this process runs in, or None; reads only the environment.

    Deliberately stricter than JAX's detectors: a one-task SLURM job is left as a plain
    one-process run (no coordinator, no socket), and mpi4py/Kubernetes (which JAX probes by
    importing packages) are not probed: give those the three flags.
    """
    env = os.environ
    if env.get("JAX_COORDINATOR_ADDRESS"):
        return "JAX_COORDINATOR_ADDRESS"
    slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
    if all(v in env for v in slurm) and _int_env("SLURM_NTASKS") > 1:
        return "slurm"
    if "OMPI_MCA_orte_hnp_uri" in env and _int_env("OMPI_COMM_WORLD_SIZE") > 1:
        return "ompi"
    hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
    if len(hosts) > 1:
        return "tpu"  # GKE TPU slices list their workers
    if _on_tpu_vm():
        return "tpu"  # GCE TPU VM: JAX asks the metadata server how many workers the slice has
    return None


def _on_tpu_vm() -> bool:
    """TPU chips on this machine and libtpu installed: a Cloud TPU VM (one host or a pod slice's
    worker). Checked through /dev, so no JAX backend is started."""
    import glob
    import importlib.util
    chips = glob.glob("/dev/accel[0-9]*") or glob.glob("/dev/vfio/[0-9]*")
    return bool(chips) and importlib.util.find_spec("libtpu") is not None


def _configure_cpu_collectives() -> None:
    # Cross-process collectives on CPU devices need an implementation; gloo ships with jaxlib.
    # The option name is jax_cpu_collectives_implementation on jax 0.10 and 0.11 (gloo is
    # already the default there, set here so that an older default cannot turn into a hang).
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except (AttributeError, KeyError, ValueError) as e:  # a jax without the option
        log.warning("could not select gloo CPU collectives (%s); multi-process CPU runs may fail.", e)


def _backends_running() -> bool:
    from jax._src import xla_bridge  # the only way to ask without starting a backend
    return xla_bridge.backends_are_initialized()


def initialize(spec: ProcessSpec | None, *, auto: bool = True) -> bool:
    """Starts jax.distributed for `spec`, or, without one, for a detected cluster (when auto).

    Returns whether jax.distributed was started. Idempotent: a second call does nothing.
    """
    from jax._src import distributed as jax_distributed
    if jax_distributed.global_state.client is not None:
        return True
    cluster = None if spec is not None or not auto else detect_cluster()
    if spec is None and cluster is None:
        return False  # one process: nothing to set up
    if _backends_running():
        raise DistributedSetupError(
            "jax.distributed.initialize must run before JAX starts a backend, but JAX devices are already in use "
            "in this process. Pass --coordinator_address/--num_processes/--process_id to run.py (which starts "
            "it first), or call flan_mix.runtime.distributed.initialize before any jax.devices() or computation.")
    _configure_cpu_collectives()
    # The trainer answers SIGTERM itself (resilience.PreemptionGuard, agreed across processes with
    # an all-gather). JAX's preemption service would install a competing C++ SIGTERM handler.
    jax.config.update("jax_enable_preemption_service", False)
    timeouts = distributed_timeouts()
    where = (f"--coordinator_address={spec.coordinator_address} --num_processes={spec.num_processes} "
             f"--process_id={spec.process_id}" if spec else f"the {cluster} environment")
    if spec is not None and spec.process_id != 0:
        # JAX's client aborts the whole process (a C++ fatal error, SIGABRT) when it cannot register
        # with the coordinator, so a Python exception never comes. Wait for the port here first,
        # within the same timeout, to fail with a message that says what to fix.
        timeouts["initialization_timeout"] = _wait_for_coordinator(spec, timeouts["initialization_timeout"], where)
    try:
        if spec is not None:
            jax.distributed.initialize(coordinator_address=spec.coordinator_address,
                                       num_processes=spec.num_processes, process_id=spec.process_id,
                                       **timeouts)
        else:
            jax.distributed.initialize(**timeouts)
    except Exception as e:  # XlaRuntimeError (DEADLINE_EXCEEDED, UNAVAILABLE, ...) or ValueError
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DistributedSetupError(
            f"jax.distributed.initialize failed for {where} after at most "
            f"{timeouts['initialization_timeout']} s: {first_line}\n"
            "Check that process 0 is running with the same --coordinator_address and --num_processes, that its "
            "HOST:PORT is reachable from this machine and the port free on process 0's machine, and that every "
            "process id 0..N-1 is started; wait longer with "
            "--gin.distributed_timeouts.initialization_timeout=SECONDS.") from e
    log.info("jax.distributed: process %d of %d (%s)", jax.process_index(), jax.process_count(), where)
    return True


def _wait_for_coordinator(spec: ProcessSpec, timeout: int, where: str) -> int:
    """Polls the coordinator's TCP port until it accepts; returns the seconds left of `timeout`."""
    import socket
    import time
    host, _, port = spec.coordinator_address.rpartition(":")
    host = host.strip("[]")  # [::1]:1234
    start = time.monotonic()
    last_error: OSError | None = None
    while time.monotonic() - start < timeout:
        try:
            with socket.create_connection((host, int(port)), timeout=2):
                return max(1, int(timeout - (time.monotonic() - start)))
        except OSError as e:
            last_error = e
            time.sleep(0.5)
    raise DistributedSetupError(
        f"jax.distributed.initialize failed for {where}: nothing answered on {spec.coordinator_address} "
        f"within {timeout} s ({last_error}).\nStart process 0 (--process_id=0) with the same "
        "--coordinator_address (its own reachable address and a free port) and --num_processes, check that "
        "this machine can reach it, or wait longer with --gin.distributed_timeouts.initialization_timeout=SECONDS.")


def initialize_from_flags(opts: dict) -> bool:
    """The launcher's entry: the three flags and --distributed=auto|off from the parsed options."""
    mode = opts.get("distributed") or "auto"
    if mode not in MODES:
        raise ValueError(f"--distributed={mode}: choose one of {', '.join(MODES)} (auto: start jax.distributed "
                         "when a SLURM, Open MPI or multi-host TPU environment is detected; off: never, unless "
                         "--coordinator_address is given).")
    spec = parse_flags(opts.get("coordinator_address"), opts.get("num_processes"), opts.get("process_id"))
    return initialize(spec, auto=mode == "auto")
