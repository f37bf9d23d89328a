"""CellPLM model class and tools: training, measured-gene masks, deterministic latents, save/load, tl.embed and
tl.annotate with CellPLM models, and the bundled checkpoint on pbmc68k_reduced."""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
import torch
from conftest import one_thread

import scfm
from scfm.models import CellPLM, load_pretrained
from scfm.models.cellplm import SentenceCollator, plan_sentences

N_TYPES = 3
N_GENES = 80
GENES = [f"G{i}" for i in range(N_GENES)]
SMALL = {
    "d_model": 32,
    "n_heads": 2,
    "n_layers": 1,
    "d_hidden": 64,
    "latent_dim": 8,
    "n_components": 4,
    "latent_hidden": 32,
    "decoder_hidden": 32,
    "decoder_bottleneck": 32,
    "context": 32,
    "dropout": 0.0,
}
QUIET = {"accelerator": "cpu", "enable_progress_bar": False, "logger": False, "enable_checkpointing": False}
EMBED = {"device": "cpu", "progress": False}


pytestmark = pytest.mark.usefixtures("single_thread")


def make_data(n_cells: int = 300, seed: int = 0) -> ad.AnnData:
    """Poisson counts of three cell types, each with its own gamma-distributed expression profile (the profiles
    are the same for every ``seed``), two samples and x/y coordinates; ``obs['cell_type']`` holds the type."""
    profiles = np.random.default_rng(12345).gamma(0.5, 4.0, (N_TYPES, N_GENES))
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n_cells) % N_TYPES)
    depth = rng.uniform(0.5, 2.0, n_cells)
    counts = rng.poisson(depth[:, None] * profiles[labels]).astype(np.float32)
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical([f"type{t}" for t in labels]),
            "sample": pd.Categorical([f"s{i % 2}" for i in range(n_cells)]),
        },
        index=[f"seed{seed}_cell{i}" for i in range(n_cells)],
    )
    adata = ad.AnnData(sp.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=GENES))
    adata.obsm["spatial"] = rng.uniform(0, 500, (n_cells, 2))
    return adata


def evaluation_loss(module, counts: sp.csr_matrix, sentences: list[np.ndarray]) -> float:
    """Mean masked-sentence loss over fixed sentences with fixed masks (torch seed 0), eval mode."""
    module.eval()
    measured = torch.ones(counts.shape[1], dtype=torch.bool)
    torch.manual_seed(0)
    with torch.no_grad():
        losses = [
            module.masked_sentence_loss(torch.as_tensor(counts[s].toarray()), measured.expand(len(s), -1))["loss"]
            for s in sentences
        ]
    return float(torch.stack(losses).mean())


@pytest.fixture(scope="module")
def trained():
    """A tiny CellPLM trained for 10 epochs on 300 cells, its AnnData, and a copy of its initial module."""
    adata = make_data()
    CellPLM.setup_anndata(adata)
    torch.manual_seed(0)
    model = CellPLM(adata, min_genes=10, **SMALL)
    initial = copy.deepcopy(model.module)
    with one_thread():
        model.train(max_epochs=10, lr=3e-3, warmup_steps=5, **QUIET)
    return model, adata, initial


@pytest.fixture
def adata() -> ad.AnnData:
    return make_data(n_cells=120, seed=1)


def snapshot(adata: ad.AnnData) -> dict:
    return {
        "obs": list(adata.obs.columns),
        "obsm": sorted(adata.obsm.keys()),
        "uns": json.dumps(adata.uns.get("scfm", {}), default=str, sort_keys=True) + str(sorted(adata.uns.keys())),
        "X": adata.X.toarray().copy(),
    }


def assert_unchanged(adata: ad.AnnData, before: dict) -> None:
    after = snapshot(adata)
    assert after.keys() == before.keys()
    for key, value in before.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(after[key], value)
        else:
            assert after[key] == value, key


