"""scfm.tl.integrate(method="vae"): a batch-conditioned count VAE that reads the frozen embedding beside the genes."""

from __future__ import annotations

import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
import torch
from conftest import assert_unchanged, make_batched_counts, snapshot
from torch import nn

import scfm
from scfm.models import CheckpointError, CountVAEModel
from scfm.models.base import default_vae_epochs, fit_count_vae
from scfm.nn import BatchConditionedCountVAE

QUICK = {"progress": False, "device": "cpu"}


def knn_accuracy(embedding: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    return float(cross_val_score(KNeighborsClassifier(k), embedding, labels, cv=5).mean())


@pytest.fixture(scope="module")
def planted(pbmc_raw_genes):
    return make_batched_counts(pbmc_raw_genes[:300], n_cells=240)


def test_vae_mixes_planted_batches_and_keeps_the_types(planted):
    """The batch programme and depth of ``b1`` separate the batches completely in log-PCA; the decoder explains them,
    so the latent mixes the batches while the planted types stay apart."""
    adata = planted.copy()
    scfm.tl.integrate(adata, "batch", key_added="vae", **QUICK)  # the defaults: genes only, 400 epochs
    logged = adata.copy()
    sc.pp.normalize_total(logged)
    sc.pp.log1p(logged)
    sc.pp.pca(logged, n_comps=20)
    batch = adata.obs["batch"].astype(str).to_numpy()
    cell_type = adata.obs["cell_type"].astype(str).to_numpy()
    assert knn_accuracy(logged.obsm["X_pca"], batch) > 0.95
    assert knn_accuracy(adata.obsm["vae"], batch) < 0.75  # chance: 0.5
    assert knn_accuracy(adata.obsm["vae"], cell_type) > 0.95
    record = adata.uns["scfm"]["vae"]
    assert record["method"] == "vae" and record["batches"] == ["b0", "b1"]
    assert record["max_epochs"] == 400 and record["embedding_dim"] == 0 and record["genes_used"] == 300
    assert record["norm"] == ["layer", "batch"]  # encoder, decoder
    assert "model" not in record  # no model is loaded when the embedding is not read


def test_vae_reads_the_frozen_embedding_of_the_model(planted, tiny_tgpt_checkpoint):
    adata = planted.copy()
    before = set(adata.obsm)
    with pytest.raises(ValueError, match="embedding_weight is 0"):
        scfm.tl.integrate(adata, "batch", model=tiny_tgpt_checkpoint, max_epochs=1, **QUICK)
    assert set(adata.obsm) == before
    scfm.tl.integrate(
        adata, "batch", model=tiny_tgpt_checkpoint, embedding_weight=1.0, max_epochs=3, n_latent=8, **QUICK
    )
    assert set(adata.obsm) - before == {"X_scfm_integrated"}
    assert adata.obsm["X_scfm_integrated"].shape == (240, 8)
    assert adata.obsm["X_scfm_integrated"].dtype == np.float32
    record = adata.uns["scfm"]["X_scfm_integrated"]
    assert record["family"] == "tgpt" and record["embedding_dim"] > 0 and record["embedding_weight"] == 1.0
    assert record["genes_matched"] > 0 and record["n_top_genes"] == 2000


def test_vae_result_ignores_cell_order_and_repeats_with_the_seed(planted):
    settings = {"max_epochs": 4, "n_latent": 5, **QUICK}
    first = scfm.tl.integrate(planted, "batch", copy=True, **settings).obsm["X_scfm_integrated"]
    again = scfm.tl.integrate(planted, "batch", copy=True, **settings).obsm["X_scfm_integrated"]
    np.testing.assert_array_equal(first, again)
    order = np.random.default_rng(1).permutation(planted.n_obs)
    shuffled = scfm.tl.integrate(planted[order].copy(), "batch", copy=True, **settings)
    np.testing.assert_allclose(shuffled.obsm["X_scfm_integrated"], first[order], atol=1e-5)
    other_seed = scfm.tl.integrate(planted, "batch", copy=True, seed=1, **settings).obsm["X_scfm_integrated"]
    assert not np.allclose(other_seed, first)


def test_vae_refuses_bad_input_and_leaves_adata_unchanged(planted, tiny_checkpoint):
    adata = planted.copy()
    adata.obs["single"] = "only"
    before = snapshot(adata)
    quick = {"max_epochs": 1, **QUICK}
    with pytest.raises(ValueError, match="distinct value"):
        scfm.tl.integrate(adata, "single", **quick)
    with pytest.raises(ValueError, match="labels_key, cls_weight only apply to method='finetune'"):
        scfm.tl.integrate(adata, "batch", labels_key="cell_type", cls_weight=2.0, **quick)
    with pytest.raises(ValueError, match="n_latent only apply to method='vae'"):
        scfm.tl.integrate(adata, "batch", method="finetune", model=tiny_checkpoint, n_latent=5, max_epochs=1)
    with pytest.raises(ValueError, match="method must be"):
        scfm.tl.integrate(adata, "batch", method="scvi", **quick)
    with pytest.raises(ValueError, match="n_latent must be >= 1"):
        scfm.tl.integrate(adata, "batch", n_latent=0, **quick)
    adata.layers["log"] = sp.csr_matrix(np.log1p(adata.X.toarray() / 7.0).astype(np.float32))
    before = snapshot(adata)
    with pytest.raises(ValueError, match=r"looks log-normalised.*models counts"):
        scfm.tl.integrate(adata, "batch", layer="log", **quick)
    assert_unchanged(adata, before)


def test_fit_count_vae_checks_its_arrays():
    counts = sp.csr_matrix(np.ones((10, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="one batch code per cell"):
        fit_count_vae(counts, np.zeros(9), max_epochs=1)
    with pytest.raises(ValueError, match="side features"):
        fit_count_vae(counts, np.zeros(10), np.zeros((9, 2)), max_epochs=1)
    assert default_vae_epochs(240) == 400 and default_vae_epochs(100_000) == 80


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, (False, nn.LayerNorm, nn.BatchNorm1d, 0.1)),
        ({"encode_batch": True}, (True, nn.LayerNorm, nn.LayerNorm, 0.2)),
        ({"norm": "layer", "dropout": 0.2}, (False, nn.LayerNorm, nn.LayerNorm, 0.2)),
        ({"encode_batch": True, "norm": "batch"}, (True, nn.BatchNorm1d, nn.BatchNorm1d, 0.2)),
        ({"norm": ("batch", "layer_affine")}, (False, nn.BatchNorm1d, nn.LayerNorm, 0.1)),
    ],
)
def test_fit_count_vae_settings_and_their_overrides(settings, expected):
    counts = sp.csr_matrix(np.random.default_rng(0).poisson(2.0, (12, 5)).astype(np.float32))
    module = fit_count_vae(counts, np.arange(12) % 2, max_epochs=1, device="cpu", **settings).module
    norms = type(module.encoder.norms[0]), type(module.decoder.norms[0])
    assert (module.encode_batch, *norms, module.encoder.dropout.p) == expected
    assert all(
        norm.elementwise_affine == (settings.get("norm") == ("batch", "layer_affine"))
        for norm in module.decoder.norms
        if isinstance(norm, nn.LayerNorm)
    )


