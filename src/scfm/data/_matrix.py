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


def read_rows(matrix: object, index: slice | np.ndarray) -> sp.csr_matrix:
    """Rows of any supported matrix as CSR (float32), for a slice or an array of row positions (any order).

    Backed datasets are read with ascending positions (what h5py needs); the rows come back in the
    order of ``index``.
    """
    if isinstance(index, slice):
        block = matrix[index]
    else:
        index = np.asarray(index, dtype=np.int64)
        order = np.argsort(index, kind="stable")
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        block = sp.csr_matrix(_as_sparse(matrix[index[order]]))[inverse]
    block = sp.csr_matrix(_as_sparse(block), dtype=np.float32)
    if not block.has_canonical_format:  # duplicate (row, column) entries mean their sum; never mutate the user's
        block = block.copy()
        block.sum_duplicates()
    return block


def _as_sparse(block: object) -> sp.spmatrix | sp.sparray:
    if sp.issparse(block):
        if np.iscomplexobj(block.data):
            raise TypeError("the expression matrix is complex-valued; pass real expression values")
        return block
    values = np.asarray(block)
    if np.iscomplexobj(values):
        raise TypeError("the expression matrix is complex-valued; pass real expression values")
    if values.dtype.kind not in "fiub":  # object or other dtypes: convert the block, with a clear error if it fails
        try:
            values = values.astype(np.float32)
        except (TypeError, ValueError) as err:
            raise TypeError(f"the expression matrix has dtype {values.dtype} that is not numeric ({err})") from err
    elif values.dtype == np.float16:  # scipy's sparse matrices do not hold float16
        values = values.astype(np.float32)
    return sp.csr_matrix(values)


def iter_row_blocks(
    matrix: object, block_size: int, rows: np.ndarray | None = None
) -> Iterator[tuple[int, int, sp.csr_matrix]]:
    """Yield ``(start, stop, csr_block)`` over the rows of ``matrix`` (or over ``rows`` of it), in order.

    ``start:stop`` are positions in the sequence read: rows of the matrix, or entries of ``rows``.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    n_rows = int(matrix.shape[0]) if rows is None else len(rows)
    for start in range(0, n_rows, block_size):
        stop = min(start + block_size, n_rows)
        index = slice(start, stop) if rows is None else np.asarray(rows[start:stop])
        yield start, stop, read_rows(matrix, index)
