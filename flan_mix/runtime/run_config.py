"""The run's shared settings, bound once in gin from the t5x-style macros.

train, eval and infer all read run_config(), so MODEL_DIR, TASK_FEATURE_LENGTHS and friends are
bound in one place (gin/runs/default.gin) instead of once per entry point.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

import gin


@dataclasses.dataclass(frozen=True)
class RunConfig:
    model_dir: str
    task_feature_lengths: Mapping[str, int]
    batch_size: int
    mixture_or_task_name: str | None = None
    train_steps: int | None = None
    seed: int = 0


@gin.configurable
def run_config(model_dir: str = gin.REQUIRED, task_feature_lengths: Mapping[str, int] = gin.REQUIRED,
               batch_size: int = gin.REQUIRED, mixture_or_task_name: str | None = None,
               train_steps: int | None = None, seed: int = 0) -> RunConfig:
    """gin: run_config.model_dir = %MODEL_DIR, ... (see gin/runs/default.gin)."""
    missing = [k for k in ("inputs", "targets") if k not in task_feature_lengths]
    if missing:
        raise ValueError(f"TASK_FEATURE_LENGTHS={dict(task_feature_lengths)} lacks {missing}; "
                         "bind e.g. TASK_FEATURE_LENGTHS = {'inputs': 256, 'targets': 64}.")
    return RunConfig(model_dir=model_dir, task_feature_lengths=dict(task_feature_lengths),
                     batch_size=batch_size, mixture_or_task_name=mixture_or_task_name,
                     train_steps=train_steps, seed=seed)
