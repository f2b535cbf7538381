"""The notebooks run top to bottom in a real Jupyter kernel (nbclient)."""

import nbformat
from nbclient import NotebookClient

from tests.conftest import ROOT


def execute(name: str, check: str | None = None):
    """Run notebooks/<name> in a fresh kernel; return (the text of all outputs, images, value).

    ``check``, if given, is an expression evaluated in a cell appended after the notebook's
    own; ``value`` is its ``execute_result`` (text/plain).  The display hook sends that reply
    itself, so it does not depend on the kernel's buffered stdout, which once (CI, ipykernel
    7.4) dropped a cell's ``print`` although the cell ran and its assertions passed.
    """
    path = ROOT / "notebooks" / name
    nb = nbformat.read(path, as_version=4)
    if check is not None:
        nb.cells.append(nbformat.v4.new_code_cell(check))
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
    value = None
    if check is not None:
        results = [o for o in nb.cells[-1].outputs if o.output_type == "execute_result"]
        value = results[0]["data"]["text/plain"] if results else None
    return text, images, value


def test_quickstart_notebook_executes():
    check = (
        "(float(np.max(np.abs(field - exact))) < 1e-12, failed_rank, faulty.ok, clean.ok,"
        " 'restart 1/1' in faulty.log, bool(np.array_equal(a, b)))"
    )
    _, images, value = execute("quickstart.ipynb", check)
    # heat2d matches the exact solution, worker rank 1's error came back as a WorkerError,
    # and the run that lost a rank restarted and wrote the same field as the clean run
    assert value == "(True, 1, True, True, True, True)"
    assert len(images) >= 2, "the heat2d field and the benchmark bars were drawn"


def test_postprocess_notebook_executes():
    """notebooks/postprocess.ipynb: a heat2d series opened with xarray, plotted, checked."""
    _, images, value = execute("postprocess.ipynb", "(int(ds.sizes['time']), bool(same))")
    assert value == "(13, True)", "13 records, and the last one equals heat2d.h5's field"
    assert len(images) >= 2, "the histories and the map were drawn"
