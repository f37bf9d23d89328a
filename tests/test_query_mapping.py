"""Reference mapping of query batches (scArches-style): SCGPT.prepare_query_anndata / SCGPT.load_query_data."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from conftest import assert_unchanged, make_batched_counts, snapshot

from scfm.models import SCGPT

TRAIN = {"batch_size": 16, "accelerator": "cpu", "enable_progress_bar": False, "lr": 3e-3}
BATCH_TENSORS = ("batch_embedding.embedding.weight", "batch_discriminator.classifier.out.weight")


def _query(genes: list[str], seed: int = 2, n_cells: int = 90) -> ad.AnnData:
    """Cells of a new batch ``q0`` (another draw, with the planted batch programme of ``b1``)."""
    cells = make_batched_counts(genes, n_cells=2 * n_cells, seed=seed)
    query = cells[cells.obs["batch"] == "b1"].copy()
    query.obs["batch"] = pd.Categorical(["q0"] * query.n_obs)
    query.obs_names = [f"q{i}" for i in range(query.n_obs)]
    return query


@pytest.fixture(scope="module")
def reference_model(tiny_checkpoint, pbmc_raw_genes):
    """A tiny model fine-tuned on batches b0 and b1 with batch embeddings, DSBN and a batch discriminator."""
    torch.manual_seed(0)
    reference = make_batched_counts(pbmc_raw_genes[:300], n_cells=180)
    model = SCGPT.for_finetuning(
        tiny_checkpoint,
        reference,
        batch_key="batch",
        use_batch_embeddings=True,
        batch_discriminator=True,
        domain_batchnorm=True,
    )
    model.train(max_epochs=1, dar_weight=1.0, **TRAIN)
    return model


@pytest.fixture
def query(pbmc_raw_genes):
    """A query lacking 20 of the reference's genes, with 3 genes the reference never saw, in another gene order."""
    genes = pbmc_raw_genes[:300]
    cells = _query(genes)
    keep = [g for g in genes if g not in set(genes[100:120])]
    extra = _query(pbmc_raw_genes[300:303])
    cells = cells[:, keep].copy()
    cells = ad.AnnData(
        X=sp.hstack([cells.X, extra.X], "csr"),
        obs=cells.obs,
        var=pd.DataFrame(index=keep + list(pbmc_raw_genes[300:303])),
    )
    order = np.random.default_rng(0).permutation(cells.n_vars)
    return cells[:, order].copy()


def _state(model) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in model.module.state_dict().items()}


def test_prepare_query_anndata_pads_and_sorts_like_scvi(reference_model, query, pbmc_raw_genes):
    genes = SCGPT.prepare_query_anndata(query, reference_model, return_reference_var_names=True)
    assert list(genes) == list(reference_model.adata.var_names)
    before = snapshot(query)
    prepared = SCGPT.prepare_query_anndata(query, reference_model, inplace=False)
    assert_unchanged(query, before)  # inplace=False leaves the query as it was
    assert list(prepared.var_names) == list(genes)
    padded = prepared.var["scfm_padded"].to_numpy()
    assert padded.sum() == 20 and set(prepared.var_names[padded]) == set(pbmc_raw_genes[100:120])
    assert prepared[:, padded].X.sum() == 0
    shared = list(prepared.var_names[~padded])
    np.testing.assert_array_equal(prepared[:, shared].X.toarray(), query[:, shared].X.toarray())
    assert list(prepared.obs_names) == list(query.obs_names)
    assert SCGPT.prepare_query_anndata(query, reference_model) is None  # inplace: the same object is rearranged
    assert list(query.var_names) == list(genes) and query.var["scfm_padded"].sum() == 20


