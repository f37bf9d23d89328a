"""Sparse top-k gene graphs from gene embeddings or dense gene-gene scores (numpy/scipy only)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def _top_k_columns(scores: np.ndarray, top_k: int) -> np.ndarray:
    """Column indices of the ``top_k`` largest entries of each row, ties broken by the lower column index."""
    order = np.argsort(-scores, axis=1, kind="stable")
    return order[:, :top_k]


def top_k_graph(scores: np.ndarray, top_k: int) -> sp.csr_matrix:
    """Keep each row's ``top_k`` largest positive entries of a dense ``(n, n)`` score matrix (diagonal ignored).

    Returns a directed ``(n, n)`` float32 CSR matrix with at most ``top_k`` entries per row.
    """
    n = scores.shape[0]
    scores = np.array(scores, dtype=np.float32)
    np.fill_diagonal(scores, -np.inf)
    columns = _top_k_columns(scores, top_k)
    values = np.take_along_axis(scores, columns, 1)
    rows = np.repeat(np.arange(n), columns.shape[1])
    keep = (values > 0).ravel()
    graph = sp.csr_matrix((values.ravel()[keep], (rows[keep], columns.ravel()[keep])), shape=(n, n), dtype=np.float32)
    graph.sort_indices()
    return graph


def cosine_top_k_graph(embeddings: np.ndarray, top_k: int, chunk: int = 1024) -> sp.csr_matrix:
    """Symmetric graph of cosine similarities: each gene keeps its ``top_k`` most similar genes (positive only).

    The union of those edges is returned with its similarity in both directions, so a row holds at least its own
    (positive) ``top_k`` neighbours and possibly more; at most ``2 * top_k * n`` stored entries. Rows are compared
    ``chunk`` at a time: memory ``chunk * n`` floats, never ``n * n``.
    """
    embeddings = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    unit = embeddings / np.maximum(norms, 1e-12)
    n = unit.shape[0]
    parts = []
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        block = unit[start:stop] @ unit.T
        block[np.arange(stop - start), np.arange(start, stop)] = -np.inf
        columns = _top_k_columns(block, top_k)
        values = np.take_along_axis(block, columns, 1)
        rows = np.repeat(np.arange(start, stop), columns.shape[1])
        keep = (values > 0).ravel()
        parts.append((rows[keep], columns.ravel()[keep], values.ravel()[keep]))
    rows = np.concatenate([p[0] for p in parts])
    cols = np.concatenate([p[1] for p in parts])
    vals = np.concatenate([p[2] for p in parts])
    directed = sp.csr_matrix((vals, (rows, cols)), shape=(n, n), dtype=np.float64)
    graph = directed.maximum(directed.T).tocsr().astype(np.float32)
    graph.sort_indices()
    return graph


def embed_in_vars(graph: sp.csr_matrix, positions: np.ndarray, n_vars: int) -> sp.csr_matrix:
    """Place an ``(n, n)`` graph over the genes at ``positions`` into an ``(n_vars, n_vars)`` CSR matrix."""
    coo = graph.tocoo()
    positions = np.asarray(positions, dtype=np.int64)
    out = sp.csr_matrix((coo.data.astype(np.float32), (positions[coo.row], positions[coo.col])), shape=(n_vars, n_vars))
    out.sort_indices()
    return out
