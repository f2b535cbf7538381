"""notebooks/quickstart.ipynb runs top to bottom in a real Jupyter kernel (nbclient)."""

import nbformat
from nbclient import NotebookClient

from tests.conftest import ROOT


def test_quickstart_notebook_executes():
    path = ROOT / "notebooks" / "quickstart.ipynb"
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
    assert "max error vs exact" in text and "worker rank 1 failed" in text
    assert "identical after the restart: True" in text
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 2, "the heat2d field and the benchmark bars were drawn"


def test_postprocess_notebook_executes():
    """notebooks/postprocess.ipynb: a heat2d series opened with xarray, plotted, checked."""
    path = ROOT / "notebooks" / "postprocess.ipynb"
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()
    text = "\n".join(
        out.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )
    assert "records: 13" in text and "last record == heat2d.h5: True" in text
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 2, "the histories and the map were drawn"
