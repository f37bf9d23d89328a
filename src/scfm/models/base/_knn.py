"""kNN label transfer in an embedding: exact for small inputs, an approximate index (pynndescent) for large ones."""

from __future__ import annotations

import numpy as np

#: Above this many query x reference pairs the neighbours come from a pynndescent index (built once, queried in
#: ``O(n_query log n_reference)``) instead of the exact blocked search (``O(n_query x n_reference)``). pynndescent
#: is compiled by numba on first use (tens of seconds), which the exact search beats below ~1e9 pairs.
EXACT_MAX_PAIRS = 1_000_000_000
_BLOCK = 2048


def knn_label_probabilities(
    reference: np.ndarray,
    codes: np.ndarray,
    query: np.ndarray,
    n_classes: int,
    *,
    n_neighbors: int = 15,
    seed: int = 0,
    approximate: bool | None = None,
) -> np.ndarray:
    """Fraction of each query cell's ``n_neighbors`` nearest reference cells (cosine) in each class.

    Parameters
    ----------
    reference, query
        ``(n, d)`` embeddings (rows are L2-normalised here; cosine distance = Euclidean distance of unit rows).
    codes
        Class index in ``[0, n_classes)`` of every reference cell.
    n_classes
        Number of classes (columns of the result).
    n_neighbors
        Voters per query cell (at most the reference size).
    seed
        Seed of the approximate index (results are deterministic given it).
    approximate
        ``None``: exact up to :data:`EXACT_MAX_PAIRS` query x reference pairs, approximate above;
        ``True``/``False`` force one.

    Returns
    -------
    ``(n_query, n_classes)`` float32 vote fractions (rows sum to 1).
    """
    codes = np.asarray(codes, dtype=np.int64)
    if reference.shape[0] != codes.shape[0]:
        raise ValueError(f"{reference.shape[0]} reference cells but {codes.shape[0]} labels")
    if reference.shape[0] == 0:
        raise ValueError("the reference has no cells to vote")
    k = min(int(n_neighbors), reference.shape[0])
    reference, query = _unit_rows(reference), _unit_rows(query)
    if approximate is None:
        approximate = reference.shape[0] * query.shape[0] > EXACT_MAX_PAIRS and reference.shape[0] > k
    neighbours = _approximate(reference, query, k, seed) if approximate else _exact(reference, query, k)
    votes = codes[neighbours]
    probabilities = np.zeros((query.shape[0], n_classes), dtype=np.float32)
    np.add.at(probabilities, (np.repeat(np.arange(query.shape[0]), k), votes.ravel()), 1.0 / k)
    return probabilities


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _exact(reference: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    """Return the ``k`` most similar reference rows of every query row, by query blocks (ties: lower index first)."""
    out = np.empty((query.shape[0], k), dtype=np.int64)
    for start in range(0, query.shape[0], _BLOCK):
        similarity = query[start : start + _BLOCK] @ reference.T
        if k < reference.shape[0]:
            top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        else:
            top = np.broadcast_to(np.arange(reference.shape[0]), similarity.shape).copy()
        values = np.take_along_axis(similarity, top, axis=1)
        order = np.lexsort((top, -values), axis=1)
        out[start : start + _BLOCK] = np.take_along_axis(top, order, axis=1)
    return out


def _approximate(reference: np.ndarray, query: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Neighbours from a pynndescent index on the unit rows (Euclidean: the cosine order), seeded."""
    from pynndescent import NNDescent

    graph_k = min(max(k, 30), reference.shape[0] - 1)
    index = NNDescent(reference, metric="euclidean", n_neighbors=graph_k, random_state=seed, n_jobs=1)
    neighbours, _ = index.query(query, k=k, epsilon=0.2)  # a wider search than the default 0.1: better recall
    return np.asarray(neighbours, dtype=np.int64)
