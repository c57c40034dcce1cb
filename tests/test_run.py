"""End to end through run.py's gin entries: resume equals an uninterrupted run; bad input fails
with a message that says what and how to fix."""
import json
import os
import subprocess
import sys

import gin
import jax
import numpy as np
import pytest

from flan_mix import launcher
from flan_mix.train import loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A very small model and data set: the point is the plumbing, not the learning.
SMALL = [
    "T5Config.emb_dim = 32", "T5Config.num_heads = 2", "T5Config.head_dim = 16", "T5Config.mlp_dim = 64",
    "T5Config.num_encoder_layers = 1", "T5Config.num_decoder_layers = 1",
    "TASK_FEATURE_LENGTHS = {'inputs': 128, 'targets': 32}", "BATCH_SIZE = 4",
    "register_generated_tasks.num_train = 40", "register_generated_tasks.num_validation = 10",
    "train.log_every_steps = 1", "Checkpointer.save_every_steps = 3",
]


def configure(model_dir, *bindings):
    gin.clear_config()
    launcher.parse_gin([launcher.DEFAULT_GIN], SMALL + [f"MODEL_DIR = '{model_dir}'", *bindings])


def losses(model_dir):
    with open(os.path.join(model_dir, "metrics.jsonl")) as f:
        return {r["step"]: r["train/loss"] for r in map(json.loads, f)}


def restored_params(model_dir):
    from flan_mix.infer.loading import load_model
    return load_model(model_dir).params


def test_resume_matches_uninterrupted_run(tmp_path):
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    configure(straight, "TRAIN_STEPS = 6")
    loop.train()
    configure(resumed, "TRAIN_STEPS = 3")
    loop.train()
    configure(resumed, "TRAIN_STEPS = 6")  # a new process would do the same: restore, go on
    loop.train()
    a, b = losses(straight), losses(resumed)
    assert sorted(a) == list(range(1, 7)) and sorted(b) == list(range(1, 7))
    np.testing.assert_allclose([b[s] for s in range(1, 7)], [a[s] for s in range(1, 7)], rtol=1e-6)
    configure(straight)
    for x, y in zip(jax.tree_util.tree_leaves(restored_params(straight)),
                    jax.tree_util.tree_leaves(restored_params(resumed))):
        np.testing.assert_array_equal(x, y)
    assert os.path.exists(os.path.join(resumed, "config.gin"))


def test_model_dir_with_another_models_checkpoint(tmp_path):
    model_dir = str(tmp_path / "run")
    configure(model_dir, "TRAIN_STEPS = 3")
    loop.train()
    configure(model_dir, "TRAIN_STEPS = 6", "T5Config.emb_dim = 64")
    with pytest.raises(ValueError, match=r"does not fit the model(.|\n)*Fix: point MODEL_DIR at a fresh directory"):
        loop.train()


def test_unknown_task_name_suggests_close_matches(tmp_path):
    configure(str(tmp_path), "TRAIN_STEPS = 1", "MIXTURE_OR_TASK_NAME = 'gen_sort_word_zs_opt'")
    with pytest.raises(ValueError, match=r"(?s)gen_sort_word_zs_opt.*gen_sort_words_zs_opt.*python run.py inspect"):
        loop.train()


def _run_cli(*args):
    return subprocess.run([sys.executable, "run.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_cli_rejects_a_binding_to_a_missing_parameter():
    proc = _run_cli("train", "--gin.train.num_stepz=5")
    assert proc.returncode == 2
    assert "num_stepz" in proc.stderr and "bad gin configuration" in proc.stderr


def test_cli_rejects_unknown_command_and_flags():
    proc = _run_cli("trian")
    assert proc.returncode == 2 and "unknown command 'trian'" in proc.stderr
    proc = _run_cli("infer", "--taks=x")
    assert proc.returncode == 2 and "--taks" in proc.stderr and "--task" in proc.stderr
