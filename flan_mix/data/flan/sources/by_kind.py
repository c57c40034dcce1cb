"""The source of a catalog task: one builder per loader kind of flan_mix.data.flan.catalog."""

from __future__ import annotations

import os
from typing import Optional

from flan_mix.data.data_errors import MissingDataError
from flan_mix.data.flan import catalog as catalog_lib
from flan_mix.data.flan.sources.base import ExampleSource
from flan_mix.data.flan.sources.cot import cot_tsv_source
from flan_mix.data.flan.sources.hf import hf_source
from flan_mix.data.flan.sources.niv2 import niv2_source
from flan_mix.data.flan.sources.tfds import tfds_source


def source_for_task(
    record: catalog_lib.TaskRecord,
    *,
    tfds_data_dir: Optional[os.PathLike | str] = None,
    niv2_dir: Optional[os.PathLike | str] = None,
    cot_dir: Optional[os.PathLike | str] = None,
    hf_cache_dir: Optional[os.PathLike | str] = None,
    skip_malformed: bool = False,
    niv2_max_instances: Optional[int] = None,
    tfds_sharding: str = "examples",
) -> ExampleSource:
    """The source (a seqio.DataSource and an ExampleSource) for a catalog task. Building one reads nothing."""
    spec = record.loader
    if spec.kind == "tfds":
        return tfds_source(record.name, spec.name, spec.split, spec.field_map, tfds_data_dir, sharding=tfds_sharding)
    if spec.kind == "hf":
        return hf_source(record.name, spec.name, spec.config or None, spec.split, spec.field_map, hf_cache_dir)
    if spec.kind == "niv2":
        return niv2_source(record.name, niv2_dir, spec.name, max_instances=niv2_max_instances, skip_malformed=skip_malformed)
    if spec.kind == "cot_tsv":
        return cot_tsv_source(record.name, cot_dir, spec.name, skip_malformed=skip_malformed)
    reason = record.disabled_reason or "its data was never released"
    raise MissingDataError(record.name, f"no loader exists for this task: {reason}", "It cannot be trained on; leave it disabled.")
