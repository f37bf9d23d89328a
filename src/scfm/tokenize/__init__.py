"""Tokenisation of expression profiles: scGPT-style value binning with deterministic per-cell token selection,
and tGPT-style gene ranking."""

from ._binning import bin_expressed, cell_seed, quantile_bin_edges
from ._input import InputKind, check_values, detect_input_kind
from ._rank import rank_genes, rank_tokenize_csr, rank_tokens
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
    "rank_genes",
    "rank_tokenize_csr",
    "rank_tokens",
    "tokenize_cell",
    "tokenize_csr",
]
