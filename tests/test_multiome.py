"""Multi-omic integration through MuData (scGPT recipe): paired and mosaic RNA+ATAC / RNA+protein, bad input."""

from __future__ import annotations

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import one_thread
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier

import scfm
from scfm.data._mudata import parse_peak_names, read_modalities, select_features
from scfm.models.scgpt import SCGPTMultiome

N_PER = 30  # cells per type and batch
FAST = {"max_epochs": 6, "batch_size": 16, "lr": 2e-3, "progress": False}


def synthetic_mudata(genes, *, other: str = "atac", mosaic: bool = False, seed: int = 0) -> md.MuData:
    """Three planted types x two batches; RNA and the other modality each carry part of the type signal.

    RNA over-expresses a block of genes in types 0 and 1 (type 2 looks like type 1 in RNA, only weaker); the other
    modality opens a block of peaks (or raises proteins) in types 1 and 2, so each modality alone confuses two
    types and the pair separates all three. Batch ``b1`` scales genes by a random factor and raises every peak's
    accessibility. ``mosaic=True`` hides the other modality in half of batch ``b1`` and RNA in the other half.
    """
    rng = np.random.default_rng(seed)
    n_genes, n_peaks, n_prot = len(genes), 150, 12
    types = np.tile(np.repeat(np.arange(3), N_PER), 2)
    batches = np.repeat([0, 1], 3 * N_PER)
    n = len(types)
    rate = np.ones((n, n_genes))
    rate[types == 0, :20] *= 6.0
    rate[types == 1, 20:40] *= 6.0
    rate[types == 2, 20:40] *= 6.0
    rate *= np.where(batches[:, None] == 1, rng.uniform(0.3, 3.0, n_genes)[None], 1.0)
    rna = rng.poisson(rate).astype(np.float32)
    if other == "atac":
        p = np.full((n, n_peaks), 0.06)
        p[types == 1, :25] = 0.6
        p[types == 2, 25:50] = 0.6
        p = np.minimum(p * np.where(batches[:, None] == 1, 1.6, 1.0), 1.0)
        values = (rng.random((n, n_peaks)) < p) * rng.integers(1, 3, (n, n_peaks))
        names = [f"chr{1 + i % 3}:{1000 * i}-{1000 * i + 500}" for i in range(n_peaks)]
        key = "atac"
    else:
        r = np.full((n, n_prot), 10.0)
        r[types == 1, :4] *= 8.0
        r[types == 2, 4:8] *= 8.0
        values = rng.poisson(r)
        names = [f"CD{i}" for i in range(n_prot)]
        key = "prot"
    obs = pd.DataFrame(
        {"cell_type": [f"T{t}" for t in types], "batch": [f"b{b}" for b in batches]},
        index=[f"c{i}" for i in range(n)],
    )
    rna_ad = ad.AnnData(sp.csr_matrix(rna), obs=obs.copy(), var=pd.DataFrame(index=list(genes)))
    other_ad = ad.AnnData(sp.csr_matrix(values.astype(np.float32)), obs=obs.copy(), var=pd.DataFrame(index=names))
    if mosaic:
        half = np.flatnonzero(batches == 1)
        rna_only, other_only = half[::2], half[1::2]
        rna_ad = rna_ad[np.setdiff1d(np.arange(n), other_only)].copy()
        other_ad = other_ad[np.setdiff1d(np.arange(n), rna_only)].copy()
    with md.set_options(pull_on_update=False):
        mdata = md.MuData({"rna": rna_ad, key: other_ad})
    mdata.obs["cell_type"] = obs.loc[mdata.obs_names, "cell_type"].to_numpy()
    mdata.obs["batch"] = obs.loc[mdata.obs_names, "batch"].to_numpy()
    return mdata


def knn_accuracy(embedding: np.ndarray, labels, rows=None) -> float:
    rows = np.arange(len(labels)) if rows is None else rows
    classifier = KNeighborsClassifier(n_neighbors=10)
    return float(cross_val_score(classifier, embedding[rows], np.asarray(labels)[rows], cv=5).mean())


def batch_mixing(embedding: np.ndarray, batches) -> float:
    """kNN accuracy of predicting the batch (0.5 = perfectly mixed two balanced batches)."""
    return knn_accuracy(embedding, batches)


