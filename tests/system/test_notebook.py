"""The notebooks run top to bottom in a real Jupyter kernel (nbclient)."""

import nbformat
from nbclient import NotebookClient

from tests.conftest import ROOT


def execute(name: str):
    """Run notebooks/<name> in a fresh kernel; return (cells, the text of all outputs)."""
    path = ROOT / "notebooks" / name
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    text = "\n".join(
        out.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    return text, images


def test_quickstart_notebook_executes():
    text, images = execute("quickstart.ipynb")
    assert "max error vs exact" in text and "worker rank 1 failed" in text
    assert "identical after the restart: True" in text
    assert len(images) >= 2, "the heat2d field and the benchmark bars were drawn"


def test_postprocess_notebook_executes():
    """notebooks/postprocess.ipynb: a heat2d series opened with xarray, plotted, checked."""
    text, images = execute("postprocess.ipynb")
    assert "records: 13" in text and "last record == heat2d.h5: True" in text
    assert len(images) >= 2, "the histories and the map were drawn"
