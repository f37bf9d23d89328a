import numpy as np
import pytest
import scipy.sparse as sp

from scfm.models.scgpt import BinningConfig, tokenize_cell, tokenize_csr
from scfm.tokenize import bin_expressed, cell_seed, check_values, detect_input_kind, quantile_bin_edges


def reference_bins(values: np.ndarray, n_bins: int, rng: np.random.Generator) -> np.ndarray:
    """scGPT's binning of one cell's non-zero values, on the raw values."""
    edges = np.quantile(values, np.linspace(0, 1, n_bins - 1))
    left = np.digitize(values, edges)
    right = np.digitize(values, edges, right=True)
    return np.ceil(rng.random(len(values)) * (right - left) + left).astype(np.int64)


def random_counts(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.negative_binomial(1, 0.3, size=n).astype(np.float64) + 1


def random_block(rng: np.random.Generator, n_cells: int, n_genes: int, density: float) -> sp.csr_matrix:
    x = sp.random(n_cells, n_genes, density=density, format="csr", random_state=rng, dtype=np.float64)
    x.data = np.floor(x.data * 20) + 1
    return x


def assert_same_tokens(a, b):
    np.testing.assert_array_equal(a.gene_ids, b.gene_ids)
    np.testing.assert_array_equal(a.values, b.values)
    assert a.n_expressed == b.n_expressed


# binning


def test_hand_computed_example():
    # edges = quantile([1..5], [0, 1/3, 2/3, 1]) = [1, 2.33, 3.67, 5]
    values = np.array([4.0, 1.0, 5.0, 3.0, 2.0])
    np.testing.assert_allclose(quantile_bin_edges(np.sort(values), 5), [1, 7 / 3, 11 / 3, 5])
    expected = np.array([3, 1, 4, 2, 1])
    np.testing.assert_array_equal(bin_expressed(values, 5, None), expected)
    np.testing.assert_array_equal(bin_expressed(values, 5, np.random.default_rng(1)), expected)


@pytest.mark.parametrize("n_bins", [3, 11, 51])
def test_bins_in_range_and_monotone(n_bins):
    rng = np.random.default_rng(0)
    for n in [1, 2, 7, 100, 1500]:
        values = np.concatenate([random_counts(rng, n // 2), rng.gamma(1.0, 3.0, n - n // 2) + 1e-3])
        for tie_rng in [None, np.random.default_rng(n)]:
            bins = bin_expressed(values, n_bins, tie_rng)
            assert bins.dtype == np.int64 and bins.shape == values.shape
            assert bins.min() >= 1 and bins.max() <= n_bins - 1
            uniq, group = np.unique(values, return_inverse=True)
            lo = np.full(uniq.size, n_bins)
            hi = np.zeros(uniq.size, dtype=np.int64)
            np.minimum.at(lo, group, bins)
            np.maximum.at(hi, group, bins)
            assert np.all(hi[:-1] <= lo[1:])
            if n > 1:
                assert bins[np.argmax(values)] == n_bins - 1


def test_matches_reference_on_values():
    rng = np.random.default_rng(3)
    for i in range(20):
        values = random_counts(rng, int(rng.integers(1, 400))) * rng.uniform(0.1, 3.0)
        np.testing.assert_array_equal(
            bin_expressed(values, 51, np.random.default_rng(i)), reference_bins(values, 51, np.random.default_rng(i))
        )


def test_all_equal_and_single_value():
    for n in [1, 5]:
        values = np.full(n, 3.0)
        bins = bin_expressed(values, 51, np.random.default_rng(0))
        assert np.all((bins >= 1) & (bins <= 50))
        # all edges equal the value: the midpoint rule gives the median bin
        np.testing.assert_array_equal(bin_expressed(values, 51, None), np.full(n, 25))
    assert bin_expressed(np.array([], dtype=float), 51, None).shape == (0,)


def test_n_bins_too_small():
    with pytest.raises(ValueError, match="n_bins"):
        bin_expressed(np.array([1.0, 2.0]), 2, None)
    with pytest.raises(ValueError, match="n_bins"):
        BinningConfig(n_bins=2)


def test_tie_breaking_spans_left_and_right():
    values = np.array([1.0] * 6 + [2.0, 3.0, 4.0, 5.0])  # value 1 equals several edges
    n_bins = 11
    edges = quantile_bin_edges(values, n_bins)
    left = int(np.digitize(1.0, edges))
    right = int(np.digitize(1.0, edges, right=True))
    assert left - right >= 3
    seen = set()
    for seed in range(300):
        bins = bin_expressed(values, n_bins, np.random.default_rng(seed))
        assert np.all((bins[:6] > right) & (bins[:6] <= left))
        seen.update(bins[:6].tolist())
    assert seen == set(range(right + 1, left + 1))
    midpoint = bin_expressed(values, n_bins, None)[:6]
    np.testing.assert_array_equal(midpoint, np.ceil((left + right) / 2))


def test_counts_and_log_normalised_give_same_bins():
    rng = np.random.default_rng(5)
    counts = random_counts(rng, 800)
    lognorm = np.log1p(counts / counts.sum() * 1e4).astype(np.float32)
    for seed in range(5):
        np.testing.assert_array_equal(
            bin_expressed(counts, 51, np.random.default_rng(seed)),
            bin_expressed(lognorm, 51, np.random.default_rng(seed)),
        )
    np.testing.assert_array_equal(bin_expressed(counts, 51, None), bin_expressed(lognorm, 51, None))
    ids = np.arange(800) * 3
    config = BinningConfig(max_len=200)
    assert_same_tokens(
        tokenize_cell(ids, counts, cls_id=0, config=config), tokenize_cell(ids, lognorm, cls_id=0, config=config)
    )


# cell_seed


def test_cell_seed_stable_and_sensitive():
    ids, values = np.array([3, 7, 11]), np.array([1.0, 2.5, 4.0])
    s = cell_seed(ids, values, 0)
    assert s == 5946317206868632369
    assert s == cell_seed(ids.astype(np.int32), values.astype(np.float32), 0)
    assert 0 <= s < 2**64
    assert cell_seed(ids, values, 1) != s
    assert cell_seed(ids, np.array([1.0, 2.5, 4.5]), 0) != s
    assert cell_seed(np.array([3, 7, 12]), values, 0) != s


# tokenize_cell


def test_tokenize_cell_layout_and_subsampling():
    rng = np.random.default_rng(0)
    n = 500
    ids = np.sort(rng.choice(10_000, n, replace=False)) + 10
    values = random_counts(rng, n)
    config = BinningConfig(max_len=101, seed=0)
    tok = tokenize_cell(ids, values, cls_id=1, config=config)
    assert tok.gene_ids.dtype == np.int64 and tok.values.dtype == np.float32
    assert tok.gene_ids.shape == tok.values.shape == (101,)
    assert tok.gene_ids[0] == 1 and tok.values[0] == -2.0
    assert tok.n_expressed == n
    assert np.all(np.diff(tok.gene_ids[1:]) > 0) and np.isin(tok.gene_ids[1:], ids).all()
    # kept genes carry the bins they had before subsampling
    full = tokenize_cell(ids, values, cls_id=1, config=BinningConfig(max_len=n + 1, seed=0))
    assert full.gene_ids.size == n + 1
    np.testing.assert_array_equal(full.values[1:][np.isin(ids, tok.gene_ids)], tok.values[1:])
    assert_same_tokens(tok, tokenize_cell(ids, values, cls_id=1, config=config))
    other = tokenize_cell(ids, values, cls_id=1, config=BinningConfig(max_len=101, seed=1))
    assert not np.array_equal(other.gene_ids, tok.gene_ids)


def test_tokenize_cell_empty_and_short():
    config = BinningConfig(max_len=10, pad_value=-2.0)
    tok = tokenize_cell(np.array([], dtype=np.int64), np.array([]), cls_id=5, config=config)
    np.testing.assert_array_equal(tok.gene_ids, [5])
    np.testing.assert_array_equal(tok.values, [-2.0])
    assert tok.n_expressed == 0
    tok = tokenize_cell(np.array([8, 9]), np.array([1.0, 4.0]), cls_id=5, config=config)
    np.testing.assert_array_equal(tok.gene_ids, [5, 8, 9])
    assert tok.values[2] == config.n_bins - 1
    with pytest.raises(ValueError, match="positive"):
        tokenize_cell(np.array([8, 9]), np.array([0.0, 4.0]), cls_id=5, config=config)


# tokenize_csr


def test_tokenize_csr_independent_of_block_and_order():
    rng = np.random.default_rng(1)
    x = random_block(rng, 60, 400, 0.3)
    col_ids = np.arange(400) + 100
    config = BinningConfig(max_len=50)
    full = tokenize_csr(x, col_ids, cls_id=0, config=config)
    perm = rng.permutation(60)
    shuffled = tokenize_csr(x[perm], col_ids, cls_id=0, config=config)
    for i, j in enumerate(perm):
        assert_same_tokens(shuffled[i], full[j])
    part = tokenize_csr(x[10:13], col_ids, cls_id=0, config=config)
    for i in range(3):
        assert_same_tokens(part[i], full[10 + i])
    assert all(t.gene_ids.size == 50 for t in full if t.n_expressed >= 49)


def test_tokenize_csr_drops_out_of_vocab_and_explicit_zeros():
    data = np.array([3.0, 0.0, 2.0, 5.0, 1.0, 7.0])
    indices = np.array([0, 1, 2, 3, 4, 5])
    x = sp.csr_matrix((data, indices, np.array([0, 4, 6, 6])), shape=(3, 6))
    col_ids = np.array([10, 11, -1, 13, 14, -1])
    out = tokenize_csr(x, col_ids, cls_id=2, config=BinningConfig())
    assert len(out) == 3
    np.testing.assert_array_equal(out[0].gene_ids, [2, 10, 13])
    assert out[0].n_expressed == 2
    np.testing.assert_array_equal(out[1].gene_ids, [2, 14])
    np.testing.assert_array_equal(out[2].gene_ids, [2])


def test_tokenize_csr_dense_and_unsorted_equal():
    rng = np.random.default_rng(2)
    x = random_block(rng, 30, 200, 0.2)
    col_ids = np.where(rng.random(200) < 0.8, rng.permutation(200), -1)
    config = BinningConfig(max_len=20)
    expected = tokenize_csr(x, col_ids, cls_id=0, config=config)
    # same matrix with unsorted indices
    coo = x.tocoo()
    order = rng.permutation(coo.nnz)
    unsorted = sp.csr_matrix((coo.data[order], (coo.row[order], coo.col[order])), shape=x.shape)
    unsorted.has_sorted_indices = False
    for other in [x.toarray(), unsorted, sp.csr_array(x)]:
        for a, b in zip(tokenize_csr(other, col_ids, cls_id=0, config=config), expected, strict=True):
            assert_same_tokens(a, b)


def test_tokenize_csr_invalid_values():
    col_ids = np.arange(3)
    x = sp.csr_matrix(np.array([[1.0, np.nan, 2.0], [np.inf, 0.0, np.nan]]))
    with pytest.raises(ValueError, match="X contains 3 NaN/inf values; remove or impute them before embedding"):
        tokenize_csr(x, col_ids, cls_id=0, config=BinningConfig())
    neg = np.array([[1.0, -1.2, 2.0]])
    msg = r"X contains negative values \(min -1.2\); scfm needs raw counts or log-normalised expression"
    for block in [neg, sp.csr_matrix(neg)]:
        with pytest.raises(ValueError, match=msg) as err:
            tokenize_csr(block, col_ids, cls_id=0, config=BinningConfig())
        assert "layer='counts'" in str(err.value)
    with pytest.raises(ValueError, match="layers\\['scaled'\\] contains negative"):
        check_values(neg, where="layers['scaled']")
    with pytest.raises(ValueError, match="column_token_ids"):
        tokenize_csr(sp.csr_matrix((2, 4)), col_ids, cls_id=0, config=BinningConfig())


def test_detect_input_kind():
    rng = np.random.default_rng(0)
    counts = random_block(rng, 50, 300, 0.2)
    assert detect_input_kind(counts.data) == "counts"
    assert detect_input_kind(counts.toarray()) == "counts"
    assert detect_input_kind(counts.data.astype(np.int32)) == "counts"
    lognorm = counts.copy()
    lognorm.data = np.log1p(lognorm.data / 7.3)
    assert detect_input_kind(lognorm.data) == "log1p"
    tpm = counts.copy()
    tpm.data = tpm.data / 3.7 * 1e3
    assert detect_input_kind(tpm.data) == "nonnegative"
