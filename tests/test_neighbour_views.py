"""Neighbour views for tGPT's contrastive objective: the expression neighbour graph and the pairs drawn from it."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from test_contrastive import TRAIN_KWARGS

from scfm.data import expression_neighbours


def clustered_counts(n_per_type: int = 40, n_genes: int = 200, seed: int = 0) -> tuple[sp.csr_matrix, np.ndarray]:
    """Poisson counts of three cell types, each with its own 20 marker genes, at depths varying 4-fold."""
    rng = np.random.default_rng(seed)
    types = np.repeat(np.arange(3), n_per_type)
    rates = np.full((3, n_genes), 0.5)
    for t in range(3):
        rates[t, t * 20 : (t + 1) * 20] = 8.0
    depth = rng.uniform(0.5, 2.0, len(types))[:, None]
    return sp.csr_matrix(rng.poisson(rates[types] * depth).astype(np.float32)), types


def test_neighbours_share_the_cell_type_and_never_the_cell():
    counts, types = clustered_counts()
    neighbours = expression_neighbours(counts, n_neighbors=10, n_pcs=10)
    assert neighbours.shape == (counts.shape[0], 10)
    assert (neighbours != np.arange(counts.shape[0])[:, None]).all()
    assert (types[neighbours] == types[:, None]).mean() > 0.95


def test_neighbours_stay_within_their_group_and_small_groups_get_none():
    counts, _ = clustered_counts()
    groups = np.array(["a"] * 60 + ["b"] * 52 + ["c"] * 8)
    neighbours = expression_neighbours(counts, groups, n_neighbors=10, n_pcs=10)
    found = neighbours[:112]
    assert (groups[found] == groups[:112, None]).all()
    assert (neighbours[112:] == -1).all()  # a group of 8 cells cannot give 10 neighbours


def test_neighbours_accept_log_normalised_input_and_reject_bad_input():
    counts, types = clustered_counts()
    log = counts.multiply(1e4 / counts.sum(1)).tocsr()
    log.data = np.log1p(log.data)
    neighbours = expression_neighbours(log, n_neighbors=10, n_pcs=10)
    assert (types[neighbours] == types[:, None]).mean() > 0.95
    with pytest.raises(ValueError, match="non-negative"):
        expression_neighbours(-counts)
    with pytest.raises(ValueError, match="groups has 3 entries"):
        expression_neighbours(counts, np.zeros(3))


def test_neighbour_view_items_pair_a_cell_with_one_of_its_neighbours(counts_adata):
    from scfm.models import TGPT
    from scfm.models.tgpt._data import NeighbourViewDataset, RankedSampleDataset

    TGPT.setup_anndata(counts_adata)
    model = TGPT(counts_adata, d_model=32, n_heads=2, n_layers=2, d_hidden=64, max_len=32)
    matrix, ids = model._training_matrix()
    n = matrix.shape[0]
    neighbours = np.stack([(np.arange(n) + 1) % n, (np.arange(n) + 2) % n], axis=1)
    neighbours[5] = -1
    options = {"begin_id": 1, "end_id": 2, "max_len": 32}
    dataset = NeighbourViewDataset(matrix, ids, np.arange(n), neighbours=neighbours, **options)
    single = RankedSampleDataset(matrix, ids, np.arange(n), **options)
    np.random.seed(0)  # noqa: NPY002 (the dataset draws from numpy's global RNG, as in training)
    for row in (0, 7):
        first, second = dataset[row]
        assert np.array_equal(first, single[row])
        assert any(np.array_equal(second, single[j]) for j in neighbours[row])
    first, second = dataset[5]
    assert np.array_equal(first, second)  # no neighbours: paired with itself
    with pytest.raises(ValueError, match="one row per matrix row"):
        NeighbourViewDataset(matrix, ids, np.arange(n), neighbours=neighbours[:3], **options)


def test_tgpt_trains_on_neighbour_views_and_rejects_unknown_views(counts_adata):
    from scfm.models import TGPT

    counts_adata.obs["dataset"] = np.where(np.arange(counts_adata.n_obs) % 2 == 0, "a", "b")
    counts_adata.X = counts_adata.X * 0.5  # not integer: neighbour views need no counts, thinned views do
    TGPT.setup_anndata(counts_adata)
    model = TGPT(counts_adata, d_model=32, n_heads=2, n_layers=2, d_hidden=64, max_len=32, contrastive_dim=16)
    options = {"contrastive_weight": 1.0, "minibatch_key": "dataset", **TRAIN_KWARGS}
    model.train(max_epochs=2, lr=3e-3, warmup_steps=1, batch_size=16, contrastive_views="neighbours", **options)
    assert np.isfinite(model.history["train_contrastive"].to_numpy(dtype=float)).all()
    with pytest.raises(ValueError, match="contrastive_views must be"):
        model.train(max_epochs=1, contrastive_views="neighbors", **options)
    with pytest.raises(ValueError, match="non-integer"):
        model.train(max_epochs=1, **options)
