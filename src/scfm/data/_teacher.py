"""Expression neighbour graphs used as a training target: each cell's nearest cells in HVG+PCA space, per group."""

from __future__ import annotations

import anndata as ad
import numpy as np
import scanpy as sc
import scipy.sparse as sp
from sklearn.neighbors import NearestNeighbors

from ._finetune import highly_variable_subset, log_normalised


def _group_pcs(counts: sp.csr_matrix, n_top_genes: int, n_pcs: int) -> np.ndarray:
    """HVG+PCA of one group's cells: normalise to 10,000, log1p, top variable genes, unit variance, PCA.

    The matrix stays sparse: genes are scaled without centring and PCA centres implicitly.
    """
    log = sp.csr_matrix(log_normalised(ad.AnnData(counts)).X)
    detected = np.flatnonzero(np.asarray((log > 0).sum(0)).ravel() >= 3)
    variable = highly_variable_subset(ad.AnnData(log[:, detected]), n_top_genes)
    x = sp.csr_matrix(variable.X, dtype=np.float64)
    mean = np.asarray(x.mean(0)).ravel()
    std = np.sqrt(np.maximum(np.asarray(x.multiply(x).mean(0)).ravel() - mean**2, 0.0))
    x = sp.csr_matrix(x @ sp.diags(1.0 / np.where(std > 0, std, 1.0)))
    n_comps = min(n_pcs, x.shape[0] - 1, x.shape[1] - 1)
    return sc.pp.pca(x, n_comps=n_comps, svd_solver="arpack", random_state=0)


def expression_neighbours(
    counts: sp.csr_matrix,
    groups: np.ndarray | None = None,
    *,
    n_neighbors: int = 15,
    n_top_genes: int = 2000,
    n_pcs: int = 50,
) -> np.ndarray:
    """Each cell's nearest cells of its own group in that group's HVG+PCA space (scanpy's default pipeline).

    Parameters
    ----------
    counts
        Cells x genes, non-negative: counts (normalised to 10,000 per cell, then log1p) or log-normalised values
        (used as they are).
    groups
        One label per cell (e.g. the dataset): neighbours are searched within a group, in PCs computed on that group
        alone, so they never cross a batch effect. ``None``: all cells form one group.
    n_neighbors
        Neighbours per cell (the cell itself excluded).
    n_top_genes, n_pcs
        Highly variable genes (Seurat flavour, per group) and principal components of the embedding space.

    Returns
    -------
    ``(n_cells, n_neighbors)`` row indices into ``counts``, nearest first. Cells of a group with ``n_neighbors`` or
    fewer cells have ``-1`` rows (no neighbours to learn from).
    """
    counts = sp.csr_matrix(counts)
    if counts.nnz and counts.data.min() < 0:
        raise ValueError("expression_neighbours needs non-negative expression values (counts); got negative values")
    if n_neighbors < 1:
        raise ValueError(f"n_neighbors must be >= 1, got {n_neighbors}")
    labels = np.zeros(counts.shape[0], dtype=np.int64) if groups is None else np.asarray(groups)
    if labels.shape != (counts.shape[0],):
        raise ValueError(f"groups has {labels.size} entries for {counts.shape[0]} cells")
    out = np.full((counts.shape[0], n_neighbors), -1, dtype=np.int64)
    for group in np.unique(labels):
        rows = np.flatnonzero(labels == group)
        if len(rows) <= n_neighbors + 1:
            continue
        pcs = _group_pcs(counts[rows], n_top_genes, n_pcs)
        _, nearest = NearestNeighbors(n_neighbors=n_neighbors + 1).fit(pcs).kneighbors(pcs)
        # a cell is its own nearest point unless it has exact duplicates: drop it wherever it appears
        for i, row_nearest in enumerate(nearest):
            others = row_nearest[row_nearest != i][:n_neighbors]
            out[rows[i]] = rows[others]
    return out