def test_count_vae_refuses_an_unknown_norm():
    with pytest.raises(ValueError, match="norm must be one of"):
        BatchConditionedCountVAE(6, 0, 2, norm="group")
    with pytest.raises(ValueError, match="norm must be one of"):
        BatchConditionedCountVAE(6, 0, 2, norm=("layer", "rms"))


@pytest.fixture(scope="module")
def reference_vae(planted):
    reference = planted.copy()
    model = scfm.tl.integrate(reference, "batch", max_epochs=150, return_model=True, **QUICK)
    return reference, model


def held_out_cells(pbmc_raw_genes) -> sc.AnnData:
    """120 new cells of the planted types and batch programmes (cells 240-359 of a larger draw), in a new batch."""
    query = make_batched_counts(pbmc_raw_genes[:300], n_cells=360)[240:].copy()
    query.obs["batch"] = "new_lab"
    query.obs_names = [f"query{i}" for i in range(query.n_obs)]
    return query


def test_vae_maps_a_new_batch_onto_the_reference(reference_vae, pbmc_raw_genes):
    from sklearn.neighbors import KNeighborsClassifier

    reference, model = reference_vae
    assert isinstance(model, CountVAEModel) and model.batches == ("b0", "b1") and len(model.genes) == 300
    query = held_out_cells(pbmc_raw_genes)
    genes = np.random.default_rng(0).permutation(query.n_vars)[:270]  # shuffled, 30 reference genes missing
    query = query[:, genes].copy()
    scfm.tl.integrate(query, "batch", model=model, **QUICK)
    mapped = query.obsm["X_scfm_integrated"]
    assert mapped.shape == (120, 30) and mapped.dtype == np.float32
    classifier = KNeighborsClassifier(10).fit(reference.obsm["X_scfm_integrated"], reference.obs["cell_type"])
    assert (classifier.predict(mapped) == query.obs["cell_type"].to_numpy()).mean() > 0.9
    record = query.uns["scfm"]["X_scfm_integrated"]
    assert record["mode"] == "query_mapping" and record["batches"] == ["new_lab"]
    assert record["reference_batches"] == ["b0", "b1"] and record["genes_found"] == 270 and record["genes_used"] == 300


