"""Tokenisation of expression profiles: scGPT-style value binning and deterministic per-cell token selection."""

from ._binning import bin_expressed, cell_seed, quantile_bin_edges
from ._input import InputKind, check_values, detect_input_kind
from ._scgpt import BinningConfig, CellTokens, tokenize_cell, tokenize_csr

__all__ = [
    "BinningConfig",
    "CellTokens",
    "InputKind",
    "bin_expressed",
    "cell_seed",
    "check_values",
    "detect_input_kind",
    "quantile_bin_edges",
    "tokenize_cell",
    "tokenize_csr",
]
