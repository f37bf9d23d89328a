"""Bar charts of the tidy tables returned by :func:`scfm.bench.integration` and :func:`scfm.bench.annotation`."""

from __future__ import annotations

import os
from collections.abc import Sequence

import pandas as pd

from ._figure import SaveArg, finish, legacy_path

INTEGRATION_SCORES = ("Total", "Bio conservation", "Batch correction")
ANNOTATION_SCORES = ("accuracy", "macro_f1")


def benchmark(
    results: pd.DataFrame,
    *,
    metrics: Sequence[str] | None = None,
    title: str | None = None,
    ax=None,
    show: bool | None = None,
    save: SaveArg = None,
    path: str | os.PathLike | None = None,
):
    """Compare methods on their scores, one group of bars per metric.

    A bar chart of the tidy table (scib-metrics' ``Benchmarker.plot_results_table`` draws a Benchmarker object,
    not a table, and has no annotation scores).

    Parameters
    ----------
    results
        A tidy table with columns ``method``, ``metric``, ``value`` (from :func:`scfm.bench.integration` or
        :func:`scfm.bench.annotation`).
    metrics
        Metrics to draw. Default: scib's Total, Bio conservation and Batch correction for an integration
        table, accuracy and macro-F1 for an annotation table.
    title
        Axes title.
    ax
        A matplotlib Axes to draw into (default: a new figure).
    show
        Show the figure; ``None`` follows ``sc.settings.autoshow``, as in scanpy.
    save
        As in scanpy: ``True`` or a suffix (``"_pancreas.pdf"``) writes to ``sc.settings.figdir``
        (``benchmark<suffix>``); a :class:`pathlib.Path` is the file itself.
    path
        Deprecated: ``save=pathlib.Path(path)``.

    Returns
    -------
    The matplotlib Axes, or ``None`` when the figure was shown.
    """
    import matplotlib.pyplot as plt

    save = legacy_path(save, path, "benchmark")
    missing = {"method", "metric", "value"} - set(results.columns)
    if missing:
        raise ValueError(
            f"results lack the columns {sorted(missing)}; pass a table from scfm.bench.integration/annotation"
        )
    if metrics is None:
        present = set(results["metric"])
        metrics = [m for m in (*INTEGRATION_SCORES, *ANNOTATION_SCORES) if m in present]
    unknown = sorted(set(metrics) - set(results["metric"]))
    if unknown:
        raise ValueError(f"metrics {unknown} are not in the results (metrics: {sorted(set(results['metric']))})")
    if not metrics:
        raise ValueError("no metric to draw; pass metrics=[...]")
    table = results[results["metric"].isin(metrics)].pivot_table(index="metric", columns="method", values="value")
    table = table.loc[list(metrics)]
    owns_figure = ax is None
    if owns_figure:
        _, ax = plt.subplots(figsize=(1.6 + 1.1 * len(metrics) * max(1, table.shape[1]) / 2.5, 3.6))
    table.plot.bar(ax=ax, rot=0, width=0.8)
    ax.set_xlabel("")
    ax.set_ylabel("score")
    ax.set_ylim(0, max(1.0, float(table.max().max()) * 1.05))
    ax.legend(title="method", bbox_to_anchor=(1.01, 1), loc="upper left", frameon=False)
    if title:
        ax.set_title(title)
    return finish(ax.figure, ax, writekey="benchmark", save=save, show=show, owns_figure=owns_figure)