# -- training ----------------------------------------------------------------------------------------------
def test_training_lowers_the_masked_loss(trained):
    model, adata, initial = trained
    counts = model._vocab_counts()
    sentences = plan_sentences(np.asarray(adata.obs_names), context=SMALL["context"])
    before = evaluation_loss(initial, counts, sentences)
    after = evaluation_loss(model.module, counts, sentences)
    assert np.isfinite(before) and np.isfinite(after)
    # per masked cell, summed over 80 genes: ~200 nats untrained, 171 / 157 / 169 after 10 epochs for torch seeds
    # 0 / 1 / 2 (the NB reconstruction at the true means would cost ~126 with the hidden-gene term)
    assert after < 0.9 * before, (before, after)
    assert not model.module.training
    assert model.checkpoint_name == "trained in session"


def test_latent_separates_planted_types(trained):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    model, adata, _ = trained
    latent = model.get_latent_representation(device="cpu")
    assert latent.shape == (adata.n_obs, SMALL["latent_dim"]) and np.isfinite(latent).all()
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    assert cross_val_score(LogisticRegression(max_iter=2000), latent, labels, cv=5).mean() > 0.8  # chance: 1/3
    assert cross_val_score(KNeighborsClassifier(10), latent, labels, cv=5).mean() > 0.8