def test_load_query_data_extends_batches_and_trains_only_new_parameters(reference_model, query):
    SCGPT.prepare_query_anndata(query, reference_model)
    reference_state = _state(reference_model)
    model = SCGPT.load_query_data(query, reference_model)
    assert model.config.batch_categories == ["b0", "b1", "q0"] and model.config.n_batches == 3
    assert model.arches_["new_batches"] == ["q0"] and not model.is_trained_
    mapping = model.adata_manager.get_state_registry("batch").categorical_mapping
    assert [str(b) for b in mapping] == ["b0", "b1", "q0"]
    assert (model.adata_manager.get_from_registry("batch").ravel() == 2).all()
    assert set(model.arches_["trainable"]) == {
        "batch_embedding.embedding.weight",
        "batch_discriminator.classifier.out.weight",
        "batch_discriminator.classifier.out.bias",
        "domain_batchnorm.norms.2.weight",
        "domain_batchnorm.norms.2.bias",
    }
    start = _state(model)
    for key in BATCH_TENSORS:  # reference rows copied; the new row starts at their mean
        np.testing.assert_array_equal(start[key][:2], reference_state[key])
        np.testing.assert_allclose(start[key][2], reference_state[key].mean(0), atol=1e-6)
    model.train(max_epochs=2, dar_weight=1.0, **TRAIN)
    assert model.is_trained_
    end = _state(model)
    for key, value in start.items():
        if key.endswith("num_batches_tracked"):
            continue  # a counter, not a statistic
        if key in BATCH_TENSORS or key == "batch_discriminator.classifier.out.bias":
            np.testing.assert_array_equal(end[key][:2], value[:2], err_msg=key)
            assert not torch.equal(end[key][2], value[2]), key
        elif key.startswith("domain_batchnorm.norms.2."):
            assert not torch.equal(end[key], value), key
        else:
            np.testing.assert_array_equal(end[key], value, err_msg=key)
    for key, value in reference_state.items():  # the reference model itself is untouched
        np.testing.assert_array_equal(reference_model.module.state_dict()[key], value, err_msg=key)
    embedding = model.get_latent_representation(device="cpu")
    assert embedding.shape == (query.n_obs, 32) and np.isfinite(embedding).all()
    # the reference's cells (its batches, its genes) embed exactly as with the reference model
    reference_cells = reference_model.adata
    np.testing.assert_allclose(
        model.get_latent_representation(reference_cells, device="cpu"),
        reference_model.get_latent_representation(device="cpu"),
        atol=1e-5,
    )


def test_query_model_saves_and_loads(reference_model, query, tmp_path):
    SCGPT.prepare_query_anndata(query, reference_model)
    model = SCGPT.load_query_data(query, reference_model)
    model.train(max_epochs=1, **TRAIN)
    expected = model.get_latent_representation(device="cpu")
    path = model.save(tmp_path / "query_model")
    reloaded = SCGPT.load(path, query.copy(), accelerator="cpu")
    assert reloaded.config.batch_categories == ["b0", "b1", "q0"]
    np.testing.assert_allclose(reloaded.get_latent_representation(device="cpu"), expected, atol=1e-5)


def test_reference_from_a_checkpoint_directory(reference_model, query, tmp_path):
    path = reference_model.save(tmp_path / "reference")
    prepared = SCGPT.prepare_query_anndata(query, str(path), inplace=False)
    assert list(prepared.var_names) == list(reference_model.adata.var_names)
    model = SCGPT.load_query_data(prepared, path, unfrozen=True)
    assert model.config.batch_categories == ["b0", "b1", "q0"]
    assert len(model.arches_["trainable"]) == len(list(model.module.parameters()))
    model.train(max_epochs=1, weight_decay=0.01, **TRAIN)  # unfrozen: weight decay is allowed
    assert model.get_latent_representation(device="cpu").shape == (prepared.n_obs, 32)


def test_query_with_only_reference_batches_has_nothing_to_train(reference_model, pbmc_raw_genes):
    cells = make_batched_counts(pbmc_raw_genes[:300], n_cells=60, seed=5)
    model = SCGPT.load_query_data(cells, reference_model)
    assert model.arches_["new_batches"] == [] and model.config.batch_categories == ["b0", "b1"]
    with pytest.raises(ValueError, match="nothing to train"):
        model.train(max_epochs=1, **TRAIN)
    assert model.get_latent_representation(device="cpu").shape == (60, 32)


