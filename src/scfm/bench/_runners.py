"""Benchmark runners: compute baselines, score every method in the same run, return tidy tables."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from ._baselines import harmony, hvg_pca, obs_categories, scvi_latent
from ._metrics import scib_table

BASELINES = {"hvg_pca": "X_hvg_pca", "harmony": "X_harmony", "scvi": "X_scvi"}
AGGREGATES = ("Total", "Bio conservation", "Batch correction")


def integration(
    adata: AnnData,
    batch_key: str,
    label_key: str,
    *,
    methods: Sequence[str] = ("hvg_pca", "harmony", "scvi"),
    embeddings: Mapping[str, str] | None = None,
    layer: str | None = None,
    use_raw: bool = False,
    scvi_kwargs: Mapping | None = None,
    seed: int = 0,
    n_jobs: int = 1,
) -> pd.DataFrame:
    """Score integrations with scib-metrics' ``Benchmarker``, baselines computed in the same run.

    Parameters
    ----------
    adata
        Cells x genes with ``obs[batch_key]`` and ``obs[label_key]``.
    batch_key, label_key
        Batch and cell-type columns of ``adata.obs``.
    methods
        Baselines to compute, from ``"hvg_pca"``, ``"harmony"``, ``"scvi"``. They are written to
        ``adata.obsm["X_hvg_pca"]``, ``["X_harmony"]`` and ``["X_scvi"]``; when the run fails, those slots are left
        as they were.
    embeddings
        Further methods to score, ``{name: obsm key}`` (e.g. ``{"scfm": "X_scfm_integrated"}``).
    layer, use_raw
        Matrix the baselines read (scVI needs counts).
    scvi_kwargs
        Passed to :func:`~scfm.bench.scvi_latent` (e.g. ``{"max_epochs": 200, "round_counts": True}``).
    seed
        Seed of every baseline.
    n_jobs
        Jobs of the neighbour search in scib-metrics.

    Returns
    -------
    Tidy table with columns ``method``, ``metric``, ``metric_type`` (``"Bio conservation"``,
    ``"Batch correction"``, ``"Aggregate score"``, or ``"Time"`` for a baseline's ``seconds``) and ``value``
    (scib-metrics' unscaled scores).
    """
    unknown = sorted(set(methods) - set(BASELINES))
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; choose from {sorted(BASELINES)}")
    obs_categories(adata, batch_key, "batch_key", min_categories=2)
    obs_categories(adata, label_key, "label_key", min_categories=2)
    embeddings = dict(embeddings or {})
    missing = {name: key for name, key in embeddings.items() if key not in adata.obsm}
    if missing:
        raise KeyError(f"embeddings {missing} are not in adata.obsm (keys: {list(adata.obsm.keys())})")
    if not methods and not embeddings:
        raise ValueError("nothing to score: give methods and/or embeddings")
    written = [BASELINES[method] for method in methods]
    previous = {key: adata.obsm[key] for key in written if key in adata.obsm}
    try:
        seconds = {}
        for method in methods:
            start = time.perf_counter()
            if method == "hvg_pca":
                hvg_pca(adata, layer=layer, use_raw=use_raw, seed=seed)
            elif method == "harmony":
                harmony(adata, batch_key, layer=layer, use_raw=use_raw, seed=seed)
            else:
                scvi_latent(adata, batch_key, layer=layer, use_raw=use_raw, seed=seed, **dict(scvi_kwargs or {}))
            seconds[method] = time.perf_counter() - start
        embeddings = {**{method: BASELINES[method] for method in methods}, **embeddings}
        names = {key: name for name, key in embeddings.items()}
        pre_integrated = BASELINES["hvg_pca"] if "hvg_pca" in methods else next(iter(embeddings.values()))
        table = scib_table(
            adata,
            list(embeddings.values()),
            batch_key=batch_key,
            label_key=label_key,
            pre_integrated_key=pre_integrated,
            n_jobs=n_jobs,
        )
    except BaseException:  # a failed run leaves the baselines' obsm slots as they were
        for key in written:
            if key in previous:
                adata.obsm[key] = previous[key]
            elif key in adata.obsm:
                del adata.obsm[key]
        raise
    return tidy_scib_table(table, names, seconds)


def tidy_scib_table(table: pd.DataFrame, names: Mapping[str, str], seconds: Mapping[str, float]) -> pd.DataFrame:
    """scib-metrics' wide results (embeddings x metrics, plus a "Metric Type" row) as a tidy table."""
    types = table.loc["Metric Type"]
    rows = []
    for key in table.index.drop("Metric Type"):
        for metric in table.columns:
            rows.append(
                {
                    "method": names.get(key, key),
                    "metric": metric,
                    "metric_type": types[metric],
                    "value": float(table.loc[key, metric]),
                }
            )
    for method, value in seconds.items():
        rows.append({"method": method, "metric": "seconds", "metric_type": "Time", "value": float(value)})
    return pd.DataFrame(rows)


def annotation(adata: AnnData, label_key: str, predictions: Mapping[str, str]) -> pd.DataFrame:
    """Accuracy, macro-F1 and per-class F1 of predicted labels against ``adata.obs[label_key]``.

    Parameters
    ----------
    adata
        Query cells with the true labels and one ``obs`` column per method's prediction.
    label_key
        ``adata.obs`` column of the true labels.
    predictions
        ``{method name: obs column}``. Predicted labels outside the true label set (e.g. ``"unknown"``)
        count as errors; macro-F1 averages over the true classes.

    Returns
    -------
    Tidy table with columns ``method``, ``metric`` (``"accuracy"``, ``"macro_f1"``, ``"f1[<class>]"``,
    ``"unassigned_fraction"``) and ``value``.
    """
    from sklearn.metrics import accuracy_score, f1_score

    truth = obs_categories(adata, label_key, "label_key").to_numpy()
    classes = np.unique(truth)
    rows = []
    for method, column in predictions.items():
        predicted = obs_categories(adata, column, f"predictions[{method!r}]").to_numpy()
        per_class = f1_score(truth, predicted, labels=classes, average=None, zero_division=0)
        rows.append({"method": method, "metric": "accuracy", "value": float(accuracy_score(truth, predicted))})
        rows.append({"method": method, "metric": "macro_f1", "value": float(per_class.mean())})
        rows.append(
            {"method": method, "metric": "unassigned_fraction", "value": float(np.mean(~np.isin(predicted, classes)))}
        )
        rows.extend(
            {"method": method, "metric": f"f1[{label}]", "value": float(score)}
            for label, score in zip(classes, per_class, strict=True)
        )
    return pd.DataFrame(rows)
