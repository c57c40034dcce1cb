"""seqio Tasks for the generated mini-collection (the embedded default).

Names (all static; see the lists at the bottom):

* ``gen_<task>_<variant>``: training-style tasks, splits train and validation. Variants are the template types
  zs_opt, zs_noopt, fs_opt, fs_noopt, plus zs_cot and fs_cot for tasks with rationales (rendering.VARIANTS).
  Each variant's train split draws its own questions (seed derived from the variant), so the four or six
  renderings of a task add up to more distinct questions; validation questions are the same for all variants.
* ``gen_<task>_eval``: zero-shot evaluation on the validation split with one fixed template (zs_opt with a plain
  "- option" list for multiple choice, zs_noopt for free-form); targets are the answer text, and an
  "options" field (JSON list) carries the options for rank classification.

Sources yield already-rendered "inputs"/"targets" strings plus passthrough metadata (task_name, template_id,
template_type, answer); preprocessors tokenize and append EOS (after trimming, so a cut input keeps its EOS).
Sources are rendered lazily, on the first request of a task's dataset, and kept in memory.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
from typing import Any, Mapping, Sequence

import gin
import seqio
import tensorflow as tf

from flan_mix.data import seqio_helpers, templates
from flan_mix.data import vocab as vocab_lib
from flan_mix.data.generated import collection, rendering

logger = logging.getLogger(__name__)

PREFIX = "gen_"
DEFAULT_NUM_TRAIN = 1000
DEFAULT_NUM_VALIDATION = 200
DEFAULT_MAX_INPUT_TOKENS = 256  # few-shot prompts drop exemplars until inputs + EOS fit this
METADATA_KEYS = ("task_name", "template_id", "template_type", "answer")
# What the default vocabulary is trained on; the name keeps its cache file where it always was
# (generated_spm_*.model).
VOCABULARY_CORPUS = vocab_lib.Corpus("generated", rendering.vocabulary_corpus)


def variant_task_name(task: str, variant: str) -> str:
    return f"{PREFIX}{task}_{variant}"


def eval_task_name(task: str) -> str:
    return f"{PREFIX}{task}_eval"


@dataclasses.dataclass(frozen=True)
class GeneratedConfig:
    seed: int
    num_train: int
    num_validation: int
    max_exemplars: int
    max_input_tokens: int
    vocabulary: Any = dataclasses.field(compare=False)
    vocabulary_id: str = ""


_REGISTERED: GeneratedConfig | None = None


class _RenderedSource(seqio.FunctionDataSource):
    """A FunctionDataSource over pre-rendered records (already in a seeded random order; no file shuffling).

    Its few-shot prompts are sized to max_input_tokens (a flan_mix.data.pipeline.SizedPromptSource), so the
    pipeline can warn when the feature length would cut them.
    """

    max_input_tokens_binding = "register_generated_tasks.max_input_tokens"

    def __init__(self, dataset_fn, *, splits: Sequence[str], num_input_examples: Mapping[str, int],
                 max_input_tokens: int):
        super().__init__(dataset_fn, splits=splits, num_input_examples=num_input_examples)
        self.max_input_tokens = max_input_tokens

    def get_dataset(self, split: str = "train", shuffle: bool = True, seed: int | None = None,
                    shard_info: seqio.ShardInfo | None = None, *, sequence_length=None, use_cached=False,
                    num_epochs=1) -> tf.data.Dataset:
        del shuffle, seed, sequence_length, use_cached, num_epochs
        if shard_info and shard_info.num_shards > 1:  # Task.get_dataset shards examples for us (one source shard)
            raise ValueError("_RenderedSource has one shard; seqio shards its examples instead.")
        return self._dataset_fn(split=split, shuffle_files=False)


_RECORD_KEYS = ("inputs", "targets") + METADATA_KEYS


def _records_to_dataset(records: Sequence[dict]) -> tf.data.Dataset:
    keys = _RECORD_KEYS + (("options",) if records and "options" in records[0] else ())
    return tf.data.Dataset.from_tensor_slices(
        {k: tf.constant([r[k] for r in records], dtype=tf.string, shape=(len(records),)) for k in keys})


@functools.lru_cache(maxsize=None)
def _variant_records(config: GeneratedConfig, task: str, variant: str, split: str) -> tuple[dict, ...]:
    num = config.num_train if split == "train" else config.num_validation
    # Each variant's train split has its own questions; validation is shared by all variants.
    seed = collection.derive_seed("variant", config.seed, variant) if split == "train" else config.seed
    vocab = config.vocabulary

    def fits(inputs: str) -> bool:
        # A token covers at least one byte, plus possibly a leading "▁" piece: skip tokenizing short prompts.
        if len(inputs.encode("utf-8")) + 2 <= config.max_input_tokens:
            return True
        return len(vocab.encode(inputs)) + 1 <= config.max_input_tokens

    return tuple(rendering.render_split(task, variant, split, num, seed, max_exemplars=config.max_exemplars,
                                        fits=fits))


def _fixed_eval_choices(family: str) -> templates.Choices:
    """One fixed rendering: the family's first template, options as a plain '- item' list, no end line."""
    template_id = f"{family}/zs/0"
    choices = templates.choose(0, family=family, template_id=template_id)
    plain = next(m for m in templates.MARKERS if m.labels is None and "\n" in m.joiner)
    return dataclasses.replace(choices, header=templates.OPTION_HEADERS[0], marker=plain, end=("", ""),
                               trigger=templates.COT_TRIGGERS[0], trigger_separator="\n",
                               answer_sentence=templates.COT_ANSWER_SENTENCES[0])


