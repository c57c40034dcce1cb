"""The generated training mixture: every non-held-out generated task in every variant, at capped
examples-proportional rates shared among the variants by weight (gin: register_generated_mixture.*)."""
from __future__ import annotations

import logging
from typing import Mapping, Sequence

import gin

from flan_mix.data import mixing
from flan_mix.data.generated import collection, rendering, seqio_tasks

logger = logging.getLogger(__name__)

GENERATED_MIXTURE = "gen_train_mixture"
DEFAULT_GENERATED_CAP = 3000
# Within a task, how its variants share the task's rate (normalized over the variants the task has).
# Flan 2022 style: the four template types alike.
EQUAL_TEMPLATE_WEIGHTS = {"zs_opt": 0.25, "zs_noopt": 0.25, "fs_opt": 0.25, "fs_noopt": 0.25}
# The generated default trains a tiny model for minutes and evaluates it zero-shot, so zero-shot variants get
# most of the weight: a few-shot prompt fills most of a packed 256-token row, a zero-shot one a fifth of it
# (measured: 4.9 instead of 2.9 examples per row). Few-shot and CoT variants stay in the mix.
DEFAULT_VARIANT_WEIGHTS = {"zs_opt": 0.3, "zs_noopt": 0.3, "fs_opt": 0.1, "fs_noopt": 0.1,
                           "zs_cot": 0.1, "fs_cot": 0.05}


def generated_mixture_rates(num_train: int, cap: int | None = DEFAULT_GENERATED_CAP,
                            variant_weights: Mapping[str, float] | None = None,
                            task_names: Sequence[str] | None = None) -> dict[str, float]:
    """Rates of the generated training mixture over seqio names gen_<task>_<variant> (non-held-out tasks)."""
    task_names = list(task_names if task_names is not None else collection.TRAIN_TASK_NAMES)
    task_rates = mixing.capped_rates({t: num_train for t in task_names}, cap)
    return mixing.split_by_weights(task_rates, {t: rendering.task_variants(t) for t in task_names},
                                   variant_weights or DEFAULT_VARIANT_WEIGHTS, name_fn=seqio_tasks.variant_task_name)


@gin.configurable
def register_generated_mixture(name: str = GENERATED_MIXTURE, cap: int | None = DEFAULT_GENERATED_CAP,
                               variant_weights: Mapping[str, float] | None = None) -> str:
    """Registers the generated training mixture (non-held-out tasks x variants) and returns its name.

    Registers the generated tasks first (with register_generated_tasks' defaults or gin bindings) if needed.
    """
    config = seqio_tasks.registered_config()
    if config is None:
        seqio_tasks.register_generated_tasks()
        config = seqio_tasks.registered_config()
    rates = generated_mixture_rates(config.num_train, cap, variant_weights)
    mixing.register_mixture(name, rates)
    logger.info("Registered mixture '%s': %d tasks.", name, len(rates))
    return name
