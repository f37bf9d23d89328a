"""Printing helpers shared by the benchmark scripts (run as ``python benchmarks/<name>.py``)."""

from __future__ import annotations

from tabulate import tabulate


def table(rows: list[dict], columns: list[str]) -> str:
    """A GitHub-markdown table of ``columns`` of ``rows`` (a missing value prints empty), floats to 3 decimals."""
    return tabulate([{c: r.get(c) for c in columns} for r in rows], headers="keys", floatfmt=".3f", tablefmt="github")
