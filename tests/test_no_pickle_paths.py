"""Nothing in the package can unpickle except the restricted unpickler: a scan of every
call (by AST, so comments and docstrings do not count)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "platform" / "affectlab"
ALLOWED = {PACKAGE / "data" / "safe_pickle.py"}
NEVER = {"pickle.load", "pickle.loads", "pickle.Unpickler", "pd.read_pickle", "pandas.read_pickle", "pd.read_hdf",
         "pandas.read_hdf", "pd.HDFStore", "pandas.HDFStore", "joblib.load", "dill.load", "dill.loads"}  # fmt: skip


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def _keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name and isinstance(kw.value, ast.Constant):
            return kw.value.value
    return None


def pickle_paths(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module in ("pickle", "dill", "joblib"):
            found += [f"{path.name}:{node.lineno}: from {node.module} import {a.name}" for a in node.names if "load" in a.name or a.name == "Unpickler"]
        if not isinstance(node, ast.Call):
            continue
        name, where = _name(node.func), f"{path.relative_to(path.parents[1])}:{node.lineno}"
        if name in NEVER:
            found.append(f"{where}: {name}")
        if name == "torch.load" and _keyword(node, "weights_only") is not True:
            found.append(f"{where}: torch.load without weights_only=True")
        if name in ("np.load", "numpy.load") and _keyword(node, "allow_pickle") not in (None, False):
            found.append(f"{where}: np.load(allow_pickle=True)")
    return found


def test_no_module_reaches_a_pickle_outside_the_restricted_unpickler():
    files = [p for p in PACKAGE.rglob("*.py") if p not in ALLOWED]
    assert len(files) > 40
    found = [hit for p in files for hit in pickle_paths(p)]
    assert not found, "\n".join(found)


def test_the_scan_finds_what_it_looks_for(tmp_path):
    bad = tmp_path / "probe.py"
    bad.write_text("import pickle, torch, numpy as np, pandas as pd\n"
                   "pickle.loads(b'')\ntorch.load('x')\nnp.load('x', allow_pickle=True)\npd.HDFStore('x')\n"
                   "torch.load('y', weights_only=True)\nnp.load('y')\n")  # fmt: skip
    assert len(pickle_paths(bad)) == 4
