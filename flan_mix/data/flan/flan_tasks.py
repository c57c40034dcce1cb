"""The Flan 2022 collection as seqio Tasks and Mixtures, streamed from the real loaders.

Names:

* ``flan2022_<task>_<template type>``: one seqio Task per enabled catalog task x template type it is mixed in
  (flan2021, t0_sf: zs_opt, zs_noopt, fs_opt, fs_noopt; cot, niv2, dialog: zs_opt, fs_opt).
* ``flan2022_<submixture>`` (flan2022_flan2021, flan2022_t0_sf, flan2022_niv2, flan2022_cot, flan2022_dialog):
  capped examples-proportional rates within the submixture, template types by TEMPLATE_WEIGHTS.
* ``flan2022_submix``: the submixtures at SUBMIX_RATES (.40/.32/.20/.05/.03).
* ``flan2022_submix_chung``: the alternative rates of Chung et al. 2022 (ALT_SUBMIX_RATES).

Streaming: registration reads no data. A task's source is the catalog loader (``sources.by_kind``), which
shuffles by seed and shards per host (seqio.ShardInfo) before anything is rendered; the render step
(flan_mix.data.flan.rendering) is a bounded Python generator, and the task (flan_mix.data.flan.streaming) streams
it in Python for training.

Splits: every task has "train" and "validation" (held-in evaluation, e.g.
``pipeline.get_eval_examples("flan2022_cot_gsm8k_zs_opt", split="validation")``). Where validation comes from is
``sources.by_kind.validation_source(record)``: the dataset's own validation split for TFDS and HF (P3) tasks, a
held-out slice of the file for CoT and NIv2 (max(1, min(200, 5%)) examples at fixed positions, left out of train).

Input inversion: a task whose catalog row lists inverted variants (flan2021, cot, dialog) renders each example
input-inverted (the answer or output given, the input asked for) with probability INVERSION_WEIGHTS[submixture]
(gin: register_flan2022.inversion_weights). The mixture rates stay those of the tasks; the share of inverted
examples in a mixture is Registration.inverted_rates.

Missing data: with ``allow_missing_tasks=False`` every enabled task is registered and one whose data is missing
raises ``MissingDataError`` (task, what is missing, how to get it) when its dataset is requested. With
``allow_missing_tasks=True`` the data of every task is checked at registration (cheap file/dir checks), the
missing ones are not registered, their count is logged per submixture, and the rates are renormalized over what
is left (a submixture left empty is dropped from flan2022_submix, logged).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path
from typing import Mapping, Optional, Sequence

import gin
import seqio
import tensorflow as tf

from flan_mix.data import mixing, seqio_helpers, templates
from flan_mix.data.data_errors import MissingDataError, OptionalDependencyError
from flan_mix.data.flan import catalog as catalog_lib
from flan_mix.data.flan import flan_adapters, flan_templates
from flan_mix.data.flan.rendering import RenderSpec
from flan_mix.data.flan.sources.by_kind import source_for_task
from flan_mix.data.flan.streaming import StreamingTask, render_preprocessor

logger = logging.getLogger(__name__)

PREFIX = "flan2022_"
SUBMIX_MIXTURE = "flan2022_submix"
ALT_SUBMIX_MIXTURE = "flan2022_submix_chung"

#: Per-task example caps (before examples-proportional mixing), by submixture.
CAPS = {"flan2021": 30_000, "t0_sf": 20_000, "niv2": 5_000, "cot": 100_000, "dialog": 200_000}
#: Rates of the submixtures in flan2022_submix (Longpre et al. 2023; FLAN flan/v2 README).
SUBMIX_RATES = {"flan2021": 0.40, "t0_sf": 0.32, "niv2": 0.20, "cot": 0.05, "dialog": 0.03}
#: Alternative rates: Chung et al. 2022 (arXiv:2210.11416), Appendix E, Table 23, "Proportion (B)", the one
#: behind the released Flan-T5/Flan-PaLM: Muffin 46.0%, T0-SF 27.9%, NIV2 24.2%, CoT 1.8% of examples sampled
#: (Proportion (A), 52/15/30/3, was used only for the paper's scaling and ablation runs). Muffin there includes
#: the dialog (and program synthesis) tasks, so its 46.0% is split between flan2021 and dialog in the 40:3 ratio
#: of SUBMIX_RATES.
ALT_SUBMIX_RATES = {"flan2021": 0.460 * 40 / 43, "t0_sf": 0.279, "niv2": 0.242, "cot": 0.018,
                    "dialog": 0.460 * 3 / 43}
#: How a task's rate is shared by its template types.
_FOUR = {"zs_opt": 0.25, "zs_noopt": 0.25, "fs_opt": 0.25, "fs_noopt": 0.25}
_TWO = {"zs_opt": 0.5, "fs_opt": 0.5}
TEMPLATE_WEIGHTS = {"flan2021": _FOUR, "t0_sf": _FOUR, "cot": _TWO, "niv2": _TWO, "dialog": _TWO}
#: Share of a task's examples rendered input-inverted, by submixture; only tasks whose catalog row lists inverted
#: variants are inverted. gin: register_flan2022.inversion_weights = {'flan2021': 0.5} overrides an entry.
INVERSION_WEIGHTS = {"flan2021": 0.3, "cot": 0.3, "dialog": 0.3}

# Development data next to the checkout (not part of an installed package).
DEFAULT_COT_DIR = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "flan" / "cot"


def task_name(task: str, template_type: str) -> str:
    return f"{PREFIX}{task}_{template_type}"


def submixture_name(submixture: str) -> str:
    return f"{PREFIX}{submixture}"


# ------------------------------------------------------------------------------------------------------------
# Availability (registration-time check for allow_missing_tasks).

@dataclasses.dataclass(frozen=True)
class DataDirs:
    tfds_data_dir: Optional[str] = None
    niv2_dir: Optional[str] = None
    cot_dir: Optional[str] = None
    hf_cache_dir: Optional[str] = None


def missing_reason(record: catalog_lib.TaskRecord, dirs: DataDirs) -> Optional[str]:
    """Why the task's data is not here (what is missing and how to get it), or None if it looks present."""
    spec = record.loader
    if spec.kind == "unavailable":
        return f"never released: {record.disabled_reason}"
    try:
        _source(record, dirs).check_available()
    except (MissingDataError, OptionalDependencyError) as e:
        return str(e)
    return None


