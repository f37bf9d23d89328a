"""Access to an AnnData expression matrix by row blocks, never densifying the whole matrix."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData


@dataclass(frozen=True)
class ExpressionSource:
    """The matrix an operation reads, with the gene table that describes its columns.

    Attributes
    ----------
    matrix
        Dense array, scipy sparse matrix, or an anndata backed dataset (``adata.X`` of a file opened with
        ``backed="r"``).
    var
        The ``var`` table of the matrix's columns (``adata.raw.var`` when reading ``adata.raw``).
    label
        How the matrix is named in messages and provenance: ``"X"``, ``"layers['counts']"`` or ``"raw.X"``.
    """

    matrix: object
    var: pd.DataFrame
    label: str

    @property
    def n_obs(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def is_backed(self) -> bool:
        return not isinstance(self.matrix, np.ndarray | sp.spmatrix | sp.sparray)


def expression_source(adata: AnnData, *, layer: str | None = None, use_raw: bool = False) -> ExpressionSource:
    """Select ``adata.X``, a layer, or ``adata.raw.X`` with a clear error when it does not exist."""
    if layer is not None and use_raw:
        raise ValueError("pass either layer= or use_raw=True, not both")
    if use_raw:
        if adata.raw is None:
            raise ValueError("use_raw=True but adata.raw is None; pass layer= or store raw data in adata.raw")
        return ExpressionSource(adata.raw.X, adata.raw.var, "raw.X")
    if layer is not None:
        if layer not in adata.layers:
            available = ", ".join(repr(k) for k in adata.layers) or "none"
            raise KeyError(f"layer {layer!r} not found in adata.layers (available: {available})")
        return ExpressionSource(adata.layers[layer], adata.var, f"layers[{layer!r}]")
    if adata.X is None:
        raise ValueError("adata.X is None; pass layer= naming the expression matrix")
    return ExpressionSource(adata.X, adata.var, "X")


def read_rows(matrix: object, start: int, stop: int) -> sp.csr_matrix:
    """Rows ``start:stop`` of any supported matrix as a CSR matrix (float32 values)."""
    block = matrix[start:stop]
    if isinstance(block, np.ndarray | np.matrix):
        block = sp.csr_matrix(np.asarray(block))
    elif not sp.issparse(block):
        block = sp.csr_matrix(np.asarray(block))
    block = sp.csr_matrix(block)
    if block.dtype != np.float32:
        block = block.astype(np.float32)
    return block


def iter_row_blocks(matrix: object, block_size: int) -> Iterator[tuple[int, int, sp.csr_matrix]]:
    """Yield ``(start, stop, csr_block)`` over the rows of ``matrix`` in order."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    n_obs = int(matrix.shape[0])
    for start in range(0, n_obs, block_size):
        stop = min(start + block_size, n_obs)
        yield start, stop, read_rows(matrix, start, stop)