@functools.lru_cache(maxsize=None)
def _eval_records(config: GeneratedConfig, task: str) -> tuple[dict, ...]:
    gtask = collection.get_generated_task(task)
    template_type = "zs_opt" if gtask.is_mc else "zs_noopt"
    choices = _fixed_eval_choices(gtask.family)
    out = []
    for ex in collection.generate_split(task, "validation", config.num_validation, config.seed):
        r = templates.render(ex, choices, template_type=template_type, cot=False)
        out.append({"inputs": r["inputs"], "targets": r["targets"], "task_name": task,
                    "template_id": r["template_id"], "template_type": template_type,
                    "answer": ex["answer"],
                    # The answer options as JSON ("[]" for free-form tasks): rank classification scores them.
                    "options": json.dumps(list(ex.get("options") or ()))})
    return tuple(out)


def _make_task(name: str, records_fn, splits: Sequence[str], num_examples: Mapping[str, int],
               config: GeneratedConfig) -> seqio.Task:
    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
        del shuffle_files, seed  # the data is fixed by the registration seed; seqio shuffles with its own seed
        if split not in splits:
            raise ValueError(f"Task '{name}' has no split '{split}'; its splits are {list(splits)}.")
        return _records_to_dataset(records_fn(split))

    features = {k: seqio.Feature(vocabulary=config.vocabulary, add_eos=True, dtype=tf.int32)
                for k in ("inputs", "targets")}
    return seqio_helpers.InMemoryTask(
        name,
        records_fn=records_fn,
        source=_RenderedSource(dataset_fn, splits=splits, num_input_examples=dict(num_examples),
                               max_input_tokens=config.max_input_tokens),
        output_features=features,
        preprocessors=[seqio_helpers.tokenize, seqio_helpers.append_eos_after_trim],
        shuffle_buffer_size=seqio_helpers.SHUFFLE_BUFFER_SIZE,
    )


def _all_task_names() -> list[str]:
    names = []
    for task in collection.GENERATED_TASKS:
        names += [variant_task_name(task, v) for v in rendering.task_variants(task)]
        names.append(eval_task_name(task))
    return names


def _unregister_all() -> None:
    ours = set(_all_task_names())
    for mix in list(seqio.MixtureRegistry.names()):
        if {t.name for t in seqio.MixtureRegistry.get(mix).tasks} & ours:
            seqio.MixtureRegistry.remove(mix)
    for name in ours:
        if name in seqio.TaskRegistry.names():
            seqio.TaskRegistry.remove(name)


