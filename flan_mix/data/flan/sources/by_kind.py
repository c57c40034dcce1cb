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
from flan_mix.data.flan.sources.tfds import tfds_source, tfds_validation_split


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


def validation_source(record: catalog_lib.TaskRecord) -> str:
    """Where a task's ``validation`` split (held-in evaluation) comes from; reads no data.

    * ``"tfds:<split>"``: a TFDS task validates on its dataset's own ``validation`` split; one that trains on a
      slice of validation (story_cloze: ``validation[:-200]``) on the complement (``tfds:validation[-200:]``).
      A prepared dataset without a validation split raises a ValueError naming its splits when asked for it.
    * ``"hf:validation"``: a P3 (Hugging Face) task validates on the subset's own ``validation`` split.
    * ``"train slice"``: CoT TSVs and NIv2 task files have no validation split. Validation is a held-out slice of
      the file: the last max(1, min(200, floor(5% of n))) positions of one fixed permutation of its n examples
      (seed base.HOLDOUT_SEED, independent of the run seed and the number of hosts; none when n < 2). The train
      split leaves them out, so nothing evaluated was trained on.
    * ``"none"``: a task without a loader, or a TFDS slice of validation whose complement is not known.
    """
    spec = record.loader
    if spec.kind == "tfds":
        split = tfds_validation_split(spec.split)
        return f"tfds:{split}" if split else "none"
    if spec.kind == "hf":
        return "hf:validation"
    if spec.kind in ("niv2", "cot_tsv"):
        return "train slice"
    return "none"
