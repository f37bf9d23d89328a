"""Tests on the real data in ../shared/data (skipped when it is absent, e.g. on a user's machine)."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pytest

import scfm

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} not present"),
]


def test_embed_pancreas_mixed_counts_and_expected_counts():
    # three studies: integer UMI, integer read counts, and non-integer expected counts (Xin)
    adata = ad.read_h5ad(DATA / "integration" / "pancreas_3batches_cepo_small.h5ad")
    scfm.tl.embed(adata, model="scgpt", progress=False, max_len=256)
    record = adata.uns["scfm"]["X_scfm"]
    assert adata.obsm["X_scfm"].shape == (528, 128)
    assert record["genes_matched"] > 1300  # 1,341 of 1,403 with the compact 13,000-gene vocabulary
    assert record["n_empty_cells"] == 0
    assert record["n_subsampled_cells"] > 400  # most of these cells express more than 255 known genes
    assert scfm.bench.knn_accuracy(adata, "X_scfm", "cell_type") > 0.57  # above chance (share of beta cells)


def test_backed_corpus_rows_match_in_memory(tmp_path):
    path = DATA / "pretraining" / "human_extra_corpus.h5ad"
    backed = ad.read_h5ad(path, backed="r")
    subset = backed[:300].to_memory()
    subset.write_h5ad(tmp_path / "subset.h5ad")
    on_disk = ad.read_h5ad(tmp_path / "subset.h5ad", backed="r")
    scfm.tl.embed(subset, progress=False, block_size=64)
    scfm.tl.embed(on_disk, progress=False, batch_size=7)
    np.testing.assert_allclose(subset.obsm["X_scfm"], on_disk.obsm["X_scfm"], atol=1e-6)
    assert subset.uns["scfm"]["X_scfm"]["input_kind"] == "counts"


@pytest.mark.slow
def test_tgpt_bulk_features_on_tcga_melanoma_carry_survival_signal():
    bdata = ad.read_h5ad(DATA / "bulk" / "tcga_skcm_consica_472samples.h5ad")
    scfm.tl.bulk_features(bdata)
    record = bdata.uns["scfm"]["X_scfm_bulk"]
    assert record["input_scale"] == "log" and record["family"] == "tgpt"
    assert record["genes_matched"] > 600  # 666 of 2,454: the vocabulary keeps genes ranked high in single cells
    table = scfm.tl.associate(bdata, "X_scfm_bulk", duration_key="time", event_key="event", binary_keys=["BRAFV600."])
    scores = table.set_index(["outcome", "feature_set"])["mean"]
    assert scores["survival", "features"] > 0.55  # 0.5 is no signal
    assert scores["BRAFV600.", "features"] > 0.52
    assert table["n_samples"].iloc[0] == 458  # 14 tumours without follow-up dropped


def test_tgpt_refuses_probe_set_ids_with_a_mapping_hint():
    bdata = ad.read_h5ad(DATA / "bulk" / "breast_cancer_GSE7390_desmedt2007_sksurv.h5ad")
    with pytest.raises(ValueError, match="probe-set ids"):
        scfm.tl.bulk_features(bdata)
    assert "X_scfm_bulk" not in bdata.obsm


@pytest.mark.slow
def test_integrate_pancreas_improves_bio_conservation_over_zero_shot():
    """Fine-tuned integration scored by scib-metrics beside the zero-shot embedding (about 4 min: `pytest -m slow`)."""
    import scipy.sparse as sp

    adata = ad.read_h5ad(DATA / "integration" / "pancreas_3batches_cepo_small.h5ad")
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    scfm.tl.embed(adata, progress=False)
    scfm.tl.integrate(adata, "batch", method="finetune", max_epochs=10, progress=False)
    table = scfm.bench.integration(
        adata, "batch", "cell_type", methods=(), embeddings={"zero-shot": "X_scfm", "integrated": "X_scfm_integrated"}
    )
    bio = table[table.metric == "Bio conservation"].set_index("method")["value"]
    assert bio["integrated"] > bio["zero-shot"] + 0.1, bio  # measured: 0.51 vs 0.33


def test_cellplm_spatial_embedding_and_imputation_on_held_out_osmfish():
    # the right half (x >= median) of the osmFISH section was held out from the bundled model's pretraining
    adata = ad.read_h5ad(DATA / "spatial" / "osmfish_codeluppi2018_mouse_sscortex.h5ad")
    x = adata.obsm["spatial"][:, 0]
    adata = adata[(x >= np.median(x)) & adata.obs["valid"].astype(bool).to_numpy()].copy()
    scfm.tl.embed(adata, model="cellplm", spatial_key="spatial", progress=False, min_genes=10)
    record = adata.uns["scfm"]["X_scfm"]
    assert record["genes_matched"] == 33  # mouse symbols meet the upper-cased panel case-insensitively
    assert record["n_sentences"] >= 4
    assert scfm.bench.knn_accuracy(adata, "X_scfm", "region") > 0.35  # 0.45 measured; majority region share 0.27
    panel = list(adata.var_names)
    held_out, visible = panel[:3], panel[3:]
    query = adata[:, visible].copy()
    scfm.tl.impute(query, genes=held_out, model="cellplm", spatial_key="spatial", progress=False)
    imputed = query.obsm["scfm_imputed"]
    assert list(imputed.columns) == held_out
    assert np.isfinite(imputed.to_numpy()).all() and (imputed.to_numpy() >= 0).all()


def test_bundled_scmulan_annotates_held_out_sorted_pbmc_zero_shot():
    """The documented held-out split (never trained on): generation-based labels well above the majority class."""
    from scfm.bench._scmulan_data import scmulan_corpus

    _, held = scmulan_corpus(DATA)
    query = held["pbmc_sorted"]
    scfm.tl.annotate(query, model="scmulan", progress=False)
    accuracy = float((query.obs["scfm_cell_type"].astype(str) == query.obs["cell_type"]).mean())
    majority = float(query.obs["cell_type"].value_counts(normalize=True).max())
    assert accuracy > majority + 0.3, (accuracy, majority)  # 0.81 against 0.36 (docs/benchmarks.md)