@gin.configurable
def register_generated_tasks(vocabulary: seqio.Vocabulary | None = None, seed: int = 0,
                             num_train: int = DEFAULT_NUM_TRAIN, num_validation: int = DEFAULT_NUM_VALIDATION,
                             max_exemplars: int = rendering.DEFAULT_MAX_EXEMPLARS,
                             max_input_tokens: int = DEFAULT_MAX_INPUT_TOKENS) -> list[str]:
    """Registers every generated task (variants and eval tasks) in seqio.TaskRegistry. Idempotent.

    Calling again with the same arguments does nothing; with different ones, the generated tasks (and the
    mixtures that use them) are replaced. Data is rendered lazily, the first time a dataset is requested.

    Returns the registered task names.
    """
    global _REGISTERED
    if vocabulary is None:
        vocabulary = vocab_lib.get_vocabulary(corpus=VOCABULARY_CORPUS)
    for arg, value in (("num_train", num_train), ("num_validation", num_validation),
                       ("max_exemplars", max_exemplars), ("max_input_tokens", max_input_tokens)):
        if int(value) < 1:
            raise ValueError(f"register_generated_tasks: {arg} must be >= 1, got {value}.")
    config = GeneratedConfig(seed=int(seed), num_train=int(num_train), num_validation=int(num_validation),
                             max_exemplars=int(max_exemplars), max_input_tokens=int(max_input_tokens),
                             vocabulary=vocabulary, vocabulary_id=str(vocabulary))
    names = _all_task_names()
    if _REGISTERED == config and all(n in seqio.TaskRegistry.names() for n in names):
        return names
    _unregister_all()
    counts = {"train": config.num_train, "validation": config.num_validation}
    for task, gtask in collection.GENERATED_TASKS.items():
        for variant in rendering.task_variants(task):
            seqio.TaskRegistry.add_provider(
                variant_task_name(task, variant),
                _make_task(variant_task_name(task, variant),
                           functools.partial(_variant_records, config, task, variant), ("train", "validation"),
                           counts, config))
        seqio.TaskRegistry.add_provider(
            eval_task_name(task),
            _make_task(eval_task_name(task), lambda split, t=task: _eval_records(config, t), ("validation",),
                       {"validation": config.num_validation}, config))
    _REGISTERED = config
    logger.info("Registered %d generated seqio tasks (seed %d, %d train / %d validation per task).", len(names),
                config.seed, config.num_train, config.num_validation)
    return names


def registered_config() -> GeneratedConfig | None:
    """The configuration of the current registration, or None before register_generated_tasks()."""
    return _REGISTERED


def task_info(seqio_task_name: str) -> dict:
    """For a generated seqio task name: the generated task, its variant, ability, family and held-out flag."""
    for task, gtask in collection.GENERATED_TASKS.items():
        for variant in rendering.task_variants(task) + ("eval",):
            if seqio_task_name == f"{PREFIX}{task}_{variant}":
                return {"task": task, "variant": variant, "ability": gtask.ability, "family": gtask.family,
                        "held_out": gtask.held_out, "has_cot": gtask.has_cot, "is_mc": gtask.is_mc}
    raise KeyError(f"'{seqio_task_name}' is not a generated task name (gen_<task>_<variant>); "
                   "list them with `python run.py inspect`.")


# Static name lists.
TRAIN_TASKS: tuple[str, ...] = collection.TRAIN_TASK_NAMES  # generated task names in the training mixture
HELD_OUT_TASKS: tuple[str, ...] = collection.HELD_OUT_TASK_NAMES  # generated task names kept out of training
TRAIN_VARIANT_TASK_NAMES: tuple[str, ...] = tuple(
    variant_task_name(t, v) for t in TRAIN_TASKS for v in rendering.task_variants(t))
TRAIN_EVAL_TASK_NAMES: tuple[str, ...] = tuple(eval_task_name(t) for t in TRAIN_TASKS)
HELD_OUT_EVAL_TASK_NAMES: tuple[str, ...] = tuple(eval_task_name(t) for t in HELD_OUT_TASKS)