@pytest.fixture(scope="module")
def genes(pbmc_raw_genes):
    return pbmc_raw_genes[:120]


@pytest.fixture(scope="module")
def tiny_mean_checkpoint(tmp_path_factory, pbmc_raw_genes):
    """A tiny random-weight scGPT checkpoint that pools the cell embedding as the mean of its tokens (as the bundled
    model does); its vocabulary holds the synthetic genes."""
    import torch
    from conftest import TINY, make_counts

    from scfm.models import SCGPT

    torch.manual_seed(0)
    adata = make_counts(pbmc_raw_genes[:300])
    SCGPT.setup_anndata(adata)
    return SCGPT(adata, **TINY, cell_embedding="mean").save(tmp_path_factory.mktemp("ckpt") / "tiny_mean")


@pytest.fixture(scope="module")
def paired_result(genes, tiny_mean_checkpoint):
    mdata = synthetic_mudata(genes)
    with one_thread():
        model = scfm.tl.integrate_modalities(
            mdata, "batch", model=tiny_mean_checkpoint, modality_embeddings=True, return_model=True, **FAST
        )
    return mdata, model


@pytest.fixture(scope="module")
def mosaic_result(genes, tiny_mean_checkpoint):
    mdata = synthetic_mudata(genes, mosaic=True)
    with one_thread():
        scfm.tl.integrate_modalities(mdata, "batch", model=tiny_mean_checkpoint, modality_embeddings=True, **FAST)
    return mdata


def test_joint_embedding_separates_types_better_than_each_modality_and_mixes_batches(paired_result):
    mdata, _ = paired_result
    labels = mdata.obs["cell_type"].to_numpy()
    joint = knn_accuracy(mdata.obsm["X_scfm_multiome"], labels)
    rna = knn_accuracy(mdata.obsm["X_scfm_multiome_rna"], labels)
    atac = knn_accuracy(mdata.obsm["X_scfm_multiome_atac"], labels)
    assert joint > max(rna, atac) + 0.05, (joint, rna, atac)
    assert joint > 0.75
    assert batch_mixing(mdata.obsm["X_scfm_multiome"], mdata.obs["batch"].to_numpy()) < 0.9
    record = mdata.uns["scfm"]["X_scfm_multiome"]
    assert record["tool"] == "integrate_modalities" and record["atac_values"] == "binarised"
    assert record["mosaic"] is False and record["batch_discriminator"] is False
    assert record["features"]["rna"] == 120 and 0 < record["features"]["atac"] <= 150


def test_modalities_untouched_and_results_only_on_the_mudata(genes, tiny_checkpoint):
    mdata = synthetic_mudata(genes)
    before = {key: mod.copy() for key, mod in mdata.mod.items()}
    obs_before = mdata.obs.copy()
    with one_thread():
        out = scfm.tl.integrate(mdata, "batch", model=tiny_checkpoint, max_epochs=1, progress=False, copy=True)
    assert "X_scfm_integrated" not in mdata.obsm and "scfm" not in mdata.uns  # copy=True leaves the input alone
    assert out.obsm["X_scfm_integrated"].shape == (mdata.n_obs, 32)  # tl.integrate's key_added
    pd.testing.assert_frame_equal(mdata.obs, obs_before)
    for key, mod in mdata.mod.items():
        assert (mod.X != before[key].X).nnz == 0
        assert list(mod.obs.columns) == list(before[key].obs.columns) and not mod.obsm and "scfm" not in mod.uns


