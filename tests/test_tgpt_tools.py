"""tGPT through the tools: ``tl.embed(model=...)``, ``tl.bulk_features``, the bundled checkpoint."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
from conftest import assert_unchanged, snapshot

import scfm
from scfm.models import TGPT, NoKnownGenesError
from scfm.models.base import CheckpointError


def embed(adata, checkpoint, **kwargs) -> np.ndarray:
    scfm.tl.embed(adata, checkpoint, progress=False, device="cpu", min_genes=10, **kwargs)
    return adata.obsm["X_scfm"]


def test_embed_dispatches_on_the_checkpoint_family(counts_adata, tiny_tgpt_checkpoint):
    emb = embed(counts_adata, tiny_tgpt_checkpoint)
    record = counts_adata.uns["scfm"]["X_scfm"]
    assert emb.shape == (counts_adata.n_obs, 32)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert record["family"] == "tgpt" and record["tokenizer"] == "rank"
    assert record["max_len"] == 64 and record["genes_matched"] == 300
    # a ranking is cut to the context when the cell expresses more than max_len - 1 genes
    expressed = np.asarray((counts_adata.X > 0).sum(1)).ravel()
    assert 0 < record["n_truncated_cells"] == int((expressed > 63).sum()) < counts_adata.n_obs


def test_embed_equals_the_model_class_and_ignores_batching(counts_adata, tiny_tgpt_checkpoint):
    reference = embed(counts_adata.copy(), tiny_tgpt_checkpoint)
    chunked = embed(counts_adata.copy(), tiny_tgpt_checkpoint, batch_size=3, block_size=7)
    np.testing.assert_allclose(chunked, reference, atol=1e-6, rtol=0)
    order = np.random.default_rng(0).permutation(counts_adata.n_obs)
    np.testing.assert_allclose(embed(counts_adata[order].copy(), tiny_tgpt_checkpoint), reference[order], atol=1e-6)
    model = TGPT.from_pretrained(tiny_tgpt_checkpoint, counts_adata.copy(), min_genes=10)
    np.testing.assert_allclose(model.get_latent_representation(batch_size=5, device="cpu"), reference, atol=1e-6)


def test_rank_embedding_ignores_monotone_rescaling(counts_adata, tiny_tgpt_checkpoint):
    reference = embed(counts_adata.copy(), tiny_tgpt_checkpoint)
    sc.pp.normalize_total(counts_adata, target_sum=1e4)
    sc.pp.log1p(counts_adata)
    np.testing.assert_allclose(embed(counts_adata, tiny_tgpt_checkpoint), reference, atol=1e-6, rtol=0)


def test_embed_rejects_a_tgpt_max_len(counts_adata, tiny_tgpt_checkpoint):
    before = snapshot(counts_adata)
    with pytest.raises(ValueError, match="context is fixed at 64"):
        embed(counts_adata, tiny_tgpt_checkpoint, max_len=32)
    assert_unchanged(counts_adata, before)


def test_empty_cell_is_an_error_and_nothing_is_written(counts_adata, tiny_tgpt_checkpoint):
    counts = counts_adata.X.tolil()
    counts[5, :] = 0
    counts_adata.X = sp.csr_matrix(counts)
    before = snapshot(counts_adata)
    with pytest.raises(NoKnownGenesError, match=str(counts_adata.obs_names[5])):
        embed(counts_adata, tiny_tgpt_checkpoint)
    assert_unchanged(counts_adata, before)


def test_other_tools_refuse_a_tgpt_checkpoint(counts_adata, tiny_tgpt_checkpoint):
    counts_adata.obs["batch"] = np.where(np.arange(counts_adata.n_obs) % 2, "a", "b")
    with pytest.raises(CheckpointError, match="tGPT model, which cannot integrate batches; models that can: scGPT"):
        scfm.tl.integrate(counts_adata, "batch", method="finetune", model=tiny_tgpt_checkpoint, max_epochs=1)


# ---- bulk features -----------------------------------------------------------------------------------


@pytest.fixture
def bulk(counts_adata):
    """Bulk-like samples: pooled synthetic cells, as TPM."""
    pooled = np.asarray(counts_adata.X.toarray()).reshape(20, 6, -1).sum(1)
    tpm = pooled / pooled.sum(1, keepdims=True) * 1e6
    bdata = sc.AnnData(tpm.astype(np.float32), var=pd.DataFrame(index=counts_adata.var_names))
    bdata.obs_names = [f"tumour{i}" for i in range(20)]
    return bdata


def bulk_features(bdata, checkpoint, **kwargs):
    return scfm.tl.bulk_features(bdata, model=checkpoint, device="cpu", min_genes=10, **kwargs)


def test_bulk_features_do_not_depend_on_the_scale(bulk, tiny_tgpt_checkpoint):
    logged = bulk.copy()
    logged.X = np.log2(logged.X + 1)
    bulk_features(bulk, tiny_tgpt_checkpoint)
    assert bulk.uns["scfm"]["X_scfm_bulk"]["input_scale"] == "linear"
    result = bulk_features(logged, tiny_tgpt_checkpoint, copy=True)
    assert "X_scfm_bulk" not in logged.obsm
    assert result.uns["scfm"]["X_scfm_bulk"]["input_scale"] == "log"
    np.testing.assert_allclose(result.obsm["X_scfm_bulk"], bulk.obsm["X_scfm_bulk"], atol=1e-6, rtol=0)


def test_bulk_negative_values_are_rejected(bulk, tiny_tgpt_checkpoint):
    bulk.X = np.log2(bulk.X + 0.01)
    before = snapshot(bulk)
    with pytest.raises(ValueError, match=r"negative values.*pseudo-count below 1"):
        bulk_features(bulk, tiny_tgpt_checkpoint)
    assert_unchanged(bulk, before)


def test_bulk_nan_and_empty_samples_are_rejected(bulk, tiny_tgpt_checkpoint):
    bulk.X[3, 0] = np.nan
    before = snapshot(bulk)
    with pytest.raises(ValueError, match="NaN"):
        bulk_features(bulk, tiny_tgpt_checkpoint)
    bulk.X[3] = 0
    before = snapshot(bulk)
    with pytest.raises(NoKnownGenesError, match=r"tumour3.*all-zero sample"):
        bulk_features(bulk, tiny_tgpt_checkpoint)
    assert_unchanged(bulk, before)


def test_bulk_probe_ids_get_a_mapping_hint(bulk, tiny_tgpt_checkpoint):
    bulk.var_names = [f"X{200000 + i}_s_at" for i in range(bulk.n_vars)]
    with pytest.raises(ValueError, match="probe-set ids"):
        bulk_features(bulk, tiny_tgpt_checkpoint)


def test_bulk_features_need_a_tgpt_model(bulk, tiny_checkpoint):
    with pytest.raises(CheckpointError, match="scGPT model, which cannot embed bulk samples; models that can: tGPT"):
        bulk_features(bulk, tiny_checkpoint)


# ---- the bundled checkpoint --------------------------------------------------------------------------


# 15-NN accuracy of bulk_labels: 0.34 by guessing the largest class; the bundled model measured 0.78
BUNDLED_PBMC_KNN_FLOOR = 0.6


def test_bundled_tgpt_embeds_pbmc(pbmc_small):
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    scfm.tl.embed(pbmc_small, model="tgpt", use_raw=True, progress=False, device="cpu")
    record = pbmc_small.uns["scfm"]["X_scfm"]
    assert record["model"] == "tgpt_default" and record["family"] == "tgpt"
    emb = pbmc_small.obsm["X_scfm"]
    assert np.isfinite(emb).all()
    labels = pbmc_small.obs["bulk_labels"].astype(str).to_numpy()
    accuracy = cross_val_score(KNeighborsClassifier(15), emb, labels, cv=5).mean()
    assert accuracy > BUNDLED_PBMC_KNN_FLOOR, accuracy
