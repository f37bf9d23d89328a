"""Per-cell library-size normalisation on a log scale, whatever the input kind."""

from __future__ import annotations

import numpy as np

from ._input import InputKind


def normalised_log_values(row_values: np.ndarray, input_kind: InputKind, target_sum: float) -> np.ndarray:
    """``log1p`` of one cell's values scaled to sum to ``target_sum`` over all of its genes.

    ``log1p`` input is ``expm1``-ed first, so counts and their ``normalize_total`` + ``log1p`` give the same
    values whatever target the user normalised to.
    """
    values = np.asarray(row_values, dtype=np.float64)
    if input_kind == "log1p":
        values = np.expm1(values)
    total = values.sum()
    if total <= 0:
        return np.zeros_like(values)
    return np.log1p(values * (target_sum / total))
