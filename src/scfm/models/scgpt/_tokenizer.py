"""scGPT-style tokenisation: ``<cls>`` + expressed in-vocabulary genes with binned values."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from scfm.tokenize._binning import bin_ranks, cell_seed, dense_ranks
from scfm.tokenize._input import check_values


@dataclass(frozen=True)
class BinningConfig:
    """Settings of scGPT value binning and token selection.

    Attributes
    ----------
    n_bins
        Number of value bins including the zero bin.
    max_len
        Tokens per cell including ``<cls>``.
    pad_value
        Value carried by ``<cls>`` and padding.
    mask_value
        Value of masked positions (used by training code).
    seed
        Global seed mixed into every per-cell seed.
    """

    n_bins: int = 51
    max_len: int = 1200
    pad_value: float = -2.0
    mask_value: float = -1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_bins < 3:
            raise ValueError(f"n_bins must be at least 3, got {self.n_bins}")
        if self.max_len < 2:
            raise ValueError(f"max_len must be at least 2 (<cls> and one gene), got {self.max_len}")


@dataclass
class CellTokens:
    """Tokens of one cell.

    Attributes
    ----------
    gene_ids
        int64; ``<cls>`` id first, then the selected genes' token ids in input (column) order.
    values
        float32; ``pad_value`` first, then the genes' bins.
    n_expressed
        Number of expressed in-vocabulary genes before subsampling.
    """

    gene_ids: np.ndarray
    values: np.ndarray
    n_expressed: int


def tokenize_cell(gene_ids: np.ndarray, values: np.ndarray, *, cls_id: int, config: BinningConfig) -> CellTokens:
    """Tokenise one cell.

    All expressed genes are binned, then ``max_len - 1`` of them are kept at random (without replacement,
    in input order) and ``<cls>`` is prepended. Randomness comes from a generator seeded by
    :func:`cell_seed` over the gene ids and the dense ranks of the values, so a cell always gives the same
    tokens, and raw counts and any per-cell monotone transform of them (``log1p(normalize_total)``) give
    the same tokens too.

    Parameters
    ----------
    gene_ids
        Token ids of the cell's expressed in-vocabulary genes.
    values
        Their strictly positive values.
    cls_id
        Token id of ``<cls>``.
    config
        Binning settings.

    Returns
    -------
    The cell's tokens.
    """
    gene_ids = np.asarray(gene_ids, dtype=np.int64)
    values = np.asarray(values)
    if gene_ids.shape != values.shape or gene_ids.ndim != 1:
        raise ValueError(f"gene_ids and values must be 1-D of equal length, got {gene_ids.shape} and {values.shape}")
    n = values.size
    if n == 0:
        return CellTokens(
            np.array([cls_id], dtype=np.int64), np.array([config.pad_value], dtype=np.float32), n_expressed=0
        )
    if values.min() <= 0:
        raise ValueError("values must be strictly positive (only expressed genes are tokenised)")

    ranks = dense_ranks(values)
    rng = np.random.default_rng(cell_seed(gene_ids, ranks, config.seed))
    bins = bin_ranks(ranks, config.n_bins, rng)
    n_keep = config.max_len - 1
    if n > n_keep:
        keep = np.sort(rng.choice(n, size=n_keep, replace=False))
        gene_ids, bins = gene_ids[keep], bins[keep]

    out_ids = np.empty(bins.size + 1, dtype=np.int64)
    out_ids[0] = cls_id
    out_ids[1:] = gene_ids
    out_values = np.empty(bins.size + 1, dtype=np.float32)
    out_values[0] = config.pad_value
    out_values[1:] = bins
    return CellTokens(out_ids, out_values, n_expressed=n)


def tokenize_csr(
    block: sp.csr_matrix | np.ndarray,
    column_token_ids: np.ndarray,
    *,
    cls_id: int,
    config: BinningConfig,
) -> list[CellTokens]:
    """Tokenise every cell (row) of a block.

    Parameters
    ----------
    block
        Cells x all genes of the AnnData; CSR (or any sparse matrix, converted to CSR, never densified) or a
        dense array. Explicitly stored zeros are not expressed.
    column_token_ids
        Token id per column; ``-1`` marks genes outside the vocabulary, which are dropped.
    cls_id
        Token id of ``<cls>``.
    config
        Binning settings.

    Returns
    -------
    One :class:`CellTokens` per row, in row order; genes in ascending column order.
    """
    column_token_ids = np.asarray(column_token_ids, dtype=np.int64)
    if block.ndim != 2 or block.shape[1] != column_token_ids.size:
        raise ValueError(
            f"block has shape {block.shape} but column_token_ids has {column_token_ids.size} entries (one per column)"
        )
    in_vocab = column_token_ids >= 0

    if not sp.issparse(block):
        block = np.asarray(block)
        check_values(block)
        out = []
        for row in block:
            cols = np.flatnonzero((row > 0) & in_vocab)
            out.append(tokenize_cell(column_token_ids[cols], row[cols], cls_id=cls_id, config=config))
        return out

    block = sp.csr_matrix(block) if not isinstance(block, sp.csr_matrix | sp.csr_array) else block
    check_values(block.data)
    if not block.has_canonical_format:
        block = block.copy()
        block.sum_duplicates()
    keep = (block.data > 0) & in_vocab[block.indices]
    ids = column_token_ids[block.indices[keep]]
    data = block.data[keep]
    ptr = np.concatenate([[0], np.cumsum(keep)])[block.indptr]
    return [
        tokenize_cell(ids[ptr[i] : ptr[i + 1]], data[ptr[i] : ptr[i + 1]], cls_id=cls_id, config=config)
        for i in range(block.shape[0])
    ]
