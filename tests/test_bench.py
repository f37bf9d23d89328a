"""scfm.bench: HVG + PCA baseline and label silhouette."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scfm.bench import hvg_pca, knn_accuracy, label_silhouette, random_projection, rank_pca, scib_table, scvi_latent


def test_hvg_pca_on_counts(counts_adata):
    x_before = counts_adata.X.toarray()
    var_before = counts_adata.var.copy()
    hvg_pca(counts_adata, n_top_genes=100, n_comps=10, key_added="X_base")
    emb = counts_adata.obsm["X_base"]
    assert emb.shape == (counts_adata.n_obs, 10)
    assert emb.dtype == np.float32
    assert np.isfinite(emb).all()
    np.testing.assert_array_equal(counts_adata.X.toarray(), x_before)
    assert counts_adata.var.equals(var_before)
    assert "log1p" not in counts_adata.uns
    assert "highly_variable" not in counts_adata.var


def test_hvg_pca_caps_components_and_copy(counts_adata):
    out = hvg_pca(counts_adata, n_comps=500, copy=True)
    assert out is not counts_adata
    assert "X_hvg_pca" not in counts_adata.obsm
    # capped by the rank: min(500, n_obs - 1, n_vars - 1) = min(500, 119, 299)
    assert out.obsm["X_hvg_pca"].shape == (counts_adata.n_obs, 119)


def test_hvg_pca_is_deterministic(counts_adata):
    hvg_pca(counts_adata, n_comps=5, key_added="a")
    hvg_pca(counts_adata, n_comps=5, key_added="b")
    np.testing.assert_array_equal(counts_adata.obsm["a"], counts_adata.obsm["b"])


def test_hvg_pca_rejects_scaled_data(pbmc_small):
    with pytest.raises(ValueError, match="negative values"):
        hvg_pca(pbmc_small)
    hvg_pca(pbmc_small, use_raw=True, n_comps=20)
    assert pbmc_small.obsm["X_hvg_pca"].shape == (700, 20)


def test_label_silhouette_separated_vs_noise(counts_adata):
    rng = np.random.default_rng(0)
    codes = counts_adata.obs["cell_type"].cat.codes.to_numpy()
    centres = np.eye(3, 8) * 10
    counts_adata.obsm["separated"] = centres[codes] + rng.normal(size=(counts_adata.n_obs, 8))
    counts_adata.obsm["noise"] = rng.normal(size=(counts_adata.n_obs, 8))
    good = label_silhouette(counts_adata, "separated", "cell_type")
    bad = label_silhouette(counts_adata, "noise", "cell_type")
    assert isinstance(good, float)
    assert 0.0 <= bad <= 1.0
    assert 0.0 <= good <= 1.0
    assert good > 0.8
    assert good > bad + 0.3


def test_hvg_pca_separates_synthetic_types(counts_adata):
    hvg_pca(counts_adata, n_comps=10)
    assert label_silhouette(counts_adata, "X_hvg_pca", "cell_type") > 0.55


def test_label_silhouette_missing_keys(counts_adata):
    counts_adata.obsm["rep"] = np.zeros((counts_adata.n_obs, 2))
    with pytest.raises(KeyError, match=r"not in adata\.obsm"):
        label_silhouette(counts_adata, "nope", "cell_type")
    with pytest.raises(KeyError, match="label_key='nope'"):
        label_silhouette(counts_adata, "rep", "nope")


def test_knn_accuracy_separated_vs_noise(counts_adata):
    rng = np.random.default_rng(1)
    codes = counts_adata.obs["cell_type"].cat.codes.to_numpy()
    counts_adata.obsm["separated"] = np.eye(3, 8)[codes] * 10 + rng.normal(size=(counts_adata.n_obs, 8))
    counts_adata.obsm["noise"] = rng.normal(size=(counts_adata.n_obs, 8))
    assert knn_accuracy(counts_adata, "separated", "cell_type") == 1.0
    assert knn_accuracy(counts_adata, "noise", "cell_type") < 0.6
    with pytest.raises(KeyError, match="not a column"):
        knn_accuracy(counts_adata, "noise", "missing")


def test_scib_table_bio_only_for_one_batch():
    rng = np.random.default_rng(0)
    obs = pd.DataFrame({"label": rng.choice(list("abc"), 120), "batch": "one"}, index=[f"c{i}" for i in range(120)])
    adata = ad.AnnData(obs=obs)
    adata.obsm["good"] = np.eye(3)[pd.Categorical(obs["label"]).codes] + 0.05 * rng.normal(size=(120, 3))
    adata.obsm["noise"] = rng.normal(size=(120, 3))
    table = scib_table(adata, ["good", "noise"], batch_key="batch", label_key="label", batch_metrics=False)
    table = table.drop(index="Metric Type").astype(float)
    assert "Batch correction" not in table.columns and "Total" not in table.columns
    assert table.loc["good", "Bio conservation"] > table.loc["noise", "Bio conservation"]


def test_rank_pca_ignores_depth_and_keeps_cell_types(counts_adata):
    x_before = counts_adata.X.toarray()
    rank_pca(counts_adata, n_top_genes=100, n_comps=10)
    emb = counts_adata.obsm["X_rank_pca"]
    assert emb.shape == (counts_adata.n_obs, 10) and emb.dtype == np.float32
    np.testing.assert_array_equal(counts_adata.X.toarray(), x_before)
    deeper = counts_adata.copy()
    deeper.X = sp.csr_matrix(deeper.X.multiply(np.arange(1, deeper.n_obs + 1)[:, None] % 3 + 1))  # x1, x2, x3 depth
    rank_pca(deeper, n_top_genes=100, n_comps=10)
    np.testing.assert_allclose(np.abs(deeper.obsm["X_rank_pca"]), np.abs(emb), atol=1e-4)  # PCA signs may flip
    assert label_silhouette(counts_adata, "X_rank_pca", "cell_type") > 0.05


@pytest.mark.parametrize("baseline", [hvg_pca, rank_pca, random_projection])
def test_baselines_leave_log_valued_float32_input_unchanged(counts_adata, baseline):
    # float32 CSR log values (as pbmc68k_reduced's .raw) used to be shared with the work copy and ranked in place
    log_values = counts_adata.copy()
    log_values.X = sp.csr_matrix(np.log1p(counts_adata.X.toarray()).astype(np.float32))
    assert log_values.X.dtype == np.float32
    x_before = log_values.X.toarray()
    baseline(log_values, n_top_genes=10_000, n_comps=5)
    np.testing.assert_array_equal(log_values.X.toarray(), x_before)


def test_scvi_latent_leaves_float32_expected_counts_unchanged(counts_adata):
    # float32 CSR input used to share its arrays with the work copy: values rounded to 0 were eliminated in place
    expected = counts_adata.copy()
    expected.X = sp.csr_matrix(counts_adata.X.toarray().astype(np.float32) * 0.3)  # some round to 0
    expected.obs["batch"] = np.where(np.arange(expected.n_obs) % 2, "a", "b")
    x_before = expected.X.toarray()
    scvi_latent(expected, "batch", n_top_genes=50, n_latent=4, max_epochs=1, round_counts=True)
    np.testing.assert_array_equal(expected.X.toarray(), x_before)
    assert expected.obsm["X_scvi"].shape == (expected.n_obs, 4)


def test_random_projection_is_seeded_and_leaves_the_input(counts_adata):
    x_before = counts_adata.X.toarray()
    random_projection(counts_adata, n_top_genes=100, n_comps=8, key_added="a")
    random_projection(counts_adata, n_top_genes=100, n_comps=8, key_added="b")
    random_projection(counts_adata, n_top_genes=100, n_comps=8, key_added="c", seed=1)
    assert counts_adata.obsm["a"].shape == (counts_adata.n_obs, 8)
    np.testing.assert_array_equal(counts_adata.obsm["a"], counts_adata.obsm["b"])
    assert not np.allclose(counts_adata.obsm["a"], counts_adata.obsm["c"])
    np.testing.assert_array_equal(counts_adata.X.toarray(), x_before)
