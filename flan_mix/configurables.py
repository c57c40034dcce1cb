"""Imports every module that defines gin configurables, so that gin can check each binding
(a misspelt parameter is an error at parse time, not a silent no-op)."""
from flan_mix.data import registration, vocab  # noqa: F401
from flan_mix.evaluation import generation  # noqa: F401
from flan_mix.infer import infer_task  # noqa: F401
from flan_mix.models import t5  # noqa: F401
from flan_mix.train import checkpoints, loop, optim, partitioning  # noqa: F401