def _source(record: catalog_lib.TaskRecord, dirs: DataDirs):
    return source_for_task(record, tfds_data_dir=dirs.tfds_data_dir, niv2_dir=dirs.niv2_dir, cot_dir=dirs.cot_dir,
                           hf_cache_dir=dirs.hf_cache_dir)


# ------------------------------------------------------------------------------------------------------------
# Registration.

@dataclasses.dataclass
class Registration:
    dirs: DataDirs
    seed: int
    allow_missing_tasks: bool
    task_names: list[str]
    records: dict[str, catalog_lib.TaskRecord]  # catalog name -> record, registered tasks only
    dropped: dict[str, str]  # catalog name -> why (missing data)
    submixture_rates: dict[str, dict[str, float]]  # submixture -> {seqio task: rate within the submixture}
    mixtures: dict[str, dict[str, float]]  # mixture name -> {seqio task: effective rate}
    inversion_weights: dict[str, float]  # seqio task -> share of its examples rendered input-inverted
    vocabulary_id: str = ""

    def inverted_rates(self, mixture: str) -> dict[str, float]:
        """{seqio task: rate of its input-inverted examples in `mixture`} for the tasks that invert."""
        return {t: rate * self.inversion_weights[t] for t, rate in self.mixtures[mixture].items()
                if self.inversion_weights.get(t)}


_REGISTERED: Optional[Registration] = None


def template_types_for(submixture: str) -> tuple[str, ...]:
    return tuple(TEMPLATE_WEIGHTS[submixture])


