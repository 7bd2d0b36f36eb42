"""notebooks/gold_tour.ipynb runs top to bottom on a small warehouse, so it never rots.

The kernel is this interpreter (the virtualenv's python), declared in a kernelspec written
to a temporary directory: no user-level kernel, Jupyter or IPython profile is involved.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

from medallion_platform_tests.reports import make_warehouse

NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "gold_tour.ipynb"
KERNEL = "medallion-test-python"


def kernel_manager(tmp_path: Path) -> AsyncKernelManager:
    kernels = tmp_path / "jupyter" / "kernels"
    (kernels / KERNEL).mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "medallion test kernel",
        "language": "python",
    }
    (kernels / KERNEL / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(kernels)], ensure_native_kernel=False)
    return AsyncKernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)


def outputs(cell) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            parts.append(output["text"])
        elif "data" in output:
            parts.append(output["data"].get("text/plain", ""))
    return "\n".join(parts)


def test_notebook_is_stored_without_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert "from medallion_platform import analytics" in code[0].source


@pytest.mark.parametrize("ml", [True, False], ids=["with_scores", "without_scores"])
def test_notebook_runs_on_a_small_warehouse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ml: bool
) -> None:
    home = tmp_path / "home"
    make_warehouse(home / "warehouse.duckdb", "tiny", ml=ml)
    monkeypatch.setenv("MEDALLION_HOME", str(home))
    for var in ("JUPYTER_RUNTIME_DIR", "JUPYTER_DATA_DIR", "IPYTHONDIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell("import sys\nprint(sys.executable)"))

    client = NotebookClient(
        notebook,
        km=kernel_manager(tmp_path),
        timeout=60,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell

    cells = [c for c in notebook.cells if c.cell_type == "code"]
    errors = [o for c in cells for o in c.outputs if o["output_type"] == "error"]
    assert errors == []
    text = "\n".join(outputs(c) for c in cells)
    assert f"warehouse: {home / 'warehouse.duckdb'}" in text
    assert "gold.marketing_roas_daily" in text
    assert "1,414.50" in text  # USD net revenue, formatted
    assert "social" in text and "0.50" in text  # ROAS by channel
    assert outputs(cells[-1]).strip() == sys.executable  # the kernel is this virtualenv
    if ml:
        assert "rule and model agree on 100.0% of 3 scored customers" in text
    else:
        assert "ml.churn_scores is not built yet" in text
