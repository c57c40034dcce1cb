"""benchmarks/data_pipeline.py end to end in a quick mode, with the 32k vocabulary: what the result file must hold
(the vocabulary it used, the CoT sources present and absent, load, date, versions). Timings are not asserted."""
from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys

import pytest

from flan_mix.data.flan import flan_tasks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(not flan_tasks.DEFAULT_COT_DIR.is_dir(),
                    reason=f"the real CoT TSVs are not in {flan_tasks.DEFAULT_COT_DIR}")
def test_quick_run_with_spm32k_records_the_vocabulary_and_the_sources(tmp_path):
    out = tmp_path / "result.json"
    env = dict(os.environ, FLAN_MIX_CACHE=str(tmp_path / "cache"))  # trains the 32k model here (~5 s)
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "data_pipeline.py"), "--vocab", "spm32k",
         "--num_examples", "300", "--warmup_examples", "100", "--rss_examples", "0", "--scale_examples", "0",
         "--out", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    result = json.loads(out.read_text())
    v = result["vocabulary"]
    assert v["choice"] == "spm32k" and v["model_type"] == "UNIGRAM"
    assert (v["pieces"], v["extra_ids"], v["vocab_size"]) == (32000, 100, 32100)
    assert v["ids"] == {"pad": 0, "eos": 1, "unk": 2, "bos": -1}
    assert v["path"].startswith(str(tmp_path / "cache"))
    present = sorted(f for f in os.listdir(flan_tasks.DEFAULT_COT_DIR) if f.endswith("_train.tsv"))
    cs = result["cot_sources"]
    assert sorted(cs["present"]) == present
    assert cs["total_rows"] == sum(s["rows"] for s in cs["present"].values())
    assert len(cs["present"]) + len(cs["absent"]) == 9  # the catalog's 9 CoT sources
    for label in ("ours", "seqio_peer"):
        r = result[label]
        assert r["examples"] >= 300 and 0 < r["packing_efficiency"]["targets"] <= 1
    env_rec = result["environment"]
    assert datetime.datetime.fromisoformat(env_rec["date"]).utcoffset() == datetime.timedelta(0)
    assert len(env_rec["load_average_at_start"]) == 3 and len(env_rec["load_average_at_end"]) == 3
    assert env_rec["versions"]["sentencepiece"] and "--vocab" in env_rec["argv"]
    assert f"vocabulary: spm32k (32,100 ids, UNIGRAM)" in proc.stdout
