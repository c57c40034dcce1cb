"""`python run.py curate export`: a registered seqio task or mixture -> instruction records (JSONL).

Each example becomes one record:
  instruction, input  inputs_pretokenized split at its first blank line ("\\n\\n"): the text before it is the
                      instruction, the rest the input ("" when there is no blank line). The split is chosen so
                      that records.prompt_text(record) gives back inputs_pretokenized exactly (the model reads
                      the same prompt it was trained on), whatever the template put first.
  output              targets_pretokenized
  id                  f"{task}:{index}", index counted in the task's split order (unshuffled), so a rerun gives
                      the same ids and resumes after the last record written
  task, ability       the seqio task, and its ability: the generated collection's task_info, the Flan catalog's
                      category (when the Flan 2022 collection is registered), else ""

A mixture exports each of its tasks in turn (sorted by name), each up to max_examples: a fixed, resumable
selection, not a sample by the mixture's rates (sample later with a curation stage if rates matter).
"""
from __future__ import annotations

import logging
import re
from typing import Iterator

import seqio
from tqdm.auto import tqdm

from flan_mix.curation.records import AppendOnlyWriter
from flan_mix.data import pipeline, registration
from flan_mix.data.flan import flan_tasks
from flan_mix.data.generated import seqio_tasks

logger = logging.getLogger(__name__)


def split_prompt(inputs: str) -> tuple[str, str]:
    """(instruction, input): the text before the first blank line and the text after it."""
    instruction, sep, rest = inputs.partition("\n\n")
    if not sep or not rest:
        return inputs, ""
    return instruction, rest


def ability_of(task: str) -> str:
    if task.startswith(seqio_tasks.PREFIX):
        try:
            return seqio_tasks.task_info(task)["ability"]
        except KeyError:
            return ""
    if task.startswith(flan_tasks.PREFIX):
        return flan_tasks.eval_group(task)["ability"]
    return ""


def task_names(name: str) -> list[str]:
    """The tasks behind a task or mixture name (raises with close matches for an unknown name)."""
    found = pipeline.get_task_or_mixture(name)
    if isinstance(found, seqio.Mixture):
        return sorted(t.name for t in found.tasks)
    return [name]


def _checked_split(task: str, split: str) -> None:
    splits = seqio.TaskRegistry.get(task).splits
    if split not in splits:
        raise ValueError(f"--split={split}: task '{task}' has no such split; its splits are {sorted(splits)}.")


def iter_task_records(task: str, split: str, max_examples: int | None) -> Iterator[dict]:
    ability = ability_of(task)
    # No feature lengths: the texts are exported whole; truncation is the model's business (ifd skips
    # answers its length limit would cut).
    for index, ex in enumerate(pipeline.get_eval_examples(task, split=split, max_examples=max_examples)):
        instruction, inp = split_prompt(ex["inputs_pretokenized"])
        yield {"id": f"{task}:{index}", "instruction": instruction, "input": inp,
               "output": ex["targets_pretokenized"], "task": task, "ability": ability}


def export(task: str, output: str, *, split: str = "train", max_examples: int | None = None) -> dict[str, int]:
    """Appends the records of `task` (a task or mixture) to `output`, skipping ids already there.

    Returns {"written": n, "already_done": m}.
    """
    names = task_names(task)
    for name in names:
        _checked_split(name, split)
    written = already = 0
    with AppendOnlyWriter(output) as writer:
        bar = tqdm(total=len(names) * max_examples if max_examples else None, desc="export", unit="rec",
                   dynamic_ncols=True)
        for name in names:
            for record in iter_task_records(name, split, max_examples):
                if record["id"] in writer.done:
                    already += 1
                else:
                    writer.write(record)
                    written += 1
                bar.update(1)
        bar.close()
    return {"written": written, "already_done": already}


def _positive_int(name: str, value: str | None) -> int | None:
    if value is None:
        return None
    if not re.fullmatch(r"\d+", value.strip()) or int(value) < 1:
        raise ValueError(f"--{name}={value}: expected a positive integer.")
    return int(value)


def export_command(task: str | None, output: str | None, split: str = "train",
                   max_examples: str | None = None) -> dict[str, int]:
    if not task or not output:
        raise ValueError("curate export needs --task=NAME (a task or mixture; list them with `python run.py "
                         "inspect`) and --output=FILE.jsonl.")
    limit = _positive_int("max_examples", max_examples)
    registration.register_all()
    counts = export(task, output, split=split, max_examples=limit)
    print(f"exported {task} ({split}): {counts['written']} records written, {counts['already_done']} already in "
          f"{output}")
    return counts
