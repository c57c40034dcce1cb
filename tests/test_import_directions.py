"""The architecture in one table: which rooms of flan_mix may import which. Read from the source
with ast (every import, including the ones inside functions), so an arrow pointing the wrong way
fails here before it spreads."""
import ast
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "flan_mix")

# room -> the flan_mix rooms it must never import. The arrows run one way:
#   launcher -> curation/evaluation -> infer -> runtime/models/kernels;  train -> runtime/models;
#   everything may use data, except models, kernels and runtime.
FORBIDDEN = {
    "kernels": {"data", "models", "runtime", "train", "infer", "evaluation", "curation", "analysis", "launcher"},
    "models": {"data", "runtime", "train", "infer", "evaluation", "curation", "analysis", "launcher"},
    "runtime": {"data", "train", "infer", "evaluation", "curation", "analysis", "launcher"},
    "train": {"infer", "evaluation", "curation", "analysis", "launcher"},
    "infer": {"evaluation", "train", "curation", "analysis", "launcher"},
    "evaluation": {"train", "curation", "analysis", "launcher"},
    "data": {"models", "kernels", "runtime", "train", "infer", "evaluation", "curation", "analysis", "launcher"},
}
# Third-party packages a room must not import: the GPU machines have no TensorFlow or seqio.
FORBIDDEN_LIBRARIES = {room: {"tensorflow", "seqio", "tensorflow_datasets"}
                       for room in ("kernels", "models", "runtime", "train", "infer", "evaluation")}
# Inside data/, the shared machinery never imports a collection; registration and inspect_cli are
# the drivers that wire the collections together.
DATA_COLLECTIONS = {"generated", "flan"}
DATA_DRIVERS = {"registration", "inspect_cli"}


def _modules():
    for root, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                yield os.path.relpath(path, PACKAGE)[:-3].split(os.sep), path


def _imports(path):
    """Every module name imported by the file (absolute form), wherever the import statement sits."""
    tree = ast.parse(open(path).read(), filename=path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssertionError(f"{path}:{node.lineno}: relative import; flan_mix uses absolute imports")
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def _violations():
    found = []
    for parts, path in _modules():
        room = parts[0]
        for lineno, name in _imports(path):
            where = f"flan_mix/{'/'.join(parts)}.py:{lineno} imports {name}"
            top = name.split(".")
            if top[0] == "flan_mix" and len(top) > 1:
                target = top[1]
                if target in FORBIDDEN.get(room, ()):
                    found.append(f"{where}: {room} must not import {target}")
                if (room == "data" and len(parts) == 2 and parts[1] not in DATA_DRIVERS
                        and len(top) > 2 and top[2] in DATA_COLLECTIONS):
                    found.append(f"{where}: shared data code must not import a collection")
            elif top[0] in FORBIDDEN_LIBRARIES.get(room, ()):
                found.append(f"{where}: {room} must not import {top[0]} (TensorFlow lives in flan_mix/data)")
    return found


def test_import_directions():
    violations = _violations()
    assert not violations, "imports against the architecture:\n" + "\n".join(violations)


def test_the_check_sees_imports_inside_functions(tmp_path, monkeypatch):
    """The checker itself: an import hidden in a function body is caught."""
    room = tmp_path / "flan_mix" / "models"
    room.mkdir(parents=True)
    (room / "bad.py").write_text("def f():\n    from flan_mix.data import pipeline\n    import seqio\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", str(tmp_path / "flan_mix"))
    found = _violations()
    assert any("models must not import data" in v for v in found), found
    assert any("must not import seqio" in v for v in found), found


@pytest.mark.parametrize("limit", [600])
def test_no_module_over_the_line_limit(limit):
    """Small modules. The Pallas kernel is the exception: its forward, two backward kernels and
    custom_vjp share index maps and masks that read best side by side in one file."""
    exempt = {os.path.join("kernels", "flash_attention.py")}
    long = []
    for parts, path in _modules():
        n = sum(1 for _ in open(path))
        if n > limit and os.path.join(*parts) + ".py" not in exempt:
            long.append(f"flan_mix/{'/'.join(parts)}.py: {n} lines")
    assert not long, f"modules over {limit} lines:\n" + "\n".join(long)