def test_mosaic_cells_land_with_their_type(mosaic_result):
    mdata = mosaic_result
    rna_present = mdata.obsmap["rna"] > 0
    atac_present = mdata.obsmap["atac"] > 0
    assert (~rna_present).any() and (~atac_present).any()
    embedding = mdata.obsm["X_scfm_multiome"]
    labels = mdata.obs["cell_type"].to_numpy()
    paired = np.flatnonzero(rna_present & atac_present)
    classifier = KNeighborsClassifier(n_neighbors=10).fit(embedding[paired], labels[paired])
    rna_only = np.flatnonzero(rna_present & ~atac_present)
    atac_only = np.flatnonzero(~rna_present & atac_present)
    # ATAC tells all three types apart: ATAC-only cells must land with their type (chance is 1/3)
    assert float((classifier.predict(embedding[atac_only]) == labels[atac_only]).mean()) > 0.55
    # RNA-only cells are embedded (finite) but not asserted to land with their type: on this synthetic data the tiny
    # random model's RNA-only embedding is at chance (docs/multiome.md, "Limits")
    assert np.isfinite(embedding[rna_only]).all()
    assert np.isnan(mdata.obsm["X_scfm_multiome_atac"][~atac_present]).all()
    assert not np.isnan(mdata.obsm["X_scfm_multiome_atac"][atac_present]).any()
    record = mdata.uns["scfm"]["X_scfm_multiome"]
    assert record["mosaic"] is True and record["batch_discriminator"] is True and record["weights"]["dar"] == 1.0
    assert record["modality_dropout"] == 0.3


def test_rna_protein_with_panels_that_differ_by_batch(genes, tiny_checkpoint):
    mdata = synthetic_mudata(genes, other="protein", mosaic=True)
    prot = mdata.mod["prot"]
    in_b1 = (prot.obs["batch"] == "b1").to_numpy()
    dense = prot.X.toarray()
    dense[np.flatnonzero(in_b1)[:, None], np.arange(8, 12)] = 0  # b1's panel lacks CD8..CD11
    prot.X = sp.csr_matrix(dense)
    with one_thread():
        model = scfm.tl.integrate_modalities(mdata, "batch", model=tiny_checkpoint, return_model=True, **FAST)
    panels = np.asarray(model.panels_["protein"])
    assert panels[0].all() and not panels[1, 8:].any() and panels[1, :8].all()
    assert np.isfinite(mdata.obsm["X_scfm_multiome"]).all()


def test_save_and_load_the_finetuned_model(paired_result, tmp_path, genes):
    _, model = paired_result
    expected = model.get_latent_representation()
    path = model.save(tmp_path / "multiome")
    fresh = synthetic_mudata(genes)
    loaded = SCGPTMultiome.load(path, fresh)
    np.testing.assert_allclose(loaded.get_latent_representation(), expected, atol=1e-5)
    with pytest.raises(scfm.models.CheckpointError, match="scgpt-multiome"):
        scfm.models.load_pretrained(path)
    with pytest.raises(FileExistsError):
        model.save(path)


def test_batches_unseen_at_training_time(paired_result, genes):
    _, model = paired_result
    other = synthetic_mudata(genes)
    other.obs["batch"] = other.obs["batch"].str.replace("b1", "b7")
    with pytest.raises(ValueError, match=r"batches the model was not trained on: \['b7'\]"):
        model.get_latent_representation(other)


def _unchanged(mdata, call, error, match):
    obs = mdata.obs.copy()
    keys = {key: (list(mod.obs.columns), dict(mod.uns)) for key, mod in mdata.mod.items()}
    with pytest.raises(error, match=match):
        call()
    pd.testing.assert_frame_equal(mdata.obs, obs)
    assert set(mdata.obsm) <= set(mdata.mod) and "scfm" not in mdata.uns  # mudata keeps presence masks in obsm
    assert {key: (list(mod.obs.columns), dict(mod.uns)) for key, mod in mdata.mod.items()} == keys


