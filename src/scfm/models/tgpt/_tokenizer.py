"""tGPT-style rank tokenisation: a cell (or bulk sample) is the list of its expressed genes, highest first."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from scfm.tokenize._input import check_values


def rank_genes(gene_ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Token ids of the expressed genes ordered by value, highest first; ties by ascending token id.

    Breaking ties by vocabulary id (not by column position) makes the order independent of how the dataset
    orders its genes, and any per-sample monotone transform of the values (``normalize_total``, ``log1p``,
    TPM) gives the same ranking as the raw values.

    Parameters
    ----------
    gene_ids
        Token ids of the sample's in-vocabulary genes with a positive value.
    values
        Their values (same length).
    """
    gene_ids = np.asarray(gene_ids, dtype=np.int64)
    values = np.asarray(values)
    if gene_ids.shape != values.shape or gene_ids.ndim != 1:
        raise ValueError(f"gene_ids and values must be 1-D of equal length, got {gene_ids.shape} and {values.shape}")
    return gene_ids[np.lexsort((gene_ids, -values))]


def rank_tokens(
    gene_ids: np.ndarray,
    values: np.ndarray,
    *,
    begin_id: int,
    end_id: int,
    max_len: int,
    end_when_cut: bool = False,
) -> np.ndarray:
    """Token sequence of one sample: ``begin``, the ranked genes, ``end``; at most ``max_len`` tokens.

    ``end`` means "no further expressed gene": a sample with more expressed genes than fit is cut to its
    ``max_len - 1`` highest genes and gets no ``end`` token, so a causal model never learns to stop early.
    With ``end_when_cut=True`` (the reference tGPT tokenizer, whose template appends its end token after
    truncation) a cut sample keeps its ``max_len - 2`` highest genes and still ends with ``end``.
    """
    if max_len < 2:
        raise ValueError(f"max_len must be at least 2 (the begin token and one gene), got {max_len}")
    ranked = rank_genes(gene_ids, values)
    if end_when_cut:
        if max_len < 3:
            raise ValueError(f"end_when_cut needs max_len >= 3 (begin, a gene, end), got {max_len}")
        return np.concatenate([[begin_id], ranked[: max_len - 2], [end_id]]).astype(np.int64)
    if ranked.size > max_len - 2:
        return np.concatenate([[begin_id], ranked[: max_len - 1]]).astype(np.int64)
    return np.concatenate([[begin_id], ranked, [end_id]]).astype(np.int64)


def rank_tokenize_csr(
    block: sp.csr_matrix | np.ndarray,
    column_token_ids: np.ndarray,
    *,
    begin_id: int,
    end_id: int,
    max_len: int,
    end_when_cut: bool = False,
) -> list[np.ndarray]:
    """Rank tokens of every row (cell or bulk sample) of a block.

    Parameters
    ----------
    block
        Samples x all genes; CSR (other sparse formats are converted, never densified) or a dense array.
        Values must be finite and non-negative (counts, normalised or log1p values, TPM). Genes with value 0,
        including explicitly stored zeros, are not expressed.
    column_token_ids
        Token id per column; ``-1`` marks genes outside the vocabulary, which are dropped. A token must not
        appear twice (align the genes first).
    begin_id, end_id
        Token ids that open and close a sequence.
    max_len
        Tokens per sample including ``begin`` (and ``end`` when the whole ranking fits).
    end_when_cut
        See :func:`rank_tokens`.

    Returns
    -------
    One int64 array per row, in row order. A row with no expressed gene gives ``[begin, end]``.
    """
    column_token_ids = np.asarray(column_token_ids, dtype=np.int64)
    if block.shape[1] != column_token_ids.size:
        raise ValueError(
            f"the block has {block.shape[1]} columns but column_token_ids has {column_token_ids.size} entries"
        )
    known = column_token_ids[column_token_ids >= 0]
    if np.unique(known).size != known.size:
        raise ValueError("column_token_ids maps two columns to the same token; keep one column per gene")
    csr = sp.csr_matrix(block) if not sp.isspmatrix_csr(block) else block
    check_values(csr.data, where="the expression block")
    out = []
    for row in range(csr.shape[0]):
        start, stop = csr.indptr[row], csr.indptr[row + 1]
        columns, values = csr.indices[start:stop], csr.data[start:stop]
        ids = column_token_ids[columns]
        keep = (ids >= 0) & (values > 0)
        out.append(
            rank_tokens(
                ids[keep], values[keep], begin_id=begin_id, end_id=end_id, max_len=max_len, end_when_cut=end_when_cut
            )
        )
    return out
