"""The curation commands end to end, as a user runs them (real `python run.py` processes): export a task, then
score it with IFD on a small model, with pre-experience, and select the top 5."""
import json
import os

import jax
import pytest

from flan_mix import launcher
from flan_mix.curation.records import read_records
from tests.test_cli_commands import SMALL, ok, run_cli

TASK = "gen_sort_words_zs_opt"


def _base_checkpoint(model_dir):
    """A randomly initialised model of SMALL's gin config, saved as MODEL_DIR/checkpoints/0: what load_model
    restores, without paying for a training run (the stage only needs a checkpoint)."""
    from flan_mix.data import registration
    from flan_mix.models.build import build_model
    from flan_mix.runtime import checkpoints
    launcher.parse_gin(["gin/runs/default.gin"], [b.split("--gin.", 1)[1].replace("=", " = ", 1) for b in SMALL])
    model = build_model(vocab_size=registration.register_all().vocab_size)
    checkpoints.save_params(model_dir, model.init_params(jax.random.PRNGKey(0)))


# Two launcher processes and a train-step compile: about 1 CPU-minute, 2-3 minutes on the shared 2 cores.
@pytest.mark.slow
def test_export_then_ifd_with_pre_experience(tmp_path):
    records, run = str(tmp_path / "recs.jsonl"), str(tmp_path / "run")
    _base_checkpoint(run)
    proc = ok(run_cli("curate", "export", f"--task={TASK}", f"--output={records}", "--max_examples=16", *SMALL,
                      timeout=300))
    assert f"exported {TASK} (train): 16 records written, 0 already in" in proc.stdout
    with open(records, "a") as f:  # a record an earlier stage gave up on
        f.write(json.dumps({"id": "broken", "instruction": "x", "input": "", "output": "y", "error": "timeout"}) + "\n")

    scored, selected = str(tmp_path / "scored.jsonl"), str(tmp_path / "selected.jsonl")
    proc = ok(run_cli("curate", "ifd", f"--input={records}", f"--output={scored}", f"--selected_output={selected}",
                      "--select_top=5", "--batch_size=8", "--pre_experience=true", *SMALL, f"--gin.MODEL_DIR='{run}'",
                      "--gin.ifd_pre_experience.num_clusters=3", "--gin.ifd_pre_experience.per_cluster=2",
                      "--gin.ifd_pre_experience.train_steps=2", timeout=300))
    # Up to 2 per cluster, trained for 2 steps from checkpoint 0 into MODEL_DIR/pre_experience.
    picked = read_records(os.path.join(run, "pre_experience", "pre_experience.jsonl"))
    assert 3 <= len(picked) <= 6 and f"pre-experience: {len(picked)} records from 3 clusters" in proc.stdout
    assert os.path.isdir(os.path.join(run, "pre_experience", "checkpoints", "2"))
    out = read_records(scored)
    assert [r["id"] for r in out] == [r["id"] for r in read_records(records)]
    assert out[-1]["skipped"] == "not scored: the input record carries 'error' (timeout)"
    assert all({"loss_conditioned", "loss_direct", "ifd"} <= set(r) for r in out[:-1] if not r.get("skipped"))
    best = sorted((r for r in out if not r.get("skipped") and r["ifd"] <= 1), key=lambda r: -r["ifd"])[:5]
    assert [r["id"] for r in read_records(selected)] == [r["id"] for r in best]
    assert f"selected {len(best)} records (top 5 by IFD, IFD <= 1)" in proc.stdout
