"""Contrastive training of SCGPT: thinned views, the InfoNCE loss, minibatches drawn within groups."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from conftest import TINY

from scfm.data._datamodule import BucketBatchSampler
from scfm.models import SCGPT
from scfm.models.scgpt._contrastive import TwoViewCellDataset, TwoViewCollator, thin_counts
from scfm.models.scgpt._tokenizer import BinningConfig
from scfm.nn._losses import paired_view_contrastive

TRAIN_KWARGS = {"accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False}


def test_thin_counts_keeps_a_binomial_share_and_only_integers():
    row = sp.csr_matrix(np.array([[0, 100, 3, 0, 1000]], dtype=np.float32))
    rng = np.random.default_rng(0)
    thinned = thin_counts(row, 0.5, rng)
    assert thinned.shape == row.shape
    assert np.array_equal(thinned.data, np.rint(thinned.data))
    assert (thinned.toarray() <= row.toarray()).all()
    assert 400 < thinned[0, 4] < 600
    assert thin_counts(row, 1.0, rng).toarray().tolist() == row.toarray().tolist()
    assert thin_counts(row, 1e-9, rng).nnz == 0


def test_paired_view_contrastive_prefers_matching_views():
    torch.manual_seed(0)
    cells = torch.randn(16, 8)
    matched = paired_view_contrastive(cells, cells + 0.01 * torch.randn(16, 8))
    shuffled = paired_view_contrastive(cells, cells[torch.randperm(16)])
    assert matched < shuffled
    assert paired_view_contrastive(cells[:1], cells[:1]) == 0


def test_two_view_items_differ_and_collate(counts_adata):
    matrix = sp.csr_matrix(counts_adata.X)
    ids = np.arange(matrix.shape[1], dtype=np.int64) + 2
    config = BinningConfig(n_bins=11, max_len=64)
    dataset = TwoViewCellDataset(matrix, ids, cls_id=1, config=config, rows=np.arange(8), min_keep=0.3)
    np.random.seed(0)  # noqa: NPY002 (the dataset draws from numpy's global RNG, as in training)
    items = [dataset[i] for i in range(8)]
    assert any(not np.array_equal(item.tokens.gene_ids, item.view.gene_ids) for item in items)
    collator = TwoViewCollator(pad_id=0, pad_value=-2.0, mask_value=-1.0, n_zero_queries=4)
    batch = collator(items)
    assert batch["view_gene_ids"].shape[0] == 8
    assert (batch["view_gene_ids"][:, 0] == 1).all()
    with pytest.raises(ValueError, match="min_keep"):
        TwoViewCellDataset(matrix, ids, cls_id=1, config=config, rows=np.arange(8), min_keep=0.0)


def test_grouped_sampler_never_mixes_groups():
    lengths = np.arange(100) % 17 + 2
    groups = np.repeat([0, 1, 2], [50, 30, 20])
    torch.manual_seed(0)
    sampler = BucketBatchSampler(lengths, 8, groups=groups)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert sorted(i for batch in batches for i in batch) == list(range(100))
    assert all(len(set(groups[batch])) == 1 for batch in batches)
    with pytest.raises(ValueError, match="groups"):
        BucketBatchSampler(lengths, 8, groups=groups[:10])


def test_train_contrastive_with_projection_and_groups(counts_adata):
    counts_adata.obs["dataset"] = np.where(np.arange(counts_adata.n_obs) % 2 == 0, "a", "b")
    SCGPT.setup_anndata(counts_adata)
    model = SCGPT(counts_adata, **{**TINY, "cell_embedding": "mean", "contrastive_dim": 16})
    model.train(
        max_epochs=2,
        lr=3e-3,
        warmup_steps=1,
        batch_size=16,
        contrastive_weight=1.0,
        minibatch_key="dataset",
        **TRAIN_KWARGS,
    )
    history = model.history
    assert "train_contrastive" in history
    assert np.isfinite(history["train_contrastive"].to_numpy(dtype=float)).all()
    assert model.module.projection is not None


def test_train_contrastive_rejects_non_integer_counts(counts_adata):
    counts_adata.X = counts_adata.X * 0.5
    SCGPT.setup_anndata(counts_adata)
    model = SCGPT(counts_adata, **TINY)
    with pytest.raises(ValueError, match="non-integer"):
        model.train(max_epochs=1, contrastive_weight=1.0, **TRAIN_KWARGS)


def test_train_rejects_unknown_minibatch_key(counts_adata):
    SCGPT.setup_anndata(counts_adata)
    model = SCGPT(counts_adata, **TINY)
    with pytest.raises(KeyError, match="minibatch_key"):
        model.train(max_epochs=1, minibatch_key="nope", **TRAIN_KWARGS)


def test_tgpt_two_view_items_and_training(counts_adata):
    from scfm.models import TGPT
    from scfm.models.tgpt._data import PadTwoViews, TwoViewRankedDataset

    counts_adata.obs["dataset"] = np.where(np.arange(counts_adata.n_obs) % 2 == 0, "a", "b")
    TGPT.setup_anndata(counts_adata)
    model = TGPT(counts_adata, d_model=32, n_heads=2, n_layers=2, d_hidden=64, max_len=32, contrastive_dim=16)
    matrix = sp.csr_matrix(counts_adata.X)
    ids = model.alignment.column_token_ids()
    dataset = TwoViewRankedDataset(matrix, ids, np.arange(6), begin_id=1, end_id=2, max_len=32, min_keep=0.3)
    np.random.seed(0)  # noqa: NPY002 (the dataset draws from numpy's global RNG, as in training)
    pairs = [dataset[i] for i in range(6)]
    assert any(not np.array_equal(first, second) for first, second in pairs)
    assert all(first[0] == 1 and second[0] == 1 for first, second in pairs)
    batch = PadTwoViews(0)(pairs)
    assert set(batch) == {"token_ids", "view_token_ids"}
    model.train(
        max_epochs=2,
        lr=3e-3,
        warmup_steps=1,
        batch_size=16,
        contrastive_weight=1.0,
        minibatch_key="dataset",
        **TRAIN_KWARGS,
    )
    assert {"train_next_gene", "train_contrastive"} <= set(model.history)
    assert np.isfinite(model.history["train_contrastive"].to_numpy(dtype=float)).all()
    with pytest.raises(KeyError, match="minibatch_key"):
        model.train(max_epochs=1, minibatch_key="nope", **TRAIN_KWARGS)