def _with_batches(adata: ad.AnnData) -> ad.AnnData:
    """Batch b1 did not measure genes 0-19 (zeros there) and says so in var['measured_in:b1']; b0 has no column."""
    adata.obs["batch"] = pd.Categorical(np.where(np.arange(adata.n_obs) < adata.n_obs // 2, "b0", "b1"))
    counts = adata.X.toarray()
    counts[(adata.obs["batch"] == "b1").to_numpy()[:, None] & (np.arange(N_GENES) < 20)[None]] = 0.0
    adata.X = sp.csr_matrix(counts)
    adata.var["measured_in:b1"] = np.arange(N_GENES) >= 20
    return adata


def test_measured_in_columns_mask_genes_per_batch(adata):
    adata = _with_batches(adata)
    CellPLM.setup_anndata(adata, batch_key="batch")
    torch.manual_seed(0)
    model = CellPLM(adata, min_genes=10, **SMALL)
    groups, masks = model._measured_masks()
    np.testing.assert_array_equal(groups, (adata.obs["batch"] == "b1").to_numpy().astype(int))
    assert masks.shape == (2, N_GENES)
    assert masks[0].all()  # no column: every matched gene
    np.testing.assert_array_equal(masks[1], np.arange(N_GENES) >= 20)
    # the batch is the default sample: a b1 sentence holds only b1 cells, whose genes 0-19 carry no loss
    b1 = np.flatnonzero(groups == 1)[:20]
    batch = SentenceCollator(model._vocab_counts(), groups, masks)(b1.tolist())
    assert not batch["measured"][:, :20].any() and batch["measured"][:, 20:].all()
    module = model.module.train()
    torch.manual_seed(0)
    module.masked_sentence_loss(batch["counts"], batch["measured"])["loss"].backward()
    assert (module.decoder.log_theta.grad[:20] == 0).all() and (module.decoder.log_theta.grad[20:] != 0).all()
    module.zero_grad()
    model.train(max_epochs=1, **QUIET)
    assert np.isfinite(model.get_latent_representation(device="cpu")).all()


def test_a_batch_that_measures_no_gene_is_refused(adata):
    adata = _with_batches(adata)
    adata.var["measured_in:b0"] = False
    CellPLM.setup_anndata(adata, batch_key="batch")
    model = CellPLM(adata, min_genes=10, **SMALL)
    with pytest.raises(ValueError, match=r"batches \['b0'\] measure none of the model's genes"):
        model.train(max_epochs=1, **QUIET)


def test_training_refuses_non_counts(adata):
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    CellPLM.setup_anndata(adata)  # embedding log-normalised values is allowed
    model = CellPLM(adata, min_genes=10, **SMALL)
    assert np.isfinite(model.get_latent_representation(device="cpu")).all()
    with pytest.raises(ValueError, match=r"does not hold raw counts \(values look log1p\).*layer='counts'"):
        model.train(max_epochs=1, **QUIET)


# -- deterministic latents ------------------------------------------------------------------------------------
def test_latent_does_not_depend_on_block_size_order_or_repetition(trained, tmp_path):
    model, adata, _ = trained
    base = model.get_latent_representation(device="cpu")
    np.testing.assert_array_equal(model.get_latent_representation(device="cpu"), base)
    np.testing.assert_allclose(model.get_latent_representation(device="cpu", block_size=7), base, atol=1e-5)
    perm = np.random.default_rng(0).permutation(adata.n_obs)
    permuted = model.get_latent_representation(adata[perm].copy(), device="cpu", block_size=13)
    np.testing.assert_allclose(permuted[np.argsort(perm)], base, atol=1e-5)
    # which cells share a sentence matters
    other = model.get_latent_representation(device="cpu", context=16)
    assert np.abs(other - base).max() > 1e-3

    normalised = base / np.linalg.norm(base, axis=1, keepdims=True)
    path = model.save(tmp_path / "cellplm")
    for source in (model, path):
        copy_ = adata.copy()
        scfm.tl.embed(copy_, model=source, block_size=11, **EMBED)
        np.testing.assert_allclose(copy_.obsm["X_scfm"], normalised, atol=1e-5)
        shuffled = adata[perm].copy()
        scfm.tl.embed(shuffled, model=source, **EMBED)
        np.testing.assert_allclose(shuffled.obsm["X_scfm"][np.argsort(perm)], normalised, atol=1e-5)
    scfm.tl.embed(copy_, model=model, context=16, **EMBED)
    assert np.abs(copy_.obsm["X_scfm"] - normalised).max() > 1e-3


def test_spatial_and_sample_embeddings_do_not_depend_on_order(trained):
    model, adata, _ = trained
    keys = {"sample_key": "sample", "spatial_key": "spatial", "context": 20}
    first = adata.copy()
    scfm.tl.embed(first, model=model, **keys, **EMBED)
    perm = np.random.default_rng(1).permutation(adata.n_obs)
    shuffled = adata[perm].copy()
    scfm.tl.embed(shuffled, model=model, block_size=17, **keys, **EMBED)
    np.testing.assert_allclose(shuffled.obsm["X_scfm"][np.argsort(perm)], first.obsm["X_scfm"], atol=1e-5)
    # positions reach the model: moving the cells changes the embedding
    moved = adata.copy()
    moved.obsm["spatial"] = moved.obsm["spatial"][perm]
    scfm.tl.embed(moved, model=model, **keys, **EMBED)
    assert np.abs(moved.obsm["X_scfm"] - first.obsm["X_scfm"]).max() > 1e-3


# -- persistence --------------------------------------------------------------------------------------------------
def test_save_and_load_round_trip(trained, tmp_path):
    model, adata, _ = trained
    expected = model.get_latent_representation(device="cpu")
    path = model.save(tmp_path / "cellplm")
    assert {p.name for p in Path(path).iterdir()} >= {"config.json", "vocab.json", "model.safetensors"}
    with pytest.raises(FileExistsError):
        model.save(tmp_path / "cellplm")
    loaded = CellPLM.load(path, adata.copy(), min_genes=10)
    assert loaded.config == model.config
    np.testing.assert_array_equal(loaded.get_latent_representation(device="cpu"), expected)
    pretrained = load_pretrained(path, family="cellplm")
    assert pretrained.module.config == model.config and not pretrained.module.training
    from_pretrained = CellPLM.from_pretrained(pretrained, adata.copy(), min_genes=10)
    np.testing.assert_array_equal(from_pretrained.get_latent_representation(device="cpu"), expected)
    by_path = CellPLM.from_pretrained(path, adata.copy(), min_genes=10)
    np.testing.assert_array_equal(by_path.get_latent_representation(device="cpu"), expected)
    assert by_path.checkpoint_sha256 == pretrained.sha256 != ""

    half = model.save(tmp_path / "half", half_precision=True)
    assert Path(half, "model.safetensors").stat().st_size < 0.6 * Path(path, "model.safetensors").stat().st_size
    latent = CellPLM.load(half, adata.copy(), min_genes=10).get_latent_representation(device="cpu")
    assert latent.dtype == np.float32
    difference = np.abs(latent - expected).max()
    assert 0 < difference < 0.02 * np.abs(expected).max(), difference
    with pytest.raises(ValueError, match=r"holds no saved AnnData.*save_anndata=True"):
        CellPLM.load(path)


# -- scfm.tl.embed ----------------------------------------------------------------------------------------------------
def test_embed_records_sentence_settings(trained, adata):
    model, _, _ = trained
    scfm.tl.embed(adata, model=model, sample_key="sample", spatial_key="spatial", context=24, key_added="X_c", **EMBED)
    record = adata.uns["scfm"]["X_c"]
    assert record["family"] == "cellplm" and record["tokenizer"] == "cell"
    assert (record["sample_key"], record["spatial_key"], record["context"]) == ("sample", "spatial", 24)
    assert record["n_sentences"] == 6  # two samples of 60 cells in sentences of at most 24
    assert record["genes_matched"] == N_GENES and record["input_kind"] == "counts"
    embedding = adata.obsm["X_c"]
    assert embedding.shape == (adata.n_obs, SMALL["latent_dim"]) and embedding.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, atol=1e-5)
    scfm.tl.embed(adata, model=model, **EMBED)
    record = adata.uns["scfm"]["X_scfm"]
    assert "sample_key" not in record and "spatial_key" not in record  # None fields are left out
    assert record["context"] == SMALL["context"]


def _spatial_3d(adata):
    adata.obsm["xyz"] = np.hstack([adata.obsm["spatial"], np.zeros((adata.n_obs, 1))])
    return {"spatial_key": "xyz"}


def _spatial_nan(adata):
    adata.obsm["spatial"][[3, 50]] = np.nan
    return {"spatial_key": "spatial"}


def _lonely_cell(adata):
    adata.obs["sample"] = pd.Categorical(["alone"] + ["s0"] * (adata.n_obs - 1))
    return {"sample_key": "sample"}


@pytest.mark.parametrize(
    ("prepare", "error", "message"),
    [
        (lambda a: {"spatial_key": "missing"}, KeyError, "spatial_key='missing' is not in adata.obsm"),
        (_spatial_3d, ValueError, "needs 2-D coordinates"),
        (_spatial_nan, ValueError, r"NaN/inf coordinates for 2 cells"),
        (_lonely_cell, ValueError, r"fewer than 2 cells \(e\.g\. \['alone'\]\)"),
        (lambda a: {"sample_key": "donor"}, KeyError, "sample_key='donor' is not a column"),
        (lambda a: {"max_len": 64}, ValueError, "max_len does not apply to a CellPLM model"),
    ],
    ids=["missing-spatial", "3-columns", "nan", "one-cell-sample", "missing-sample", "max_len"],
)
def test_embed_errors_leave_adata_unchanged(trained, adata, prepare, error, message):
    model, _, _ = trained
    kwargs = prepare(adata)
    scfm.tl.embed(adata, model=model, key_added="earlier", **EMBED)  # an earlier result must survive
    before = snapshot(adata)
    with pytest.raises(error, match=message):
        scfm.tl.embed(adata, model=model, **kwargs, **EMBED)
    assert_unchanged(adata, before)


def test_cellplm_arguments_are_refused_for_an_scgpt_model(tiny_checkpoint, counts_adata):
    before = snapshot(counts_adata)
    for kwargs in ({"sample_key": "cell_type"}, {"spatial_key": "spatial"}, {"context": 16}):
        with pytest.raises(ValueError, match=r"only apply to CellPLM models.*'scgpt' model"):
            scfm.tl.embed(counts_adata, model=tiny_checkpoint, **kwargs, **EMBED)
    assert_unchanged(counts_adata, before)


def test_log_normalised_input_embeds_like_counts(trained, adata):
    model, _, _ = trained
    logged = adata.copy()
    sc.pp.normalize_total(logged, target_sum=1e4)
    sc.pp.log1p(logged)
    scfm.tl.embed(adata, model=model, **EMBED)
    scfm.tl.embed(logged, model=model, **EMBED)
    assert logged.uns["scfm"]["X_scfm"]["input_kind"] == "log1p"
    np.testing.assert_allclose(logged.obsm["X_scfm"], adata.obsm["X_scfm"], atol=1e-4)

    fresh = make_data(n_cells=40, seed=2)
    CellPLM.setup_anndata(fresh)
    torch.manual_seed(0)
    raw_input = CellPLM(fresh, min_genes=10, **{**SMALL, "normalize_total": None})
    scfm.tl.embed(adata, model=raw_input, **EMBED)  # counts are fine
    before = snapshot(logged)
    with pytest.raises(ValueError, match=r"values look log1p.*normalize_total=None"):
        scfm.tl.embed(logged, model=raw_input, **EMBED)
    assert_unchanged(logged, before)


# -- scfm.tl.annotate ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["finetune", "knn"])
def test_annotate_recovers_planted_labels(trained, method):
    model, reference, _ = trained
    query = make_data(n_cells=150, seed=7)
    truth = query.obs.pop("cell_type").astype(str).to_numpy()
    reference_before = snapshot(reference)
    finetuned = scfm.tl.annotate(
        query,
        reference,
        "cell_type",
        model=model,
        method=method,
        lr=1e-3,
        max_epochs=8,
        n_neighbors=10,
        **EMBED,
        return_model=method == "finetune",
    )
    predicted = query.obs["scfm_cell_type"].astype(str).to_numpy()
    accuracy = float((predicted == truth).mean())
    assert accuracy > 0.8, accuracy  # chance: 1/3
    confidence = query.obs["scfm_cell_type_confidence"].to_numpy()
    assert ((confidence > 0) & (confidence <= 1 + 1e-6)).all()
    record = query.uns["scfm"]["scfm_cell_type"]
    assert record["family"] == "cellplm" and record["method"] == method
    assert record["categories"] == ["type0", "type1", "type2"] and record["genes_used"] == N_GENES
    assert record["reference_cells"] == reference.n_obs
    assert_unchanged(reference, reference_before)
    if method == "finetune":
        assert finetuned is not None and finetuned.head is not None
        # the classifier froze the gene embeddings of its own copy, not of the pretrained module
        assert not finetuned.backbone.gene_embedding.requires_grad and model.module.gene_embedding.requires_grad
        assert finetuned.backbone is not model.module


# -- the bundled checkpoint -------------------------------------------------------------------------------------
BUNDLED = Path(str(resources.files("scfm") / "checkpoints" / "cellplm_default"))


@pytest.mark.skipif(
    not all((BUNDLED / name).exists() for name in ("config.json", "vocab.json", "model.safetensors")),
    reason=f"the bundled CellPLM checkpoint is not there yet ({BUNDLED}); it is written by scripts/pretrain_default.py",
)
def test_bundled_model_embeds_pbmc68k_reduced():
    from sklearn.model_selection import cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier

    adata = sc.datasets.pbmc68k_reduced()  # raw.X is log-normalised: accepted with normalize_total=1e4
    scfm.tl.embed(adata, model="cellplm", use_raw=True, **EMBED)
    embedding = adata.obsm["X_scfm"]
    record = adata.uns["scfm"]["X_scfm"]
    assert record["family"] == "cellplm" and record["input_kind"] == "log1p"
    assert embedding.shape[0] == adata.n_obs and np.isfinite(embedding).all()
    labels = adata.obs["bulk_labels"].astype(str).to_numpy()
    majority = pd.Series(labels).value_counts(normalize=True).iloc[0]
    predicted = cross_val_predict(KNeighborsClassifier(15), embedding, labels, cv=5)
    accuracy = float((predicted == labels).mean())
    assert accuracy > majority + 0.2, (accuracy, majority)
