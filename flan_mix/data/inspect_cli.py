"""`python run.py inspect`: list the registered tasks and mixtures, or render examples of one."""
from __future__ import annotations

import seqio

from flan_mix.data import pipeline, registration


def list_registry() -> None:
    mixtures = sorted(seqio.MixtureRegistry.names())
    tasks = sorted(seqio.TaskRegistry.names())
    print(f"{len(mixtures)} mixtures:")
    for name in mixtures:
        mix = seqio.MixtureRegistry.get(name)
        print(f"  {name}  ({len(mix.tasks)} tasks)")
    print(f"{len(tasks)} tasks:")
    for name in tasks:
        task = seqio.TaskRegistry.get(name)
        print(f"  {name}  splits={list(task.splits)}")
    print("Render examples with: python run.py inspect --task=NAME --num_examples=3 [--split=train]")


def show_examples(name: str, split: str, num_examples: int) -> None:
    registration.check_name(name)
    if name in seqio.MixtureRegistry.names():
        raise ValueError(f"'{name}' is a mixture; inspect one of its tasks: "
                         + ", ".join(t.name for t in seqio.MixtureRegistry.get(name).tasks[:8]))
    examples = pipeline.get_eval_examples(name, split=split, max_examples=num_examples)
    for i, ex in enumerate(examples):
        print(f"===== {name} [{split}] #{i}  template={ex.get('template_id', '?')} "
              f"type={ex.get('template_type', '?')}  tokens: inputs={len(ex['inputs'])} "
              f"targets={len(ex['targets'])}")
        print(ex["inputs_pretokenized"])
        print("----- target:")
        print(ex["targets_pretokenized"])


def main(task: str | None = None, split: str = "train", num_examples: int = 3) -> None:
    registration.register_all()
    if task is None:
        list_registry()
    else:
        show_examples(task, split, num_examples)
