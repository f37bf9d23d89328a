"""Generic expression handling.

Input-kind detection, value checks, per-cell normalisation, quantile binning and cell-seeded tie breaking. Each
family's tokenizer lives in its folder under ``scfm.models``.
"""

from ._binning import bin_expressed, bin_ranks, cell_seed, dense_ranks, quantile_bin_edges
from ._input import InputKind, check_values, detect_input_kind
from ._normalise import normalised_log_values

__all__ = [
    "InputKind",
    "bin_expressed",
    "bin_ranks",
    "cell_seed",
    "check_values",
    "dense_ranks",
    "detect_input_kind",
    "normalised_log_values",
    "quantile_bin_edges",
]
