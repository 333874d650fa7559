"""examples/plan_4k_to_32k.ipynb: executed in a fresh Jupyter kernel (nbclient).

Its own asserts are the checks of the walkthrough; here we also require that
every figure reaches the reader as an ``image/png`` output, that the committed
file carries its outputs (so it reads on a code host) and that its cells are
what tools/make_notebook.py generates.
"""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
NOTEBOOK = os.path.join(ROOT, "examples", "plan_4k_to_32k.ipynb")
GENERATOR = os.path.join(ROOT, "tools", "make_notebook.py")


def load():
    with open(NOTEBOOK, encoding="utf-8") as f:
        return json.load(f)


def code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def pngs(cell):
    return [o for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]


def test_committed_notebook_is_valid_and_carries_its_outputs():
    nb = load()
    assert nb["nbformat"] == 4 and nb["nbformat_minor"] >= 4
    assert nb["metadata"]["kernelspec"]["language"] == "python"
    ids = [c["id"] for c in nb["cells"]]
    assert len(set(ids)) == len(ids)
    cells = code_cells(nb)
    assert len(cells) >= 8
    # executed top to bottom, with no error output
    assert [c["execution_count"] for c in cells] == list(range(1, len(cells) + 1))
    assert not [o for c in cells for o in c["outputs"] if o["output_type"] == "error"]
    plots = [c for c in cells if "plot" in c.get("metadata", {}).get("tags", [])]
    assert plots and all(pngs(c) for c in plots), "a plot cell has no image/png output"
    nbformat = pytest.importorskip("nbformat")
    nbformat.validate(nbformat.reads(json.dumps(nb), as_version=4))


def test_notebook_matches_its_generator():
    res = subprocess.run([sys.executable, GENERATOR, "--check"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


def test_notebook_runs_in_a_fresh_kernel_and_displays_its_figures():
    pytest.importorskip("matplotlib")
    pytest.importorskip("ipykernel")
    pytest.importorskip("nbclient")
    sys.path.insert(0, os.path.dirname(GENERATOR))
    try:
        import make_notebook
    finally:
        sys.path.pop(0)
    nb = make_notebook.executed(make_notebook.notebook(), timeout=300)   # raises on any cell error
    cells = code_cells(nb)
    assert all(c["execution_count"] for c in cells)
    plots = [c for c in cells if "plot" in c.get("metadata", {}).get("tags", [])]
    assert len(plots) == 2
    for cell in plots:
        images = pngs(cell)
        assert len(images) == 1, cell["outputs"]
        png = images[0]["data"]["image/png"]
        assert len(png) > 10_000               # base64 of a real plot, not an empty canvas
    text = "".join("".join(o["text"]) for c in cells for o in c["outputs"] if o["output_type"] == "stream")
    assert "critical" in text and "max relative change" in text