def test_vae_mapping_the_reference_reproduces_its_latent_and_survives_saving(reference_vae, tmp_path):
    reference, model = reference_vae
    again = scfm.tl.integrate(reference, "batch", model=model, copy=True, **QUICK).obsm["X_scfm_integrated"]
    np.testing.assert_allclose(again, reference.obsm["X_scfm_integrated"], atol=1e-5)
    directory = model.save(tmp_path / "vae")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save(directory)
    loaded = scfm.tl.integrate(reference, "batch", model=str(directory), copy=True, **QUICK)
    np.testing.assert_array_equal(loaded.obsm["X_scfm_integrated"], again)
    assert CountVAEModel.load(directory).record == model.record
    assert CountVAEModel.load(directory).module.norm == model.module.norm == ("layer", "batch")
    (directory / "count_vae.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(CheckpointError, match="not a readable count-VAE directory"):
        CountVAEModel.load(directory)


def test_vae_mapping_refuses_what_does_not_apply(reference_vae, pbmc_raw_genes):
    _, model = reference_vae
    query = held_out_cells(pbmc_raw_genes)
    before = snapshot(query)
    with pytest.raises(ValueError, match=r"n_latent, max_epochs only apply to fitting a VAE .*trains nothing"):
        scfm.tl.integrate(query, "batch", model=model, max_epochs=5, n_latent=4, **QUICK)
    with pytest.raises(ValueError, match="model is a count VAE"):
        scfm.tl.integrate(query, "batch", model=model, method="finetune", **QUICK)
    with pytest.raises(ValueError, match="holds 100 of the reference model's 300 genes"):
        scfm.tl.integrate(query[:, :100].copy(), "batch", model=model, **QUICK)
    with pytest.raises(ValueError, match="return_model=True needs embedding_weight=0"):
        scfm.tl.integrate(query, "batch", embedding_weight=1.0, return_model=True, **QUICK)
    assert_unchanged(query, before)


def test_vae_with_encoded_batch_trains_only_the_query_batches(planted, pbmc_raw_genes, tmp_path):
    """scArches' surgery: the new batch gets its own columns, trained alone; reference cells encode as before."""
    from sklearn.neighbors import KNeighborsClassifier

    reference = planted.copy()
    model = scfm.tl.integrate(reference, "batch", encode_batch=True, max_epochs=150, return_model=True, **QUICK)
    assert model.encodes_batch and reference.uns["scfm"]["X_scfm_integrated"]["encode_batch"] is True
    query = held_out_cells(pbmc_raw_genes)
    before = {key: value.detach().clone() for key, value in model.module.state_dict().items()}
    mapped = scfm.tl.integrate(query, "batch", model=model, max_epochs=30, return_model=True, **QUICK)
    assert all(torch.equal(value, model.module.state_dict()[key]) for key, value in before.items())  # untouched
    assert mapped.batches == ("b0", "b1", "new_lab")
    names = {id(module): name for name, module in mapped.module.named_modules()}
    injected = [f"{names[id(layer)]}.weight" for layer in mapped.module.batch_input_layers()]
    assert "encoder.linears.0.weight" in injected and "decoder.linears.0.weight" in injected
    for name in injected:
        old, new = before[name], mapped.module.state_dict()[name]
        torch.testing.assert_close(new[:, :-1], old)  # every reference column and gene weight frozen
        assert not torch.allclose(new[:, -1], old[:, -2:].mean(dim=1))  # the new batch's column moved from its start
    frozen = {key: value for key, value in before.items() if key not in injected}
    assert all(torch.equal(value, mapped.module.state_dict()[key]) for key, value in frozen.items())
    record = query.uns["scfm"]["X_scfm_integrated"]
    assert record["query_training"]["new_batches"] == ["new_lab"] and record["query_training"]["epochs"] == 30
    classifier = KNeighborsClassifier(10).fit(reference.obsm["X_scfm_integrated"], reference.obs["cell_type"])
    assert (classifier.predict(query.obsm["X_scfm_integrated"]) == query.obs["cell_type"].to_numpy()).mean() > 0.9
    again = scfm.tl.integrate(reference, "batch", model=mapped.save(tmp_path / "mapped"), copy=True, **QUICK)
    np.testing.assert_allclose(again.obsm["X_scfm_integrated"], reference.obsm["X_scfm_integrated"], atol=1e-5)


def test_new_batches_start_at_the_mean_of_the_reference_columns():
    torch.manual_seed(0)
    module = BatchConditionedCountVAE(6, 0, 3, n_latent=2, n_hidden=4, encode_batch=True, norm="layer").eval()
    extended = module.with_new_batches(2).eval()
    counts = torch.poisson(torch.full((5, 6), 3.0))
    batch = torch.tensor([0, 1, 2, 1, 0])
    torch.testing.assert_close(extended.encode(counts, batch=batch)[0], module.encode(counts, batch=batch)[0])
    for layer, extended_layer in zip(module.batch_input_layers(), extended.batch_input_layers(), strict=True):
        torch.testing.assert_close(extended_layer.weight[:, -1], layer.weight[:, -3:].mean(dim=1))
    with pytest.raises(ValueError, match="reads the batch; pass batch="):
        module.encode(counts)
