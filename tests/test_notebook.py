"""examples/explore_mixture.ipynb runs as a real notebook (a Jupyter kernel, cell by cell) without an error."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook test needs nbformat (pip install nbformat)")
nbclient = pytest.importorskip("nbclient", reason="the notebook test needs nbclient (pip install nbclient)")
pytest.importorskip("ipykernel", reason="the notebook test needs a Python kernel (pip install ipykernel)")
pytest.importorskip("matplotlib", reason="the notebook plots with matplotlib (pip install -e .[plot])")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "examples" / "explore_mixture.ipynb"
COT_DIR = REPO.parent / "shared" / "data" / "flan" / "cot"


def test_explore_mixture_notebook_runs(tmp_path, monkeypatch):
    # The kernel is a fresh process started in tmp_path: it finds flan_mix through PYTHONPATH, as it would
    # after `pip install -e .`, and writes its plot there.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails

    text = "\n".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                     for out in cell.get("outputs", []))
    assert "seqio tasks from 1830 catalog tasks" in text
    assert "flan2022_submix" in text
    if COT_DIR.is_dir():
        assert "===== flan2022_cot_gsm8k_fs_opt [train] #1" in text
    else:
        assert "reads the CoT TSVs, which are not here" in text
    assert (tmp_path / "flan2022_composition.png").stat().st_size > 0
