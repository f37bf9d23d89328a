"""scfm.bench baselines (Harmony, scVI, logistic regression), runners, and scfm.pl.benchmark."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import assert_unchanged, snapshot

from scfm.bench import annotation, harmony, hvg_pca, integration, logistic_regression, scvi_latent
from scfm.pl import benchmark


def knn_accuracy(adata, key: str, label: str) -> float:
    """5-fold accuracy of a 10-NN classifier of ``obs[label]`` on ``obsm[key]`` (batch: high = separated)."""
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    return float(cross_val_score(KNeighborsClassifier(10), adata.obsm[key], adata.obs[label].astype(str), cv=5).mean())


def test_harmony_reduces_batch_separation(batched_adata):
    before = snapshot(batched_adata)
    hvg_pca(batched_adata, n_comps=20)
    harmony(batched_adata, "batch", basis="X_hvg_pca")
    assert batched_adata.obsm["X_harmony"].shape == (240, 20)
    assert knn_accuracy(batched_adata, "X_harmony", "batch") < knn_accuracy(batched_adata, "X_hvg_pca", "batch") - 0.1
    assert knn_accuracy(batched_adata, "X_harmony", "cell_type") > 0.9
    harmony(batched_adata, "batch", n_comps=20, key_added="X_h2")  # computes its own PCA
    np.testing.assert_allclose(batched_adata.obsm["X_h2"], batched_adata.obsm["X_harmony"], atol=1e-4)
    del batched_adata.obsm["X_hvg_pca"], batched_adata.obsm["X_harmony"], batched_adata.obsm["X_h2"]
    assert_unchanged(batched_adata, before)


def test_baselines_reject_bad_batches(batched_adata):
    with pytest.raises(KeyError, match="batch_key='donor'"):
        harmony(batched_adata, "donor")
    batched_adata.obs["one"] = "x"
    with pytest.raises(ValueError, match="at least 2"):
        harmony(batched_adata, "one")
    with pytest.raises(KeyError, match="basis='X_nope'"):
        harmony(batched_adata, "batch", basis="X_nope")


def test_scvi_latent_and_non_integer_counts(batched_adata):
    scvi_latent(batched_adata, "batch", n_latent=5, max_epochs=3)
    assert batched_adata.obsm["X_scvi"].shape == (240, 5)
    assert np.isfinite(batched_adata.obsm["X_scvi"]).all()
    batched_adata.X = batched_adata.X * 0.5
    with pytest.raises(ValueError, match="round_counts=True"):
        scvi_latent(batched_adata, "batch", max_epochs=1)


def test_logistic_regression_recovers_planted_types(batched_adata, pbmc_raw_genes):
    reference = batched_adata[batched_adata.obs["batch"] == "b0"].copy()
    query = batched_adata[batched_adata.obs["batch"] == "b1"].copy()
    query = query[:, ::-1].copy()  # different gene order
    logistic_regression(query, reference, "cell_type")
    accuracy = (query.obs["logreg_cell_type"].astype(str) == query.obs["cell_type"].astype(str)).mean()
    assert accuracy > 0.9
    assert query.obs["logreg_cell_type_confidence"].between(0, 1).all()
    with pytest.raises(ValueError, match="shares only"):
        logistic_regression(query[:, :10].copy(), reference, "cell_type")


def test_annotation_metrics_hand_example():
    import anndata as ad

    obs = pd.DataFrame(
        {"truth": ["a", "a", "b", "b"], "good": ["a", "a", "b", "b"], "half": ["a", "unknown", "a", "b"]},
        index=[f"c{i}" for i in range(4)],
    )
    table = annotation(ad.AnnData(obs=obs), "truth", {"good": "good", "half": "half"})
    value = table.set_index(["method", "metric"])["value"]
    assert value["good", "accuracy"] == 1.0 and value["good", "macro_f1"] == 1.0
    assert value["half", "accuracy"] == 0.5
    assert value["half", "unassigned_fraction"] == 0.25
    # class a: precision 1/2, recall 1/2 -> F1 0.5; class b: precision 1, recall 1/2 -> F1 2/3
    assert value["half", "f1[a]"] == pytest.approx(0.5)
    assert value["half", "f1[b]"] == pytest.approx(2 / 3)
    assert value["half", "macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)


def test_integration_runner_tidy_table_and_plot(batched_adata, tmp_path):
    rng = np.random.default_rng(0)
    batched_adata.obsm["X_noise"] = rng.normal(size=(batched_adata.n_obs, 10)).astype(np.float32)
    table = integration(
        batched_adata, "batch", "cell_type", methods=("hvg_pca", "harmony"), embeddings={"noise": "X_noise"}
    )
    assert set(table.columns) == {"method", "metric", "metric_type", "value"}
    totals = table[table.metric == "Total"].set_index("method")["value"]
    assert set(totals.index) == {"hvg_pca", "harmony", "noise"}
    assert totals["harmony"] > totals["noise"]
    assert (table[table.metric_type == "Time"]["value"] > 0).all()
    ax = benchmark(table, save=tmp_path / "scores.png", show=False)
    assert (tmp_path / "scores.png").stat().st_size > 0
    assert len(ax.figure.axes) == 1
    with pytest.raises(ValueError, match="not in the results"):
        benchmark(table, metrics=["nope"])
    with pytest.raises(ValueError, match="unknown baseline"):
        integration(batched_adata, "batch", "cell_type", methods=("umap",))


def test_failed_integration_run_leaves_the_baseline_slots_as_they_were(batched_adata):
    batched_adata.X = batched_adata.X * 0.5  # not counts: scVI refuses after HVG+PCA and Harmony have run
    kept = np.ones((batched_adata.n_obs, 2), dtype=np.float32)
    batched_adata.obsm["X_hvg_pca"] = kept
    with pytest.raises(ValueError, match="round_counts=True"):
        integration(batched_adata, "batch", "cell_type", methods=("hvg_pca", "harmony", "scvi"))
    assert batched_adata.obsm["X_hvg_pca"] is kept
    assert "X_harmony" not in batched_adata.obsm and "X_scvi" not in batched_adata.obsm
