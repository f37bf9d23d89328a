"""Tokenisation of expression profiles: scGPT-style value binning with deterministic per-cell token selection,
tGPT-style gene ranking, and scMulan c-sentences."""

from ._binning import bin_expressed, cell_seed, quantile_bin_edges
from ._csentence import (
    ANNOTATE,
    GENERATE,
    CSentence,
    CSentenceVocab,
    LevelScheme,
    annotation_sentence,
    cell_gene_words,
    generation_prompt,
    generation_sentence,
    normalised_log_values,
    ordered_gene_words,
    query_token,
    read_sentence,
    row_gene_words,
)
from ._input import InputKind, check_values, detect_input_kind
from ._rank import rank_genes, rank_tokenize_csr, rank_tokens
from ._scgpt import BinningConfig, CellTokens, tokenize_cell, tokenize_csr

__all__ = [
    "ANNOTATE",
    "GENERATE",
    "BinningConfig",
    "CSentence",
    "CSentenceVocab",
    "CellTokens",
    "InputKind",
    "LevelScheme",
    "annotation_sentence",
    "bin_expressed",
    "cell_gene_words",
    "cell_seed",
    "check_values",
    "detect_input_kind",
    "generation_prompt",
    "generation_sentence",
    "normalised_log_values",
    "ordered_gene_words",
    "quantile_bin_edges",
    "query_token",
    "rank_genes",
    "rank_tokenize_csr",
    "rank_tokens",
    "read_sentence",
    "row_gene_words",
    "tokenize_cell",
    "tokenize_csr",
]
