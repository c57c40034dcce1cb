"""`python run.py infer`: decode a task's examples with a checkpoint into JSONL.

The output is append-only and resumable: rows already in the file are kept and decoding goes
on from the first missing example.
"""
from __future__ import annotations

import json
import os

import gin

from flan_mix.infer import decoding
from flan_mix.infer.loading import load_model
from flan_mix.runtime.run_config import run_config


def _rows_done(path: str) -> int:
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return sum(1 for line in f if line.strip())


@gin.configurable
def infer(task: str, output: str | None = None, split: str = "validation", *,
          batch_size: int = 64, max_examples: int | None = None, temperature: float = 0.0,
          top_k: int = 0, top_p: float = 1.0, num_beams: int = 1, length_penalty: float = 0.0,
          checkpoint_step: int | None = None) -> str:
    """Writes {index, task, inputs, target, prediction} rows; returns the output path."""
    from flan_mix.data import pipeline, registration
    run = run_config()
    vocabulary = registration.register_all()
    registration.check_name(task)  # before the checkpoint: a typo should not cost a restore
    loaded = load_model(run.model_dir, checkpoint_step, vocabulary)
    lengths = run.task_feature_lengths
    output = output or os.path.join(run.model_dir, "infer", f"{task}.{split}.jsonl")
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    examples = pipeline.get_eval_examples(task, split=split, max_examples=max_examples,
                                          feature_length=lengths["inputs"])
    done = _rows_done(output)
    todo = examples[done:]
    print(f"{task}/{split}: {len(examples)} examples, {done} already in {output}, decoding {len(todo)}")
    preds = decoding.generate(loaded.model, loaded.params, [ex["inputs"] for ex in todo], loaded.vocabulary,
                              mesh=loaded.mesh, inputs_length=lengths["inputs"],
                              max_decode_len=lengths["targets"], batch_size=batch_size, desc=task,
                              temperature=temperature, top_k=top_k, top_p=top_p, num_beams=num_beams,
                              length_penalty=length_penalty)
    with open(output, "a") as f:
        for i, (ex, pred) in enumerate(zip(todo, preds), start=done):
            f.write(json.dumps({"index": i, "task": task, "inputs": ex["inputs_pretokenized"],
                                "target": ex["targets_pretokenized"], "prediction": pred}) + "\n")
    return output
