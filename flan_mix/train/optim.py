"""optax optimizers and learning-rate schedules, configured from gin."""
from __future__ import annotations

import gin
import jax.numpy as jnp
import optax

SCHEDULES = ("constant", "rsqrt", "cosine")
OPTIMIZERS = ("adafactor", "adamw")


@gin.configurable
def make_schedule(name: str = "constant", learning_rate: float = 1e-3, warmup_steps: int = 0,
                  decay_steps: int | None = None, final_fraction: float = 0.0):
    """constant: flat after a linear warmup.
    rsqrt: t5x's pre-training schedule, learning_rate / sqrt(max(step, warmup_steps)).
    cosine: linear warmup to learning_rate, cosine decay to final_fraction * lr at decay_steps.
    """
    if name == "constant":
        if warmup_steps:
            return optax.join_schedules(
                [optax.linear_schedule(0.0, learning_rate, warmup_steps),
                 optax.constant_schedule(learning_rate)], [warmup_steps])
        return optax.constant_schedule(learning_rate)
    if name == "rsqrt":
        floor = max(warmup_steps, 1)
        return lambda step: learning_rate * jnp.reciprocal(jnp.sqrt(jnp.maximum(step, floor)))
    if name == "cosine":
        if not decay_steps:
            raise ValueError("make_schedule(name='cosine') needs decay_steps (gin: "
                             "make_schedule.decay_steps = %TRAIN_STEPS).")
        return optax.warmup_cosine_decay_schedule(0.0, learning_rate, max(warmup_steps, 1),
                                                  decay_steps, learning_rate * final_fraction)
    raise ValueError(f"unknown schedule {name!r}; choose one of {SCHEDULES} (gin: make_schedule.name).")


@gin.configurable
def make_optimizer(name: str = "adafactor", schedule=None, weight_decay: float = 0.0,
                   clip_grad_norm: float | None = None, b1: float = 0.9, b2: float = 0.999):
    """Adafactor as in t5x (factored second moments, update clipping at 1.0, parameter-scaled
    steps, decay 0.8), or AdamW. Returns (optax transformation, schedule)."""
    schedule = make_schedule() if schedule is None else schedule
    if name == "adafactor":
        tx = optax.adafactor(schedule, decay_rate=0.8, clipping_threshold=1.0,
                             multiply_by_parameter_scale=True, weight_decay_rate=weight_decay or None)
    elif name == "adamw":
        tx = optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay)
    else:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS} (gin: make_optimizer.name).")
    if clip_grad_norm:
        tx = optax.chain(optax.clip_by_global_norm(clip_grad_norm), tx)
    return tx, schedule
