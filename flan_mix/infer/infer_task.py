"""`python run.py infer`: decode a task's examples with the latest checkpoint into JSONL.

The output is append-only and resumable: rows already in the file are kept and decoding goes
on from the first missing example.
"""
from __future__ import annotations

import json
import os
from typing import Mapping

import gin

from flan_mix.evaluation import generation
from flan_mix.train import checkpoints, loop, optim, partitioning
from flan_mix.train.trainer import Trainer


def _rows_done(path: str) -> int:
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return sum(1 for line in f if line.strip())


@gin.configurable
def infer(task: str, output: str | None = None, split: str = "validation", *,
          model_dir: str = gin.REQUIRED, task_feature_lengths: Mapping[str, int] = gin.REQUIRED,
          batch_size: int = 64, max_examples: int | None = None, temperature: float = 0.0,
          checkpoint_step: int | None = None) -> str:
    """Writes {index, inputs, target, prediction, task} rows; returns the output path."""
    from flan_mix.data import pipeline, registration
    vocabulary = registration.register_all()
    registration.check_name(task)
    model = loop.build_model(vocabulary=vocabulary)
    mesh = partitioning.make_mesh()
    trainer = Trainer(model, optim.make_optimizer()[0], mesh, partitioning.logical_axis_rules())
    shapes = loop.batch_shapes(task_feature_lengths, batch_size)
    params = checkpoints.restore_params(loop.checkpoint_step_dir(model_dir, checkpoint_step),
                                        trainer.abstract_state(shapes)[0].params)
    output = output or os.path.join(model_dir, "infer", f"{task}.{split}.jsonl")
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    examples = pipeline.get_eval_examples(task, split=split, max_examples=max_examples,
                                          feature_length=task_feature_lengths["inputs"])
    done = _rows_done(output)
    todo = examples[done:]
    print(f"{task}/{split}: {len(examples)} examples, {done} already in {output}, decoding {len(todo)}")
    preds = generation.generate(model, params, [ex["inputs"] for ex in todo], vocabulary, mesh=mesh,
                                inputs_length=task_feature_lengths["inputs"],
                                max_decode_len=task_feature_lengths["targets"],
                                batch_size=batch_size, desc=task, temperature=temperature)
    with open(output, "a") as f:
        for i, (ex, pred) in enumerate(zip(todo, preds), start=done):
            f.write(json.dumps({"index": i, "task": task, "inputs": ex["inputs_pretokenized"],
                                "target": ex["targets_pretokenized"], "prediction": pred}) + "\n")
    return output
