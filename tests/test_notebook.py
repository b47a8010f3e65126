"""notebooks/quickstart.ipynb: committed without outputs, and it runs top to bottom in a fresh kernel (nbclient)."""

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"
STRIP = REPO / "scripts" / "strip_notebook_outputs.py"


def tagged(notebook, tag):
    [cell] = [c for c in notebook.cells if tag in c.metadata.get("tags", [])]
    return cell


def text_of(cell):
    parts = []
    for output in cell.outputs:
        if output.output_type == "stream":
            parts.append(output.text)
        elif "data" in output:
            parts.append(output.data.get("text/plain", ""))
    return "\n".join(parts)


def test_committed_notebook_has_no_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert notebook.metadata.kernelspec.name == "python3"
    result = subprocess.run([sys.executable, str(STRIP), "--check", str(NOTEBOOK)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_strip_script_removes_outputs(tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    first = next(c for c in notebook.cells if c.cell_type == "code")
    first.outputs = [nbformat.v4.new_output("stream", name="stdout", text="hello\n")]
    first.execution_count = 3
    first.metadata["execution"] = {"iopub.status.busy": "2026-01-01T00:00:00Z"}
    dirty = tmp_path / "dirty.ipynb"
    nbformat.write(notebook, dirty)

    check = subprocess.run([sys.executable, str(STRIP), "--check", str(dirty)], capture_output=True, text=True)
    assert check.returncode == 1 and "dirty.ipynb" in check.stderr
    assert subprocess.run([sys.executable, str(STRIP), str(dirty)], capture_output=True).returncode == 0
    assert nbformat.read(dirty, as_version=4) == nbformat.read(NOTEBOOK, as_version=4)


@pytest.mark.slow
def test_notebook_runs_and_shows_titles_metrics_and_a_plot(tmp_path):
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # The kernel is this interpreter's ipykernel ('python3'); its Spark stays on loopback, with this Python.
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
           "PYSPARK_DRIVER_PYTHON": sys.executable, "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    client = NotebookClient(notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=env)  # raises CellExecutionError, with the cell and its traceback, on any error

    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]

    titles = text_of(tagged(notebook, "titles"))
    assert "last watched:" in titles and "item_cf" in titles and "dssm" in titles
    ranks = {line.split()[0] for line in titles.splitlines() if line.split() and line.split()[0].isdigit()}
    assert {str(rank) for rank in range(1, 11)} <= ranks  # ten ranked titles per model, none missing
    assert "NaN" not in titles and "None" not in titles

    metrics = text_of(tagged(notebook, "metrics"))
    for word in ("item_cf", "dssm", "recall", "ndcg", "coverage", "queries"):
        assert word in metrics
    images = [o for o in tagged(notebook, "plot").outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1 and len(images[0].data["image/png"]) > 1000