def _make_task(record: catalog_lib.TaskRecord, template_type: str, dirs: DataDirs, seed: int,
               vocabulary: seqio.Vocabulary,
               inversion_weights: Mapping[str, float] = INVERSION_WEIGHTS) -> StreamingTask:
    family = flan_templates.family_for(record.template_family, record.name)
    inversion_weight = inversion_weights.get(record.submixture, 0.0) if record.inversions else 0.0
    if inversion_weight and not templates.get_family(family).invertible:
        raise ValueError(f"task {record.name!r}: the catalog lists inverted variants ({'; '.join(record.inversions)}) "
                         f"but template family {family!r} has no inverted templates; add some to its family spec or "
                         f"set register_flan2022.inversion_weights = {{'{record.submixture}': 0}}.")
    spec = RenderSpec(task=record.name, source=record.source, family=family, template_type=template_type,
                      inversion_weight=inversion_weight, seed=seed, is_niv2=record.loader.kind == "niv2")
    features = {k: seqio.Feature(vocabulary=vocabulary, add_eos=True, dtype=tf.int32) for k in ("inputs", "targets")}
    adapter = flan_adapters.adapter_for(record)
    render = functools.partial(render_preprocessor, spec=spec, adapter=adapter)
    functools.update_wrapper(render, render_preprocessor)
    return StreamingTask(
        task_name(record.name, template_type),
        spec=spec,
        adapter=adapter,
        source=_source(record, dirs),
        output_features=features,
        preprocessors=[render],
        shuffle_buffer_size=seqio_helpers.SHUFFLE_BUFFER_SIZE,
    )


def _unregister() -> None:
    for mix in list(seqio.MixtureRegistry.names()):
        if mix.startswith(PREFIX):
            seqio.MixtureRegistry.remove(mix)
    for name in list(seqio.TaskRegistry.names()):
        if name.startswith(PREFIX):
            seqio.TaskRegistry.remove(name)


def submixture_task_rates(records: Sequence[catalog_lib.TaskRecord], submixture: str) -> dict[str, float]:
    """{seqio task: rate} within one submixture: capped examples-proportional, then template-type weights."""
    counts = {r.name: r.example_count for r in records}
    if not counts:
        return {}
    rates = mixing.capped_rates(counts, CAPS[submixture])
    types = template_types_for(submixture)
    return mixing.split_by_weights(rates, {t: types for t in counts}, TEMPLATE_WEIGHTS[submixture],
                                   name_fn=task_name)


def _resolve_allow_missing(value: Optional[bool]) -> bool:
    if value is not None:
        return bool(value)
    try:  # the macro form: --gin.allow_missing_tasks=True
        return bool(gin.query_parameter("%allow_missing_tasks"))
    except (ValueError, KeyError):
        return False


def _default_cot_dir() -> Optional[str]:
    return str(DEFAULT_COT_DIR) if DEFAULT_COT_DIR.is_dir() else None


def _resolve_inversion_weights(overrides: Optional[Mapping[str, float]],
                               cat: catalog_lib.Catalog) -> dict[str, float]:
    overrides = dict(overrides or {})
    invertible = {s for s in catalog_lib.SUBMIXTURES if any(r.inversions for r in cat.by_submixture(s))}
    for sub, w in overrides.items():
        if sub not in catalog_lib.SUBMIXTURES:
            raise ValueError(f"register_flan2022.inversion_weights: unknown submixture {sub!r}; choose from "
                             f"{sorted(invertible)}.")
        if not 0.0 <= w <= 1.0:
            raise ValueError(f"register_flan2022.inversion_weights[{sub!r}] = {w}: a share of examples, so it "
                             "must be in [0, 1].")
        if w and sub not in invertible:
            raise ValueError(f"register_flan2022.inversion_weights[{sub!r}] = {w}, but no {sub} task lists "
                             f"inverted variants in the catalog; submixtures with inversions: {sorted(invertible)}.")
    return {**INVERSION_WEIGHTS, **overrides}


