"""Per-cell quantile binning of expression values (scGPT style) and per-cell seeds."""

from __future__ import annotations

import hashlib

import numpy as np


def quantile_bin_edges(values: np.ndarray, n_bins: int) -> np.ndarray:
    """Return the ``n_bins - 1`` quantile edges of one cell's expressed values.

    Parameters
    ----------
    values
        1-D array of the cell's expressed (non-zero) values.
    n_bins
        Number of bins including the zero bin.

    Returns
    -------
    ``np.quantile(values, np.linspace(0, 1, n_bins - 1))`` as float64.
    """
    if n_bins < 3:
        raise ValueError(f"n_bins must be at least 3, got {n_bins}")
    return np.quantile(np.asarray(values, dtype=np.float64), np.linspace(0, 1, n_bins - 1))


def bin_expressed(values: np.ndarray, n_bins: int, rng: np.random.Generator | None) -> np.ndarray:
    """Replace one cell's expressed values by per-cell quantile bins.

    Binning is done on the dense ranks of the values. A strictly monotone transform of a cell (e.g.
    ``normalize_total`` + ``log1p``) therefore gives exactly the same bins, and the bins equal those of
    binning the values themselves, as scGPT does.

    A value equal to one or more edges lies between its right-side digitisation ``r`` and left-side
    digitisation ``l`` (``r < l``). The bin is ``ceil(u * (r - l) + l)``, uniform over ``r + 1 .. l``.
    With ``rng`` this is scGPT's rule: ``u ~ U[0, 1)``, one draw per value (``len(values)`` draws, tied
    or not). With ``rng=None``, ``u = 0.5``: the median of that distribution, deterministic.

    Parameters
    ----------
    values
        1-D strictly positive values of one cell.
    n_bins
        Number of bins including the zero bin (scGPT default 51).
    rng
        Generator for tie-breaking, or ``None`` for the deterministic midpoint rule.

    Returns
    -------
    int64 bins in ``1 .. n_bins - 1``, non-decreasing in value.
    """
    if n_bins < 3:
        raise ValueError(f"n_bins must be at least 3, got {n_bins}")
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {values.shape}")
    return bin_ranks(dense_ranks(values), n_bins, rng)


def dense_ranks(values: np.ndarray) -> np.ndarray:
    """Return the dense rank (0 = smallest distinct value) of each value, as int64."""
    _, inverse = np.unique(values, return_inverse=True)
    return inverse.astype(np.int64).reshape(-1)


def bin_ranks(ranks: np.ndarray, n_bins: int, rng: np.random.Generator | None) -> np.ndarray:
    """Bin dense ranks as :func:`bin_expressed` bins the values they come from."""
    if ranks.size == 0:
        return np.zeros(0, dtype=np.int64)
    edges = quantile_bin_edges(ranks, n_bins)
    distinct = np.arange(ranks.max() + 1, dtype=np.float64)
    left = np.digitize(distinct, edges)[ranks]
    right = np.digitize(distinct, edges, right=True)[ranks]
    u = rng.random(ranks.size) if rng is not None else 0.5
    return np.ceil(u * (right - left) + left).astype(np.int64)


def cell_seed(gene_ids: np.ndarray, values: np.ndarray, seed: int) -> int:
    """Derive a stable 64-bit seed from a cell's content.

    Parameters
    ----------
    gene_ids
        Gene (token) ids of the cell's expressed genes.
    values
        Their values; hashed as little-endian float32.
    seed
        Global integer seed.

    Returns
    -------
    Unsigned 64-bit integer from blake2b; identical across processes, platforms and Python hash seeds.
    """
    gene_ids = np.ascontiguousarray(gene_ids, dtype="<i8")
    values = np.ascontiguousarray(values, dtype="<f4")
    h = hashlib.blake2b(digest_size=8, person=b"scfm-cell-seed")
    h.update(len(gene_ids).to_bytes(8, "little"))
    h.update(gene_ids.tobytes())
    h.update(values.tobytes())
    h.update(int(seed).to_bytes(16, "little", signed=True))
    return int.from_bytes(h.digest(), "little")