def test_bad_inputs(reference_model, query, tiny_checkpoint, counts_adata, pbmc_raw_genes):
    before = snapshot(query)
    foreign = query.copy()
    foreign.var_names = [f"NOTAGENE{i}" for i in range(foreign.n_vars)]
    with pytest.raises(ValueError, match="none of the reference's 300 genes"):
        SCGPT.prepare_query_anndata(foreign, reference_model)
    with pytest.raises(ValueError, match="none of the reference's 300 genes"):
        SCGPT.load_query_data(foreign, reference_model)
    plain = SCGPT.from_pretrained(tiny_checkpoint, counts_adata)
    with pytest.raises(ValueError, match="not fine-tuned with batch-specific parts"):
        SCGPT.load_query_data(query, plain)
    with pytest.raises(ValueError, match="not fine-tuned with batch-specific parts"):
        SCGPT.load_query_data(query, tiny_checkpoint)
    no_batch = query.copy()
    no_batch.obs = no_batch.obs.rename(columns={"batch": "donor"})
    with pytest.raises(KeyError, match="batch_key='batch'"):
        SCGPT.load_query_data(no_batch, reference_model)
    missing = query.copy()
    missing.obs["batch"] = missing.obs["batch"].astype(object)
    missing.obs.iloc[0, missing.obs.columns.get_loc("batch")] = None
    with pytest.raises(ValueError, match="missing values"):
        SCGPT.load_query_data(missing, reference_model)
    with pytest.raises(ValueError, match="lacks 20 of the reference's 300 genes"):
        SCGPT.load_query_data(query, reference_model, inplace_subset_query_vars=True)
    with pytest.raises(TypeError, match="reference_model must be a SCGPT model or a checkpoint directory"):
        SCGPT.load_query_data(query, object())
    assert_unchanged(query, before)
    assert not any(column.startswith("_scvi") for column in query.obs.columns)
    SCGPT.prepare_query_anndata(query, reference_model)
    model = SCGPT.load_query_data(query, reference_model)
    with pytest.raises(ValueError, match=r"weight_decay=0\.01 would shrink the frozen reference rows"):
        model.train(max_epochs=1, weight_decay=0.01, **TRAIN)


def test_unseen_batch_error_points_to_load_query_data(reference_model, query):
    SCGPT.prepare_query_anndata(query, reference_model)
    with pytest.raises(ValueError, match=r"not trained on: \['q0'\].*SCGPT.load_query_data"):
        reference_model.get_latent_representation(query, device="cpu")


def test_tl_integrate_maps_a_query_onto_a_finetuned_model(tiny_checkpoint, pbmc_raw_genes, tmp_path):
    import scfm

    genes = pbmc_raw_genes[:300]
    reference = make_batched_counts(genes, n_cells=120)
    fast = {"batch_size": 16, "lr": 3e-3, "progress": False, "device": "cpu", "n_top_genes": 60}
    model = scfm.tl.integrate(
        reference,
        "batch",
        method="finetune",
        model=tiny_checkpoint,
        domain_batchnorm=True,
        return_model=True,
        max_epochs=1,
        **fast,
    )
    query = _query(genes, n_cells=60)
    query.obs = query.obs.rename(columns={"batch": "sample"})  # the query's column may have another name
    before = snapshot(query)
    mapped = scfm.tl.integrate(query, "sample", model=model, max_epochs=1, return_model=True, **fast)
    assert set(snapshot(query)["obsm"]) - set(before["obsm"]) == {"X_scfm_integrated"}
    assert query.obsm["X_scfm_integrated"].shape == (60, 32)
    record = query.uns["scfm"]["X_scfm_integrated"]
    assert record["mode"] == "query_mapping" and record["new_batches"] == ["q0"]
    assert record["batches"] == ["b0", "b1", "q0"] and record["genes_from"] == "reference"
    assert record["genes_used"] == 60 and record["genes_padded"] == 0
    assert "domain_batchnorm.norms.2.weight" in record["trained"]
    np.testing.assert_allclose(
        query.obsm["X_scfm_integrated"], mapped.get_latent_representation(device="cpu", max_len=61), atol=1e-5
    )
    # the saved reference maps the same way; the query's genes are padded to the reference's
    path = model.save(tmp_path / "reference")
    partial = _query(genes, n_cells=60)[:, genes[:280]].copy()
    scfm.tl.integrate(partial, "batch", model=path, max_epochs=1, **fast)
    record = partial.uns["scfm"]["X_scfm_integrated"]
    assert record["mode"] == "query_mapping" and record["genes_used"] == 60
    assert record["genes_padded"] == sum(g not in set(genes[:280]) for g in model.adata.var_names)


def test_views_are_refused(reference_model, query):
    with pytest.raises(ValueError, match="not a view"):
        SCGPT.load_query_data(query[:10], reference_model)
    with pytest.raises(ValueError, match="not a view"):
        SCGPT.prepare_query_anndata(query[:10], reference_model)
