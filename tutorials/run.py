"""Re-execute the tutorial notebooks in place, so that their committed outputs are current.

    .venv/bin/python tutorials/run.py                   # every notebook in tutorials/
    .venv/bin/python tutorials/run.py gene_networks     # one notebook (name with or without .ipynb)

Each notebook runs top to bottom in a fresh ``python3`` kernel of the interpreter running this script, with
``tutorials/`` as the working directory; a failing cell stops the run with the cell's error and leaves the file as
it was. Needs the ``tutorials`` extra (nbclient, nbformat, ipykernel).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent


def notebooks(names: list[str]) -> list[Path]:
    """Return the notebooks to run: those named (``.ipynb`` optional), or every notebook in ``tutorials/``."""
    if not names:
        return sorted(HERE.glob("*.ipynb"))
    paths = [HERE / (name if name.endswith(".ipynb") else f"{name}.ipynb") for name in names]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        available = [p.stem for p in sorted(HERE.glob("*.ipynb"))]
        sys.exit(f"no such notebook in {HERE}: {missing}; available: {available}")
    return paths


def execute(path: Path, timeout: int) -> float:
    """Run ``path`` in place; returns the seconds it took."""
    notebook = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    client = NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}
    )
    client.execute()
    seconds = time.perf_counter() - start
    nbformat.write(notebook, path)
    return seconds


def main() -> None:
    """Run the notebooks named on the command line (default: all)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="notebooks to run (default: all)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds allowed per cell")
    args = parser.parse_args()
    for path in notebooks(args.names):
        print(f"{path.name}: running", flush=True)
        print(f"{path.name}: done in {execute(path, args.timeout):.0f} s", flush=True)


if __name__ == "__main__":
    main()
