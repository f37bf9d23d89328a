"""scfm.tl.integrate and scfm.tl.annotate on planted batches and cell types (tiny random-weight model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import assert_unchanged, snapshot

import scfm
from scfm.models import SCGPT, CheckpointError


def knn_accuracy(embedding: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    return float(cross_val_score(KNeighborsClassifier(k), embedding, labels, cv=5).mean())


FAST = {
    "method": "finetune",
    "max_epochs": 8,
    "batch_size": 16,
    "lr": 3e-3,
    "progress": False,
    "device": "cpu",
    "n_top_genes": 60,
}
# 60 highly variable genes fit the tiny model's 64-token context, so every cell is seen whole.
PLAIN = {"dar_weight": 0.0, "ecs_weight": 0.0}


@pytest.fixture(scope="module")
def integrated(tiny_checkpoint, pbmc_raw_genes):
    from conftest import make_batched_counts

    adata = make_batched_counts(pbmc_raw_genes[:300])
    settings = {**FAST, "max_epochs": 15}
    scfm.tl.integrate(
        adata, "batch", model=tiny_checkpoint, batch_embeddings=False, key_added="plain", **PLAIN, **settings
    )
    model = scfm.tl.integrate(
        adata, "batch", model=tiny_checkpoint, return_model=True, key_added="batch_aware", **PLAIN, **settings
    )
    return adata, model


def test_batch_embeddings_reduce_batch_information(integrated):
    """Same fine-tuning with and without batch embeddings at the heads: with them, the cell embedding need not
    carry the batch, and it carries less of it; the planted cell types stay recoverable."""
    adata, _ = integrated
    batch = adata.obs["batch"].astype(str).to_numpy()
    cell_type = adata.obs["cell_type"].astype(str).to_numpy()
    plain = knn_accuracy(adata.obsm["plain"], batch)
    aware = knn_accuracy(adata.obsm["batch_aware"], batch)
    assert aware < plain - 0.07, (plain, aware)
    assert knn_accuracy(adata.obsm["batch_aware"], cell_type) > 0.6  # chance: 1/3
    record = adata.uns["scfm"]["batch_aware"]
    assert record["tool"] == "integrate" and record["batches"] == ["b0", "b1"]
    assert record["genes_used"] == 60 and record["max_len"] == 61
    assert record["seconds_per_epoch"] > 0


def test_integrate_default_recipe_builds_the_discriminator(tiny_checkpoint, batched_adata):
    model = scfm.tl.integrate(
        batched_adata, "batch", model=tiny_checkpoint, return_model=True, **{**FAST, "max_epochs": 1}
    )
    assert "batch_discriminator.classifier.out.weight" in model.reinitialised_
    record = batched_adata.uns["scfm"]["X_scfm_integrated"]
    assert record["weights"]["dar"] == 1.0 and record["weights"]["ecs"] == 10.0
    assert np.isfinite(batched_adata.obsm["X_scfm_integrated"]).all()


def test_finetuned_model_saves_reloads_and_rejects_unseen_batches(integrated, tmp_path):
    adata, model = integrated
    path = model.save(tmp_path / "integrated")
    fresh = adata[:, model.adata.var_names].copy()  # the genes it was fine-tuned on
    reloaded = SCGPT.load(path, fresh, batch_key="batch")
    np.testing.assert_allclose(reloaded.get_latent_representation(device="cpu"), adata.obsm["batch_aware"], atol=1e-5)
    assert reloaded.config.batch_embedding and reloaded.config.batch_categories == ["b0", "b1"]
    other = adata.copy()
    other.obs["batch"] = other.obs["batch"].cat.rename_categories({"b1": "b7"})
    SCGPT.setup_anndata(other, batch_key="batch")
    with pytest.raises(ValueError, match=r"batches the model was not trained on: \['b7'\]"):
        reloaded.batch_codes(other)


def test_integrate_with_domain_batchnorm_and_labels(tiny_checkpoint, batched_adata):
    batched_adata.obs.loc[batched_adata.obs_names[::4], "cell_type"] = np.nan  # some cells unlabelled
    scfm.tl.integrate(
        batched_adata,
        "batch",
        model=tiny_checkpoint,
        labels_key="cell_type",
        domain_batchnorm=True,
        **{**FAST, "max_epochs": 2},
    )
    emb = batched_adata.obsm["X_scfm_integrated"]
    assert emb.shape == (240, 32) and np.isfinite(emb).all()
    assert batched_adata.uns["scfm"]["X_scfm_integrated"]["weights"]["cls"] == 1.0


def test_integrate_bad_input_leaves_adata_unchanged(tiny_checkpoint, batched_adata):
    before = snapshot(batched_adata)
    with pytest.raises(KeyError, match="batch_key='donor'"):
        scfm.tl.integrate(batched_adata, "donor", model=tiny_checkpoint, **FAST)
    batched_adata.obs["single"] = "only"
    before = snapshot(batched_adata)
    with pytest.raises(ValueError, match="at least 2"):
        scfm.tl.integrate(batched_adata, "single", model=tiny_checkpoint, **FAST)
    with pytest.raises(ValueError, match="must be different"):
        scfm.tl.integrate(batched_adata, "batch", labels_key="batch", model=tiny_checkpoint, **FAST)
    with pytest.raises(KeyError, match="labels_key='nope'"):
        scfm.tl.integrate(batched_adata, "batch", labels_key="nope", model=tiny_checkpoint, **FAST)
    assert_unchanged(batched_adata, before)


@pytest.fixture
def reference_and_query(batched_adata):
    # every other cell: both halves hold both batches and all three planted types
    return batched_adata[::2].copy(), batched_adata[1::2].copy()


def test_annotate_finetune_recovers_planted_types(tiny_checkpoint, reference_and_query):
    reference, query = reference_and_query
    ref_before = snapshot(reference)
    query = query[:, :250].copy()  # the query lacks a sixth of the genes (none of them planted markers)
    model = scfm.tl.annotate(
        query,
        reference,
        "cell_type",
        model=tiny_checkpoint,
        return_model=True,
        **{**FAST, "lr": 1e-3, "max_epochs": 20},
    )
    predicted = query.obs["scfm_cell_type"].astype(str)
    accuracy = (predicted == query.obs["cell_type"].astype(str)).mean()
    assert accuracy > 0.55, accuracy  # chance: 1/3; a random-weight tiny model fine-tuned for 160 steps
    assert query.obs["scfm_cell_type_confidence"].between(0, 1).all()
    assert model.config.label_categories == ["type0", "type1", "type2"]
    assert query.uns["scfm"]["scfm_cell_type"]["genes_used"] == 60  # the reference's most variable shared genes
    assert_unchanged(reference, ref_before)


def test_annotate_knn_and_unknown_threshold(tiny_checkpoint, reference_and_query):
    reference, query = reference_and_query
    scfm.tl.annotate(
        query,
        reference,
        "cell_type",
        model=tiny_checkpoint,
        method="knn",
        n_neighbors=5,
        unknown_threshold=0.99,
        progress=False,
        device="cpu",
    )
    predicted = query.obs["scfm_cell_type"]
    assert "unknown" in predicted.cat.categories
    low = query.obs["scfm_cell_type_confidence"] < 0.99
    assert (predicted[low] == "unknown").all() and (predicted[~low] != "unknown").all()
    # the same output schema as zero-shot annotation: the top-k labels and their probabilities, best first
    top = query.obsm["scfm_cell_type_top"]
    assert list(top.columns) == ["label_1", "probability_1", "label_2", "probability_2", "label_3", "probability_3"]
    assert (top.index == query.obs_names).all()
    np.testing.assert_allclose(top["probability_1"], query.obs["scfm_cell_type_confidence"], rtol=1e-6)
    assert (top["probability_1"] >= top["probability_2"]).all() and (top["probability_2"] >= top["probability_3"]).all()
    record = query.uns["scfm"]["scfm_cell_type"]
    assert record["method"] == "knn" and record["top_k"] == 3 and record["n_unknown"] == int(low.sum())


def test_annotate_bad_input(tiny_checkpoint, reference_and_query):
    reference, query = reference_and_query
    before = snapshot(query)
    with pytest.raises(KeyError, match="labels_key='celltype'"):
        scfm.tl.annotate(query, reference, "celltype", model=tiny_checkpoint)
    with pytest.raises(ValueError, match="method must be"):
        scfm.tl.annotate(query, reference, "cell_type", model=tiny_checkpoint, method="svm")
    with pytest.raises(ValueError, match="unknown_threshold"):
        scfm.tl.annotate(query, reference, "cell_type", model=tiny_checkpoint, unknown_threshold=2.0)
    with pytest.raises(CheckpointError, match=r"scGPT model, which has no zero-shot annotation.*use scMulan"):
        scfm.tl.annotate(query, model=tiny_checkpoint, method="generate")
    with pytest.raises(CheckpointError, match=r"an scMulan model, which has no method='knn'; use scGPT .* or CellPLM"):
        scfm.tl.annotate(query, reference, "cell_type", model="scmulan", method="knn")
    with pytest.raises(ValueError, match="method='probe' needs a labelled reference"):
        scfm.tl.annotate(query, model=tiny_checkpoint)
    with pytest.raises(ValueError, match="share"):
        scfm.tl.annotate(
            query[:, :150].copy(), reference[:, 150:].copy(), "cell_type", model=tiny_checkpoint, min_genes=10
        )
    reference.obs["cell_type"] = "one"
    with pytest.raises(ValueError, match="at least 2"):
        scfm.tl.annotate(query, reference, "cell_type", model=tiny_checkpoint)
    assert_unchanged(query, before)


def test_annotate_finetune_does_not_depend_on_the_global_torch_generator(tiny_checkpoint, reference_and_query):
    # new heads are initialised from the seed, so what ran before cannot change the result
    reference, query = reference_and_query
    results = []
    for draws in (0, 1000):
        torch.rand(draws)
        out = query.copy()
        scfm.tl.annotate(out, reference, "cell_type", model=tiny_checkpoint, **{**FAST, "max_epochs": 1})
        results.append(out.obs["scfm_cell_type_confidence"].to_numpy())
    np.testing.assert_array_equal(results[0], results[1])
