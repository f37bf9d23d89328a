"""Quality metrics for embeddings (scib-metrics where available)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData


def _labels(adata: AnnData, label_key: str) -> np.ndarray:
    if label_key not in adata.obs:
        raise KeyError(f"label_key={label_key!r} is not a column of adata.obs (columns: {list(adata.obs.columns)})")
    return adata.obs[label_key].astype(str).to_numpy()


def _representation(adata: AnnData, key: str) -> np.ndarray:
    if key not in adata.obsm:
        raise KeyError(f"{key!r} is not in adata.obsm (keys: {list(adata.obsm.keys())})")
    return np.asarray(adata.obsm[key], dtype=np.float32)


def label_silhouette(adata: AnnData, rep_key: str, label_key: str) -> float:
    """Return scib's label silhouette (average silhouette width of labels, rescaled to [0, 1]; higher is better)."""
    from scib_metrics import silhouette_label

    return float(silhouette_label(_representation(adata, rep_key), _labels(adata, label_key)))


def knn_accuracy(adata: AnnData, rep_key: str, label_key: str, *, n_neighbors: int = 15, n_folds: int = 5) -> float:
    """Cross-validated accuracy of a k-nearest-neighbour classifier of ``label_key`` on ``obsm[rep_key]``.

    Stratified ``n_folds``-fold split with a fixed seed; a simple, interpretable measure of how much
    label information an embedding carries (chance level = frequency of the largest class).
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    labels = _labels(adata, label_key)
    folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=0)
    classifier = KNeighborsClassifier(n_neighbors=n_neighbors)
    return float(cross_val_score(classifier, _representation(adata, rep_key), labels, cv=folds).mean())


def scib_table(
    adata: AnnData,
    rep_keys: list[str],
    *,
    batch_key: str,
    label_key: str,
    pre_integrated_key: str | None = None,
    n_jobs: int = 1,
    batch_metrics: bool = True,
) -> pd.DataFrame:
    """scib-metrics ``Benchmarker`` on several embeddings; returns its unscaled results table.

    Uses the default bio-conservation and batch-correction metric sets of scib-metrics 0.5. Rows are the
    embeddings (plus a "Metric Type" row); columns are the metrics and the aggregate scores.

    Parameters
    ----------
    pre_integrated_key
        Unintegrated embedding used by the PCR-comparison metric (default: the first of ``rep_keys``).
    batch_metrics
        ``False``: bio conservation only (for data with a single batch, where batch metrics are undefined).
    """
    from scib_metrics.benchmark import BatchCorrection, Benchmarker

    only_graph_connectivity = BatchCorrection(
        bras=False, ilisi_knn=False, kbet_per_label=False, graph_connectivity=True, pcr_comparison=False
    )

    for key in rep_keys:
        _representation(adata, key)
    _labels(adata, label_key)
    _labels(adata, batch_key)
    work = AnnData(obs=adata.obs[[batch_key, label_key]].copy())
    work.obs_names = adata.obs_names
    for key in rep_keys:
        work.obsm[key] = _representation(adata, key)
    pre_integrated_key = pre_integrated_key or rep_keys[0]
    work.obsm[pre_integrated_key] = _representation(adata, pre_integrated_key)
    benchmarker = Benchmarker(
        work,
        batch_key=batch_key,
        label_key=label_key,
        embedding_obsm_keys=rep_keys,
        pre_integrated_embedding_obsm_key=pre_integrated_key,
        n_jobs=n_jobs,
        progress_bar=False,
        **({} if batch_metrics else {"batch_correction_metrics": only_graph_connectivity}),
    )
    benchmarker.benchmark()
    results = benchmarker.get_results(min_max_scale=False)
    if not batch_metrics:  # scib-metrics needs one batch metric to build its table; drop it and the aggregates
        results = results.drop(columns=["Graph connectivity", "Batch correction", "Total"])
    return results
