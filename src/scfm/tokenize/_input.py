"""Validation and detection of the kind of expression values a model receives."""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp

InputKind = Literal["counts", "log1p", "nonnegative"]

_LOG1P_MAX = 30.0


def _values_of(data: np.ndarray | sp.spmatrix | sp.sparray) -> np.ndarray:
    if sp.issparse(data):
        return np.asarray(data.data).ravel()
    return np.asarray(data).ravel()


def check_values(data: np.ndarray, *, where: str = "X") -> None:
    """Reject values that no single-cell foundation model can embed.

    Parameters
    ----------
    data
        The non-zero values of a block (e.g. ``csr.data``) or a dense block. A sparse matrix is also accepted.
    where
        Name of the matrix or layer, used in error messages.

    Raises
    ------
    ValueError
        If ``data`` contains NaN/inf or negative values.
    """
    values = _values_of(data)
    if np.iscomplexobj(values):
        raise TypeError(f"{where} is complex-valued; pass real expression values")
    if values.dtype.kind == "O":
        try:
            values = values.astype(np.float64)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{where} holds non-numeric objects ({err}); pass numeric expression values") from err
    if values.size == 0:
        return
    if values.dtype.kind == "f":
        n_bad = int(np.count_nonzero(~np.isfinite(values)))
        if n_bad:
            raise ValueError(f"{where} contains {n_bad} NaN/inf values; remove or impute them before embedding")
        n_huge = int(np.count_nonzero(np.abs(values) > np.finfo(np.float32).max)) if values.dtype.itemsize > 4 else 0
        if n_huge:
            raise ValueError(
                f"{where} contains {n_huge} values beyond the float32 range (max {float(np.abs(values).max()):g}); "
                "scfm computes in float32: pass counts or log-normalised expression"
            )
    if values.dtype.kind in "fi":
        vmin = values.min()
        if vmin < 0:
            raise ValueError(
                f"{where} contains negative values (min {float(vmin):g}); scfm needs raw counts or log-normalised "
                "expression, not scaled data (use adata.raw or a counts layer: layer='counts')"
            )


def detect_input_kind(data: np.ndarray) -> InputKind:
    """Guess whether values are raw counts, log1p-normalised or some other non-negative scale.

    Parameters
    ----------
    data
        Values from a sample of rows (dense block, sparse block or its ``.data``); zeros are ignored.

    Returns
    -------
    ``"counts"`` if all non-zero values are integers, ``"log1p"`` if the maximum is at most 30,
    ``"nonnegative"`` otherwise (e.g. TPM or CPM). An all-zero sample counts as ``"counts"``.
    """
    values = _values_of(data)
    values = values[values != 0]
    if values.dtype.kind in "iub" or values.size == 0:
        return "counts"
    if np.all(np.mod(values, 1) == 0):
        return "counts"
    if values.max() <= _LOG1P_MAX:
        return "log1p"
    return "nonnegative"