@gin.configurable
def register_flan2022(vocabulary: seqio.Vocabulary, *, tfds_data_dir: Optional[str] = None,
                      niv2_dir: Optional[str] = None, cot_dir: Optional[str] = "default",
                      hf_cache_dir: Optional[str] = None, allow_missing_tasks: Optional[bool] = None,
                      seed: int = 0, submixtures: Sequence[str] = catalog_lib.SUBMIXTURES,
                      catalog_path: Optional[str] = None,
                      inversion_weights: Optional[Mapping[str, float]] = None) -> Registration:
    """Registers the Flan 2022 tasks and mixtures (reads no data; see the module docstring).

    vocabulary: the shared vocabulary (flan_mix.data.registration.register_all passes it).
    cot_dir="default" is ../shared/data/flan/cot next to the repository when it exists, else None.
    allow_missing_tasks=None reads the gin macro ``allow_missing_tasks`` (False if unset).
    submixtures limits what is registered (e.g. ("cot",) for a quick CoT-only run).
    inversion_weights overrides entries of INVERSION_WEIGHTS (e.g. {'flan2021': 0.0} turns its inversion off).
    """
    global _REGISTERED
    if cot_dir == "default":
        cot_dir = _default_cot_dir()
    allow = _resolve_allow_missing(allow_missing_tasks)
    unknown = sorted(set(submixtures) - set(catalog_lib.SUBMIXTURES))
    if unknown:
        raise ValueError(f"register_flan2022.submixtures: unknown {unknown}; choose from {catalog_lib.SUBMIXTURES}")
    dirs = DataDirs(tfds_data_dir=tfds_data_dir, niv2_dir=niv2_dir, cot_dir=cot_dir, hf_cache_dir=hf_cache_dir)
    cat = catalog_lib.load_catalog(catalog_path)
    weights = _resolve_inversion_weights(inversion_weights, cat)
    _unregister()
    task_names: list[str] = []
    records: dict[str, catalog_lib.TaskRecord] = {}
    dropped: dict[str, str] = {}
    sub_rates: dict[str, dict[str, float]] = {}
    inverted_share: dict[str, float] = {}
    for sub in submixtures:
        kept = []
        for rec in cat.by_submixture(sub, enabled_only=True):
            if allow:
                why = missing_reason(rec, dirs)
                if why is not None:
                    dropped[rec.name] = why
                    continue
            kept.append(rec)
            records[rec.name] = rec
            for tt in template_types_for(sub):
                t = _make_task(rec, tt, dirs, seed, vocabulary, weights)
                seqio.TaskRegistry.add_provider(t.name, t)
                task_names.append(t.name)
                inverted_share[t.name] = t.spec.inversion_weight
        n_drop = sum(1 for r in cat.by_submixture(sub, enabled_only=True) if r.name in dropped)
        if n_drop:
            logger.warning("allow_missing_tasks: dropped %d of %d %s tasks whose data is missing (e.g. %s); rates "
                           "renormalized over the remaining %d.", n_drop, n_drop + len(kept), sub,
                           next(n for n in dropped if cat.get(n).submixture == sub), len(kept))
        sub_rates[sub] = submixture_task_rates(kept, sub)
    mixtures: dict[str, dict[str, float]] = {}
    for sub, rates in sub_rates.items():
        if rates:
            mixing.register_mixture(submixture_name(sub), rates)
            mixtures[submixture_name(sub)] = mixing.normalize(rates)
        else:
            logger.warning("Submixture %s has no tasks left (all %s); mixture %s is not registered and it is left "
                           "out of %s.", sub, "missing" if allow else "disabled", submixture_name(sub),
                           SUBMIX_MIXTURE)
    for mix_name, weights in ((SUBMIX_MIXTURE, SUBMIX_RATES), (ALT_SUBMIX_MIXTURE, ALT_SUBMIX_RATES)):
        nested = {s: (weights[s], r) for s, r in sub_rates.items() if r}
        if not nested:
            continue
        flat = mixing.nested_rates(nested)
        mixing.register_mixture(mix_name, flat)
        mixtures[mix_name] = flat
    if dropped:
        logger.warning("allow_missing_tasks: %d task(s) dropped in all; registered %d catalog tasks as %d seqio "
                       "tasks.", len(dropped), len(records), len(task_names))
    _REGISTERED = Registration(dirs=dirs, seed=seed, allow_missing_tasks=allow, task_names=task_names,
                               records=records, dropped=dropped, submixture_rates=sub_rates, mixtures=mixtures,
                               inversion_weights=inverted_share,
                               vocabulary_id=str(vocabulary))
    logger.info("Registered %d Flan 2022 seqio tasks (%d catalog tasks), %d mixtures.", len(task_names),
                len(records), len(mixtures))
    return _REGISTERED


def registered() -> Optional[Registration]:
    return _REGISTERED


def eval_group(seqio_task_name: str) -> dict[str, str]:
    """{"ability", "group"} of a registered Flan 2022 seqio task for evaluation tables: the group is
    its submixture ("flan2022 cot"), so each submixture gets its own mean row."""
    reg = registered()
    if reg is not None:
        for template_type in sorted({t for w in TEMPLATE_WEIGHTS.values() for t in w}):
            record = reg.records.get(seqio_task_name.removeprefix(PREFIX).removesuffix(f"_{template_type}"))
            if record is not None and seqio_task_name.endswith(f"_{template_type}"):
                return {"ability": record.ability, "group": f"flan2022 {record.submixture}"}
    return {"ability": "", "group": "other"}
