"""Rendering the generated tasks through the template engine: the variants of a task and the vocabulary corpus.

A *variant* is how a task is rendered: the four template types, plus "zs_cot"/"fs_cot" (the "cot" family,
rationale + answer sentence) for tasks with rationales. Direct variants use the task's own family. Pure Python:
flan_mix.data.generated.seqio_tasks wraps the rendered records in seqio, and the vocabulary is trained on
:func:`vocabulary_corpus`.
"""
from __future__ import annotations

import random
from typing import Callable

from flan_mix.data import templates
from flan_mix.data.generated import collection

VARIANTS: dict[str, tuple[str, bool]] = {  # variant -> (template type, chain of thought)
    "zs_opt": ("zs_opt", False),
    "zs_noopt": ("zs_noopt", False),
    "fs_opt": ("fs_opt", False),
    "fs_noopt": ("fs_noopt", False),
    "zs_cot": ("zs_noopt", True),
    "fs_cot": ("fs_noopt", True),
}
COT_VARIANTS = ("zs_cot", "fs_cot")
DEFAULT_MAX_EXEMPLARS = 2  # few-shot prompts stay short, so packed rows still hold several examples
DEFAULT_EXEMPLAR_POOL = 256


def task_variants(task_name: str) -> tuple[str, ...]:
    """The variants a task is rendered in: the 4 template types, plus the CoT variants when it has rationales."""
    task = collection.get_generated_task(task_name)
    return tuple(VARIANTS) if task.has_cot else tuple(v for v in VARIANTS if v not in COT_VARIANTS)


def render_split(task_name: str, variant: str, split: str, num_examples: int, seed: int = 0, *,
                 max_exemplars: int = DEFAULT_MAX_EXEMPLARS, exemplar_pool: int = DEFAULT_EXEMPLAR_POOL,
                 fits: Callable[[str], bool] | None = None) -> list[dict]:
    """Renders `generate_split(task_name, split, num_examples, seed)` in `variant`, deterministically by seed.

    Each record: inputs, targets, task_name, template_id, template_type (the variant name), plus the raw answer.
    Few-shot variants take 1..max_exemplars exemplars from the first `exemplar_pool` train examples (never the
    query itself), chosen by a seeded rng; while `fits(inputs)` is False, one exemplar fewer is used (down to one).
    """
    task = collection.get_generated_task(task_name)
    if variant not in task_variants(task_name):
        raise ValueError(f"Variant '{variant}' does not exist for generated task '{task_name}'; "
                         f"its variants are {task_variants(task_name)}.")
    template_type, cot = VARIANTS[variant]
    family = "cot" if cot else task.family
    examples = collection.generate_split(task_name, split, num_examples, seed)
    few_shot = template_type.startswith("fs_")
    pool = collection.generate_split(task_name, "train", exemplar_pool, seed) if few_shot else []
    out = []
    for i, ex in enumerate(examples):
        ex_seed = collection.derive_seed("render", seed, task_name, variant, split, i)
        exemplars: list = []
        if few_shot:
            rng = random.Random(ex_seed)
            candidates = [e for e in rng.sample(pool, min(len(pool), max_exemplars + 1)) if e is not ex
                          and e["question"] != ex["question"]]
            exemplars = candidates[:rng.randint(1, max_exemplars)]
        while True:
            rendered = templates.format_example(ex, family=family, template_type=template_type, seed=ex_seed,
                                                exemplars=exemplars, cot=cot)
            if fits is None or len(exemplars) <= 1 or fits(rendered["inputs"]):
                break
            exemplars = exemplars[:-1]
        out.append({"inputs": rendered["inputs"], "targets": rendered["targets"], "task_name": task_name,
                    "template_id": rendered["template_id"], "template_type": variant, "answer": ex["answer"]})
    return out


CORPUS_EXAMPLES_PER_VARIANT = 100


def vocabulary_corpus(seed: int = 0, examples_per_variant: int = CORPUS_EXAMPLES_PER_VARIANT) -> list[str]:
    """Rendered train text (inputs and targets) of every generated task in every variant: what the default
    SentencePiece vocabulary is trained on (flan_mix.data.vocab)."""
    lines = []
    for name in collection.GENERATED_TASKS:
        for variant in task_variants(name):
            for rec in render_split(name, variant, "train", examples_per_variant, seed):
                lines.append(rec["inputs"])
                lines.append(rec["targets"])
    return lines
