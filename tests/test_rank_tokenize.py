"""tGPT rank tokenisation: ordering, ties, truncation, end token, determinism and invariance to normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from scfm.models.tgpt import rank_genes, rank_tokenize_csr, rank_tokens

BEGIN, END = 1, 2


def test_genes_ordered_by_value_with_ties_broken_by_token_id():
    ranked = rank_genes(np.array([10, 7, 12, 5, 9]), np.array([3.0, 5.0, 3.0, 1.0, 3.0]))
    np.testing.assert_array_equal(ranked, [7, 9, 10, 12, 5])


def test_rank_tokens_adds_end_only_when_the_ranking_fits():
    ids, values = np.array([4, 5, 6]), np.array([1.0, 3.0, 2.0])
    np.testing.assert_array_equal(rank_tokens(ids, values, begin_id=BEGIN, end_id=END, max_len=5), [1, 5, 6, 4, 2])
    np.testing.assert_array_equal(rank_tokens(ids, values, begin_id=BEGIN, end_id=END, max_len=3), [1, 5, 6])
    np.testing.assert_array_equal(rank_tokens(ids[:0], values[:0], begin_id=BEGIN, end_id=END, max_len=3), [1, 2])
    with pytest.raises(ValueError, match="max_len"):
        rank_tokens(ids, values, begin_id=BEGIN, end_id=END, max_len=1)


def _random_counts(seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    return sp.csr_matrix(rng.negative_binomial(1, 0.3, size=(20, 40)).astype(np.float32))


def test_csr_tokens_ignore_unknown_genes_and_zeros_and_match_dense():
    counts = _random_counts()
    token_ids = np.arange(40) + 10
    token_ids[::5] = -1
    tokens = rank_tokenize_csr(counts, token_ids, begin_id=BEGIN, end_id=END, max_len=64)
    dense = rank_tokenize_csr(counts.toarray(), token_ids, begin_id=BEGIN, end_id=END, max_len=64)
    for row, (a, b) in enumerate(zip(tokens, dense, strict=True)):
        np.testing.assert_array_equal(a, b)
        genes = a[1:-1]
        expected = {token_ids[c] for c in counts[row].indices if token_ids[c] >= 0}
        assert set(genes.tolist()) == expected
        values = counts[row].toarray().ravel()[genes - 10]
        assert (np.diff(values) <= 0).all()  # highest first


def test_ranking_is_invariant_to_normalisation_and_column_order():
    counts = _random_counts(1)
    token_ids = np.arange(40) + 10
    raw = rank_tokenize_csr(counts, token_ids, begin_id=BEGIN, end_id=END, max_len=16)
    depth = np.asarray(counts.sum(1)).ravel()
    normalised = sp.csr_matrix(np.log1p(counts.multiply(1e4 / depth[:, None]).toarray()))
    permutation = np.random.default_rng(2).permutation(40)
    shuffled = rank_tokenize_csr(
        normalised[:, permutation], token_ids[permutation], begin_id=BEGIN, end_id=END, max_len=16
    )
    for a, b in zip(raw, shuffled, strict=True):
        np.testing.assert_array_equal(a, b)


def test_bad_input_is_rejected():
    counts = _random_counts()
    with pytest.raises(ValueError, match="columns"):
        rank_tokenize_csr(counts, np.arange(39), begin_id=BEGIN, end_id=END, max_len=8)
    with pytest.raises(ValueError, match="same token"):
        rank_tokenize_csr(counts, np.zeros(40, dtype=int), begin_id=BEGIN, end_id=END, max_len=8)
    negative = counts.copy()
    negative.data[0] = -1.0
    with pytest.raises(ValueError):
        rank_tokenize_csr(negative, np.arange(40), begin_id=BEGIN, end_id=END, max_len=8)


def test_ranked_dataset_items_equal_block_tokenisation():
    from scfm.models.tgpt import RankedSampleDataset

    rng = np.random.default_rng(3)
    dense = rng.poisson(0.7, size=(12, 40)).astype(np.float32)
    matrix = sp.csr_matrix(dense)
    matrix.data[::7] = 0.0  # explicitly stored zeros are not expressed
    column_token_ids = np.arange(40) + 3
    column_token_ids[::5] = -1  # genes outside the vocabulary
    rows = np.array([11, 0, 5, 5])
    dataset = RankedSampleDataset(matrix, column_token_ids, rows, begin_id=1, end_id=2, max_len=9)
    expected = rank_tokenize_csr(matrix[rows], column_token_ids, begin_id=1, end_id=2, max_len=9)
    assert len(dataset) == 4
    for item, reference in zip(dataset, expected, strict=True):
        np.testing.assert_array_equal(item, reference)