def test_bad_input_is_refused_and_the_mudata_is_untouched(genes, tiny_checkpoint):
    run = {"model": tiny_checkpoint, "max_epochs": 1, "progress": False}
    mdata = synthetic_mudata(genes)
    # a named modality missing
    _unchanged(
        mdata,
        lambda: scfm.tl.integrate_modalities(mdata, "batch", modalities={"rna": "rna", "atac": "peaks"}, **run),
        KeyError,
        r"modality 'peaks' .* not in mdata.mod \(it holds \['rna', 'atac'\]\)",
    )
    # peak names in another form
    bad = synthetic_mudata(genes)
    bad.mod["atac"].var_names = [f"peak{i}" for i in range(bad.mod["atac"].n_vars)]
    bad.update()
    _unchanged(bad, lambda: scfm.tl.integrate_modalities(bad, "batch", **run), ValueError, "chr:start-end")
    # non-count values
    logged = synthetic_mudata(genes)
    logged.mod["rna"].X = logged.mod["rna"].X.copy()
    logged.mod["rna"].X.data = np.log1p(logged.mod["rna"].X.data)
    _unchanged(logged, lambda: scfm.tl.integrate_modalities(logged, "batch", **run), ValueError, "not counts")
    # obs out of sync with the modalities
    stale = synthetic_mudata(genes)
    stale.mod["rna"] = stale.mod["rna"][:50].copy()
    _unchanged(stale, lambda: scfm.tl.integrate_modalities(stale, "batch", **run), ValueError, r"mdata.update\(\)")
    # no shared cells between modalities
    rna = mdata.mod["rna"][:90].copy()
    atac = mdata.mod["atac"][90:].copy()
    disjoint = md.MuData({"rna": rna, "atac": atac})
    disjoint.obs["batch"] = "b0"
    _unchanged(disjoint, lambda: scfm.tl.integrate_modalities(disjoint, **run), ValueError, "share no cells")
    # a batch_key that is only in a modality
    _unchanged(
        mdata, lambda: scfm.tl.integrate_modalities(mdata, "cell_type_x", **run), KeyError, "not a column of mdata.obs"
    )
    # AnnData-only argument through tl.integrate, and an AnnData given to integrate_modalities
    _unchanged(mdata, lambda: scfm.tl.integrate(mdata, "batch", gene_key="x", **run), ValueError, "integrate_modalit")
    with pytest.raises(TypeError, match=r"use scfm\.tl\.integrate for one modality"):
        scfm.tl.integrate_modalities(mdata.mod["rna"], "batch", **run)


def test_a_modality_with_no_features_left_after_selection(genes):
    mdata = synthetic_mudata(genes)
    mdata.mod["atac"].X = sp.csr_matrix(mdata.mod["atac"].shape, dtype=np.float32)
    data = read_modalities(mdata, {"rna": "rna", "atac": "atac"})
    with pytest.raises(ValueError, match=r"'atac' .* no features left after selection"):
        select_features(data["atac"], 100)
    _unchanged(
        mdata,
        lambda: scfm.tl.integrate_modalities(mdata, "batch", max_epochs=1, progress=False),
        ValueError,
        "no features left",
    )


def test_peak_names_in_both_forms():
    frame = parse_peak_names(["chr1:100-200", "chrX_5_90", "GL000194.1:1-20"])
    assert frame["chrom"].tolist() == ["chr1", "chrX", "GL000194.1"]
    assert frame["end"].tolist() == [200, 90, 20]
    with pytest.raises(ValueError, match="end is not after"):
        parse_peak_names(["chr1:200-100"])


def test_setup_mudata_registers_mudata_fields(genes):
    mdata = synthetic_mudata(genes, mosaic=True)
    SCGPTMultiome.setup_mudata(mdata, batch_key="batch", labels_key="cell_type")
    manager = SCGPTMultiome._get_most_recent_anndata_manager(mdata, required=True)
    fields = {field.registry_key: type(field).__name__ for field in manager.fields}
    assert fields["X"] == "MuDataLayerField" and fields["atac"] == "MuDataLayerField"
    assert fields["batch"] == "MuDataCategoricalObsField"
    assert manager.registry["setup_args"]["modalities"] == {"rna": "rna", "atac": "atac"}
    with pytest.raises(TypeError, match="setup_mudata"):
        SCGPTMultiome.setup_anndata(mdata.mod["rna"])


def test_multiome_config_checks_the_shared_fields_as_scgpt_does():
    from scfm.models.scgpt._multiome_module import SCGPTMultiomeConfig

    good = {"n_tokens": 20, "pad_id": 0, "cls_id": 1, "modalities": ["rna", "atac"]}
    assert SCGPTMultiomeConfig(**good).n_bins == 51
    for bad, message in (
        ({"n_bins": 2}, "n_bins must be >= 3"),
        ({"cls_id": 20}, "outside the vocabulary"),
        ({"d_model": 30, "n_heads": 4}, "not divisible"),
        ({"modalities": ["rna", "rna"]}, "modalities must be distinct"),
    ):
        with pytest.raises(ValueError, match=f"invalid SCGPTMultiome config: .*{message}"):
            SCGPTMultiomeConfig(**{**good, **bad})
