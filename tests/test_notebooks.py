"""The notebooks: committed clean, thin, and executable headless under the smoke config.

Parameter contract. Every notebook ``notebooks/NN_*.ipynb`` starts with a code cell tagged
``parameters`` (papermill) that assigns at least:

* ``CONFIG``: config overlay name (``configs/<CONFIG>.yaml``); the test passes ``"smoke"``.
* ``OVERRIDES``: dict of dotted config keys -> values (the test moves the image cache to tmp).
* ``DATA_DIR``: dataset folder, manifest or splits CSV; ``None`` = the phantoms in ``data/phantoms``.
  The test generates a smoke-sized phantom set in a temporary folder and passes it.
* ``RUN_DIR``: run folder; 03 trains into it, later notebooks read the run from it.
* ``FIGURES_DIR``: where figures are written.
* ``SEED``: the one seed.

Figures a notebook shows are also saved to ``FIGURES_DIR`` as ``NN_<name>.png`` (NN = the notebook's
number). All notebooks of one test session share these folders and run in file-name order, so each can use
what the earlier ones produced (01 writes the splits beside the phantoms, 03 trains on them into
``RUN_DIR``). Notebooks added later (04, 05, ...) are picked up by the glob and get the same parameters.
"""

from __future__ import annotations

import ast
import sys
import time
from pathlib import Path

import nbformat
import pytest

from covidxray import paths

NOTEBOOKS = sorted(paths.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
CONTRACT = ("CONFIG", "OVERRIDES", "DATA_DIR", "RUN_DIR", "FIGURES_DIR", "SEED")
MAX_FUNCTION_LINES = 5


def _python(source: str) -> str:
    """Cell source with IPython magics turned into plain Python, so that ``ast`` can parse it."""
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(source)


def test_notebooks_exist():
    names = [nb.name for nb in NOTEBOOKS]
    assert names[:3] == ["01_data_exploration.ipynb", "02_augmentation.ipynb", "03_transfer_learning.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_clean_with_parameters(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name}: strip the outputs"
    assert "parameters" in code[0].metadata.get("tags", []), f"{path.name}: tag the first code cell parameters"
    tree = ast.parse(code[0].source)
    assigned = {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets}
    assert set(CONTRACT) <= assigned, f"{path.name}: parameters cell lacks {sorted(set(CONTRACT) - assigned)}"
    assert nb.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_reads_the_parameters(path, caplog):
    import papermill as pm

    found = pm.inspect_notebook(str(path))
    assert set(CONTRACT) <= set(found), f"{path.name}: papermill sees only {sorted(found)}"
    assert "Unable to parse" not in caplog.text  # e.g. a '=' in a parameter's comment


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_are_thin(path):
    """Logic lives in the package: no notebook function is longer than a few lines."""
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        for node in ast.walk(ast.parse(_python(cell.source))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                length = node.end_lineno - node.lineno + 1
                assert length <= MAX_FUNCTION_LINES, f"{path.name} code cell {i}: {node.name} has {length} lines"


def test_thin_check_catches_long_functions():
    source = "%matplotlib inline\ndef f(x):\n" + "    x += 1\n" * 6 + "    return x\n"
    (node,) = [n for n in ast.walk(ast.parse(_python(source))) if isinstance(n, ast.FunctionDef)]
    assert node.end_lineno - node.lineno + 1 == 8


@pytest.mark.notebook
def test_kernel_runs_this_python(tmp_path):
    """papermill's "python3" kernel is this interpreter (the venv), not some other Python on the PATH."""
    import papermill as pm

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import sys, covidxray\nprint(sys.executable)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "kernel.ipynb")
    out = pm.execute_notebook(tmp_path / "kernel.ipynb", tmp_path / "out.ipynb", kernel_name="python3",
                              progress_bar=False, cwd=str(tmp_path))
    assert out.cells[0].outputs[0]["text"].strip() == sys.executable


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict:
    """Folders shared by every notebook of the session, with a smoke-sized phantom dataset."""
    from covidxray.config import load_config
    from covidxray.data.phantoms import generate_dataset

    root = tmp_path_factory.mktemp("notebooks")
    ph = load_config(["smoke"]).phantoms
    generate_dataset(root / "phantoms", n_per_class=ph.n_per_class, size=ph.size, seed=42)
    return {"root": root, "CONFIG": "smoke", "OVERRIDES": {"data.cache_dir": str(root / "cache")},
            "DATA_DIR": str(root / "phantoms"), "RUN_DIR": str(root / "run"), "FIGURES_DIR": str(root / "figures"),
            "SEED": 42}


@pytest.mark.slow
@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_under_smoke(path, workspace):
    import papermill as pm

    params = {k: v for k, v in workspace.items() if k in CONTRACT}
    out = workspace["root"] / "executed" / path.name
    out.parent.mkdir(exist_ok=True)
    t0 = time.monotonic()
    nb = pm.execute_notebook(path, out, parameters=params, kernel_name="python3", cwd=str(paths.NOTEBOOKS),
                             progress_bar=False)
    print(f"{path.name}: {time.monotonic() - t0:.1f} s")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    shown = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert shown >= 1, f"{path.name} shows no figure"
    assert list(Path(workspace["FIGURES_DIR"]).glob(f"{path.name[:2]}_*.png")), "figures are saved too"
