"""Batches of tokenised cells: padding and length bucketing."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def length_bucketed_batches(lengths: np.ndarray, batch_size: int, max_tokens: int | None = None) -> list[np.ndarray]:
    """Group cell positions into batches of similar token length.

    Cells are sorted by length (longest first, ties by position), then cut into batches of at most
    ``batch_size`` cells and, when ``max_tokens`` is given, at most ``max_tokens`` padded tokens.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = np.lexsort((np.arange(len(lengths)), -np.asarray(lengths)))
    batches: list[np.ndarray] = []
    current: list[int] = []
    for position in order:
        longest = lengths[current[0]] if current else lengths[position]
        too_many_tokens = max_tokens is not None and (len(current) + 1) * longest > max_tokens
        if current and (len(current) == batch_size or too_many_tokens):
            batches.append(np.asarray(current))
            current = []
        current.append(int(position))
    if current:
        batches.append(np.asarray(current))
    return batches


def expressed_gene_counts(matrix: sp.csr_matrix, column_token_ids: np.ndarray) -> np.ndarray:
    """Expressed (value > 0) in-vocabulary genes per row, without tokenising (for length bucketing)."""
    keep = (column_token_ids[matrix.indices] >= 0) & (matrix.data > 0)
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    return np.bincount(rows[keep], minlength=matrix.shape[0])
