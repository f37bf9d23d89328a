"""Every notebook in tutorials/ re-executes from a clean kernel (slow: minutes per notebook).

    .venv/bin/python -m pytest -m slow tests/test_tutorials.py

Each notebook is copied into a temporary folder and run there top to bottom in a fresh ``python3`` kernel, so the
committed file is never touched and nothing the notebook writes lands in the repository. A notebook that reads the
project's data files through ``scfm.datasets`` is skipped when no data folder is found (no ``$SCFM_DATA_DIR`` and no
``../shared/data``). Needs the ``tutorials`` extra.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
CELL_TIMEOUT_S = 1800

pytestmark = pytest.mark.slow


def _needs_data(notebook) -> bool:
    """Whether any code cell reads a data file through ``scfm.datasets``."""
    return any(c.cell_type == "code" and "scfm.datasets." in c.source for c in notebook.cells)


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 8, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes_from_a_clean_kernel(path, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from scfm import datasets

    notebook = nbformat.read(path, as_version=4)
    if _needs_data(notebook) and datasets.data_dir() is None:
        pytest.skip(f"{path.name} reads data files through scfm.datasets and no data folder was found")
    copy = tmp_path / path.name
    shutil.copy(path, copy)
    for cell in notebook.cells:  # a clean run: no outputs carried over
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    client = nbclient.NotebookClient(
        notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError naming the failing cell
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    nbformat.write(notebook, copy)  # the executed copy, for inspection when debugging (tmp_path)
