"""What train() does when the machine is taken away (SIGTERM) or the numbers go bad (NaN/inf).

Preemption. A TPU VM being preempted, or SLURM at a job's time limit, sends SIGTERM and kills the
process a little later. PreemptionGuard turns SIGTERM into a flag (the handler does nothing else:
no I/O, no jax); the step loop looks at it between steps (with several processes, through an
all-gather so that all of them stop at the same step), saves a checkpoint at the current step
and raises Preempted, a SystemExit with code 0, so the process ends cleanly and the next start
resumes at that step.

Non-finite steps. The jitted step reports a bit mask of what came out NaN or inf (the loss, the
gradient norm, the update; see trainer.NONFINITE_BITS). FaultTracker folds these masks into a few
device scalars, one tiny asynchronous dispatch per step: the host reads them only where the loop
already waits for the devices (the log_every_steps metrics, the checkpoint saves), so the step
loop gets no extra device->host round trip.
"""
from __future__ import annotations

import dataclasses
import logging
import signal
import threading

import gin
import jax
import jax.numpy as jnp
import numpy as np

from flan_mix.train.trainer import nonfinite_names

log = logging.getLogger(__name__)

NONFINITE_POLICIES = ("stop", "skip")


class Preempted(SystemExit):
    """SIGTERM arrived; a checkpoint was saved at `step`. Exit code 0: the run is not a failure."""

    def __init__(self, step: int, message: str):
        super().__init__(0)
        self.step = step
        self.message = message

    def __str__(self):
        return self.message


class NonFiniteError(FloatingPointError):
    """Training met a NaN or inf and train.nonfinite = 'stop'. Nothing non-finite was saved."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


@gin.configurable(denylist=["signals"])
class PreemptionGuard:
    """`with PreemptionGuard() as guard:` SIGTERM sets guard.signum instead of killing the process;
    the handlers that were installed before come back on exit.

    Several processes (multi-host): the signal may reach only some of them, or reach them at
    different steps, yet all must save the same step (a checkpoint is one collective write) and
    stop together. agreed(step) all-gathers the hosts' flags at every multihost_check_every_steps-th
    step, the same steps on every host, and says stop on all of them when any host was signalled.
    That all-gather makes the host wait for the step in flight, so raise the interval if that
    shows; keep interval x step time well inside the grace period before the kill (about 30 s on
    a preempted TPU VM, SLURM's KillWait). With one process agreed() is the flag itself: no
    collective, no wait.

    Signal handlers can only be installed from the main thread; elsewhere (a notebook's worker
    thread) the guard stays inactive and says so in the log.
    """

    def __init__(self, signals=(signal.SIGTERM,), multihost_check_every_steps: int = 1):
        if multihost_check_every_steps < 1:
            raise ValueError(f"PreemptionGuard.multihost_check_every_steps={multihost_check_every_steps}: "
                             "must be at least 1.")
        self.signals = tuple(signals)
        self.every = int(multihost_check_every_steps)
        self.signum: int | None = None
        self.stopped = False  # set by agreed(): this process (and every other) stops here
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame):  # runs in the main thread between bytecodes: only set a flag
        self.signum = signum

    def __bool__(self) -> bool:
        return self.signum is not None

    def agreed(self, step: int) -> bool:
        """Whether to stop before `step`; the same answer on every process. Call it at every step."""
        if jax.process_count() == 1:
            self.stopped = self.signum is not None
        elif step % self.every == 0:
            from jax.experimental import multihost_utils
            flags = multihost_utils.process_allgather(np.int32(self.signum is not None))
            self.stopped = bool(np.any(flags))
        return self.stopped

    @property
    def name(self) -> str:
        if self.signum is not None:
            return signal.Signals(self.signum).name
        return "SIGTERM (on another process)" if self.stopped else ""

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            log.warning("train() is not running in the main thread: SIGTERM will not save a checkpoint.")
            return self
        for s in self.signals:
            self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()
        return False


@jax.jit
def _fold(tracked, nonfinite):
    count, first_index, first_mask, seen = tracked
    bad = nonfinite != 0
    is_first = bad & (first_index < 0)
    return (count + bad.astype(jnp.int32), jnp.where(is_first, seen, first_index),
            jnp.where(is_first, nonfinite, first_mask), seen + 1)


@dataclasses.dataclass
class Faults:
    """What FaultTracker.read() found: non-finite steps since the tracker started."""
    count: int
    first_step: int | None  # the step (as logged: state.step after it) of the first one
    first_names: list[str]


class FaultTracker:
    """Counts the non-finite steps of this run on the device; read() is the only host sync."""

    def __init__(self, start_step: int):
        self.start_step = start_step
        zero = jnp.zeros((), jnp.int32)
        self._tracked = (zero, zero - 1, zero, zero)

    def update(self, device_metrics) -> None:
        self._tracked = _fold(self._tracked, device_metrics["nonfinite"])

    def read(self) -> Faults:
        count, first_index, first_mask, _ = (int(x) for x in jax.device_get(self._tracked))
        first = self.start_step + first_index + 1 if first_index >= 0 else None
        return Faults(count=count, first_step=first, first_names=nonfinite_names(first_mask))


def nonfinite_message(faults: Faults, *, detected_at: int, metrics: dict[str, float] | None,
                      last_checkpoint: int | None, checkpoint_dir: str, state_only: bool = False) -> str:
    """The error of a stopped run: the step, the metric(s), what was kept, and what to try."""
    if state_only:
        what = (f"the training state at step {detected_at} holds NaN or inf although every update applied "
                "was finite (an overflow in the parameters or optimizer state)")
        step = detected_at
    else:
        step = faults.first_step
        what = f"non-finite {' and '.join(faults.first_names)} at step {step}"
        if detected_at != step:
            what += f" (found at step {detected_at}, where metrics are read)"
    lines = [f"training stopped: {what}."]
    if metrics:
        shown = ", ".join(f"{k}={metrics[k]:.4g}" for k in ("loss", "grad_norm", "learning_rate") if k in metrics)
        lines.append(f"  metrics at step {detected_at}: {shown}")
    if last_checkpoint is None:
        lines.append(f"  No checkpoint was written (none in {checkpoint_dir}); nothing non-finite was saved.")
    else:
        lines.append(f"  The last good checkpoint is {checkpoint_dir}/{last_checkpoint} (step {last_checkpoint}); "
                     "nothing non-finite was saved, and the next start resumes there.")
    lines += [
        "  What to try:",
        "  - a lower learning rate or a longer warmup (make_schedule.learning_rate, make_schedule.warmup_steps),",
        "    or gradient clipping (make_optimizer.clip_grad_norm = 1.0);",
        "  - a larger z-loss, which keeps the logits near 0 (build_model.z_loss; 1e-4 by default);",
        f"  - check the data of step {step}: its batch is number {step - 1} of the seeded stream "
        f"(pipeline.get_batches(..., start_batch={step - 1}));",
        "  - or skip such steps, counted and logged as train/skipped_steps: --gin.train.nonfinite=\"'skip'\".",
    ]
    return "\n".join(lines)
