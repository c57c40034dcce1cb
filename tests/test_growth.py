"""DoIT ability growth end to end on tiny models: the sweep trains and evaluates every (size, volume) cell,
writes growth.csv and growth.png from the cells' own eval results, and a rerun recomputes nothing."""
import csv
import json
import os

import gin
import pytest

from flan_mix import launcher
from flan_mix.analysis import growth
from tests.helpers import reuse_compilations  # noqa: F401  (an autouse fixture)

TINY = [
    "TASK_FEATURE_LENGTHS = {'inputs': 128, 'targets': 16}", "BATCH_SIZE = 4",
    "register_generated_tasks.num_train = 40", "register_generated_tasks.num_validation = 6",
    "evaluate_generation.batch_size = 8", "evaluate_generation.max_examples_per_task = 6",
    "T5Config.num_encoder_layers = 1", "T5Config.num_decoder_layers = 1", "T5Config.num_heads = 2",
    "train.log_every_steps = 1",
    "doit_sweep.volumes = [1, 2, 4]", "doit_sweep.train_steps = 3",
    "doit_sweep.abilities = ['arithmetic', 'comparison']",
    "doit_sweep.sizes = {'xs': ['T5Config.emb_dim = 16', 'T5Config.head_dim = 8', 'T5Config.mlp_dim = 32'],"
    " 's': ['T5Config.emb_dim = 32', 'T5Config.head_dim = 16', 'T5Config.mlp_dim = 64']}",
]
CELLS = [(size, v) for size in ("xs", "s") for v in (1, 2, 4)]


def _configure():
    gin.clear_config()
    launcher.parse_gin([launcher.DEFAULT_GIN], TINY)


def _cell_mtimes(out):
    return {c: os.path.getmtime(os.path.join(out, "cells", growth.cell_name(*c), "result.json")) for c in CELLS}


def test_sweep_writes_csv_and_png_from_cell_results_and_resumes(tmp_path):
    out = str(tmp_path / "doit")
    _configure()
    rows = growth.doit_command(output_dir=out)

    with open(os.path.join(out, "growth.csv")) as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == list(growth.CSV_COLUMNS)
    assert {(r["size"], int(r["volume"]), r["ability"]) for r in table} == {
        (s, v, a) for s, v in CELLS for a in ("arithmetic", "comparison")}
    assert len(table) == len(rows) == 12

    # Each CSV figure is the cell's own evaluation: the mean over the ability's eval tasks of model_rank
    # (multiple choice) or model_em (free form), read back from the evaluator's eval_results.json.
    for r in table:
        cell = os.path.join(out, "cells", growth.cell_name(r["size"], int(r["volume"])))
        with open(os.path.join(cell, "eval_results.json")) as f:
            evaluated = json.load(f)
        evaluated = evaluated["rows"] if isinstance(evaluated, dict) else evaluated
        mine = [e for e in evaluated if e["ability"] == r["ability"] and not e["task"].startswith("MEAN")]
        assert mine
        expect = [(e["model_rank"], e["chance"]) if e["chance"] is not None else (e["model_em"], e["majority_em"])
                  for e in mine]
        assert float(r["score"]) == pytest.approx(sum(s for s, _ in expect) / len(expect))
        assert float(r["random"]) == pytest.approx(sum(x for _, x in expect) / len(expect))
        with open(os.path.join(cell, "result.json")) as f:
            result = json.load(f)
        assert result["train_examples"] == 2 * int(r["volume"])  # N examples of each of the two abilities

    # The training sets grow by adding examples: volume 2's set holds volume 1's, per ability.
    sets = {}
    for v in (1, 2, 4):
        with open(os.path.join(out, "data", f"volume_{v}.jsonl")) as f:
            sets[v] = [json.loads(line) for line in f]
    for ability in ("arithmetic", "comparison"):
        small = [e["inputs"] for e in sets[1] if e["ability"] == ability]
        big = [e["inputs"] for e in sets[4] if e["ability"] == ability]
        assert len(small) == 1 and len(big) == 4 and big[:1] == small

    with open(os.path.join(out, "growth.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    fig = growth.plot_growth(rows, str(tmp_path / "again.png"), ["xs", "s"])
    assert [ax.get_title() for ax in fig.axes] == ["arithmetic", "comparison"]  # one panel per ability
    assert all(ax.get_xscale() == "log" for ax in fig.axes)
    assert all(len(ax.get_lines()) == 3 for ax in fig.axes)  # two sizes and the dotted random line

    # Rerun: every cell is done, so nothing trains or evaluates again and the figures are the same.
    before = _cell_mtimes(out)
    _configure()
    assert growth.doit_command(output_dir=out) == rows
    assert _cell_mtimes(out) == before

    # A sweep killed after some cells resumes with the missing ones only.
    os.remove(os.path.join(out, "cells", "s_4", "result.json"))
    _configure()
    growth.doit_command(output_dir=out)
    after = _cell_mtimes(out)
    assert [c for c in CELLS if after[c] != before[c]] == [("s", 4)]


def test_bad_settings_name_the_binding(tmp_path):
    _configure()
    with pytest.raises(ValueError, match=r"doit_sweep.volumes"):
        growth.doit_sweep(volumes=[0, 4])
    from flan_mix.data import registration
    registration.register_all()
    with pytest.raises(ValueError, match=r"doit_sweep.abilities: \['telepathy'\]"):
        growth._ability_specs("gen_train_mixture", ["telepathy"])
    with pytest.raises(ValueError, match="--output_dir"):
        growth.doit_command(output_dir=None)
