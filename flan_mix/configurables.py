"""Imports every module that defines gin configurables, so that gin can check each binding
(a misspelt parameter is an error at parse time, not a silent no-op)."""
import gin

from flan_mix.analysis import growth  # noqa: F401
from flan_mix.curation import http_oracle, ifd, local_oracle, reflection, tapir  # noqa: F401
from flan_mix.data import registration, vocab  # noqa: F401
from flan_mix.evaluation import benchmarks, generation  # noqa: F401
from flan_mix.infer import infer_task, serve  # noqa: F401
from flan_mix.kernels.flash_attention import BlockSizes
from flan_mix.models import build, t5  # noqa: F401
from flan_mix.runtime import checkpoints, distributed, partitioning, run_config  # noqa: F401
from flan_mix.train import loop, optim  # noqa: F401

# The Pallas kernel's tiles, bindable as build_model.attention_block_sizes = @BlockSizes().
gin.external_configurable(BlockSizes, "BlockSizes")
