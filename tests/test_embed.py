"""scfm.tl.embed with a tiny random-weight checkpoint: outputs, provenance, determinism, input formats, bad input."""

from __future__ import annotations

import re
import shutil

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
import torch
from conftest import assert_unchanged, snapshot

import scfm
from scfm.data import expression_source
from scfm.genes import align_genes
from scfm.models import SCGPT, CheckpointError, load_checkpoint, load_pretrained
from scfm.models.scgpt import embed_cells


def embed(adata, ckpt, **kwargs):
    scfm.tl.embed(adata, model=ckpt, progress=False, device="cpu", **kwargs)
    return adata.obsm[kwargs.get("key_added", "X_scfm")]


@pytest.fixture(scope="module")
def reference(tiny_checkpoint, _counts_template):
    """Embeddings of the synthetic cells with default settings."""
    return embed(_counts_template.copy(), tiny_checkpoint).copy()


# -- outputs and provenance ----------------------------------------------------------------------
def test_embed_writes_unit_norm_embeddings(counts_adata, tiny_checkpoint):
    result = scfm.tl.embed(counts_adata, model=tiny_checkpoint, key_added="X_tiny", progress=False)
    assert result is None
    emb = counts_adata.obsm["X_tiny"]
    assert emb.shape == (counts_adata.n_obs, 32)
    assert emb.dtype == np.float32
    assert np.isfinite(emb).all()
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # different cells get different embeddings
    assert len(np.unique(emb.round(5), axis=0)) == counts_adata.n_obs


def test_embed_unnormalized(counts_adata, tiny_checkpoint, reference):
    emb = embed(counts_adata, tiny_checkpoint, normalize=False)
    norms = np.linalg.norm(emb, axis=1)
    assert not np.allclose(norms, 1.0, atol=1e-3)
    np.testing.assert_allclose(emb / norms[:, None], reference, atol=1e-5)


def test_provenance_counts(counts_adata, tiny_checkpoint):
    embed(counts_adata, tiny_checkpoint, key_added="X_tiny")
    record = counts_adata.uns["scfm"]["X_tiny"]
    assert record["model"] == tiny_checkpoint.name
    assert record["family"] == "scgpt"
    assert re.fullmatch(r"[0-9a-f]{64}", record["checkpoint_sha256"])
    assert record["checkpoint_sha256"] == load_checkpoint(tiny_checkpoint).sha256
    assert record["vocab_size"] == 304
    assert record["genes_matched"] == 300
    assert record["genes_total"] == 300
    assert record["input_kind"] == "counts"
    assert record["matrix"] == "X"
    assert record["max_len"] == 64
    assert record["n_empty_cells"] == 0
    assert record["n_subsampled_cells"] > 0  # the deep cells express more than 63 genes
    assert 2 < record["mean_tokens_per_cell"] <= 64
    assert record["scfm_version"] == scfm.__version__
    assert record["device"] == "cpu"


def test_provenance_log1p_and_h5ad_round_trip(counts_adata, tiny_checkpoint, tmp_path):
    sc.pp.normalize_total(counts_adata, target_sum=1e4)
    sc.pp.log1p(counts_adata)
    embed(counts_adata, tiny_checkpoint)
    assert counts_adata.uns["scfm"]["X_scfm"]["input_kind"] == "log1p"
    counts_adata.write_h5ad(tmp_path / "out.h5ad")  # provenance must be h5ad-serialisable
    back = ad.read_h5ad(tmp_path / "out.h5ad")
    assert back.uns["scfm"]["X_scfm"]["input_kind"] == "log1p"
    np.testing.assert_array_equal(back.obsm["X_scfm"], counts_adata.obsm["X_scfm"])


def test_two_keys_keep_both_provenance_records(counts_adata, tiny_checkpoint):
    embed(counts_adata, tiny_checkpoint, key_added="A")
    embed(counts_adata, tiny_checkpoint, key_added="B", max_len=16)
    assert set(counts_adata.uns["scfm"]) == {"A", "B"}
    assert counts_adata.uns["scfm"]["B"]["max_len"] == 16
    assert not np.allclose(counts_adata.obsm["A"], counts_adata.obsm["B"], atol=1e-3)


# -- determinism --------------------------------------------------------------------------------
# a subset keeps the one-cell-per-batch runs cheap; it includes the deep (subsampled) cells at the end
SUBSET = np.r_[0:25, 115:120]


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_batch_size_does_not_change_embeddings(counts_adata, tiny_checkpoint, reference, batch_size):
    # Different batch sizes pad cells to different lengths: SDPA may differ in the last float bit (seen: 9e-8).
    subset = counts_adata[SUBSET].copy()
    emb = embed(subset, tiny_checkpoint, batch_size=batch_size)
    np.testing.assert_allclose(emb, reference[SUBSET], atol=1e-6, rtol=0)


def test_block_size_does_not_change_embeddings(counts_adata, tiny_checkpoint, reference):
    subset = counts_adata[SUBSET].copy()
    emb = embed(subset, tiny_checkpoint, block_size=5, batch_size=4)
    np.testing.assert_allclose(emb, reference[SUBSET], atol=1e-6, rtol=0)


def test_cell_order_does_not_change_embeddings(counts_adata, tiny_checkpoint, reference):
    order = np.random.default_rng(1).permutation(counts_adata.n_obs)
    shuffled = counts_adata[order].copy()
    emb = embed(shuffled, tiny_checkpoint)
    np.testing.assert_allclose(emb, reference[order], atol=1e-6, rtol=0)
    # per cell, by name
    by_name = pd.DataFrame(reference, index=counts_adata.obs_names)
    np.testing.assert_allclose(emb, by_name.loc[shuffled.obs_names].to_numpy(), atol=1e-6, rtol=0)


def test_log_normalised_input_gives_same_embedding(counts_adata, tiny_checkpoint, reference):
    sc.pp.normalize_total(counts_adata, target_sum=1e4)
    sc.pp.log1p(counts_adata)
    # per-cell monotone transform: identical tokens and batches (bitwise equal with multi-threaded BLAS; with
    # OMP_NUM_THREADS=1 the last float bit differed once)
    np.testing.assert_allclose(embed(counts_adata, tiny_checkpoint), reference, atol=1e-6, rtol=0)


@pytest.mark.parametrize("fmt", ["dense", "csr", "csc", "float64", "layer"])
def test_matrix_formats_give_identical_embeddings(counts_adata, tiny_checkpoint, reference, fmt):
    kwargs = {}
    if fmt == "dense":
        counts_adata.X = counts_adata.X.toarray()
    elif fmt == "csc":
        counts_adata.X = sp.csc_matrix(counts_adata.X)
    elif fmt == "float64":
        counts_adata.X = counts_adata.X.astype(np.float64)
    elif fmt == "layer":
        counts_adata.layers["counts"] = counts_adata.X.copy()
        counts_adata.X = sp.csr_matrix(counts_adata.shape, dtype=np.float32)  # all zero
        kwargs["layer"] = "counts"
    np.testing.assert_array_equal(embed(counts_adata, tiny_checkpoint, **kwargs), reference)


def test_backed_gives_identical_embeddings(counts_adata, tiny_checkpoint, reference, tmp_path):
    path = tmp_path / "x.h5ad"
    counts_adata.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    try:
        assert backed.isbacked
        from_disk = embed(backed, tiny_checkpoint, block_size=50)
        np.testing.assert_array_equal(from_disk, embed(counts_adata, tiny_checkpoint, block_size=50))
        np.testing.assert_allclose(from_disk, reference, atol=1e-6, rtol=0)  # other blocks, other batches
        assert backed.uns["scfm"]["X_scfm"]["genes_matched"] == 300
        with pytest.raises(ValueError, match="copy=True is not supported"):
            scfm.tl.embed(backed, model=tiny_checkpoint, copy=True, progress=False)
    finally:
        backed.file.close()


def test_in_memory_model_matches_directory(counts_adata, tiny_checkpoint, reference, _counts_template):
    model = SCGPT.load(tiny_checkpoint, _counts_template.copy())
    emb = embed(counts_adata, model)
    np.testing.assert_array_equal(emb, reference)
    np.testing.assert_allclose(model.get_latent_representation(device="cpu"), reference, atol=1e-6, rtol=0)


def test_bucketing_matches_naive_padding(counts_adata, tiny_checkpoint):
    pretrained = load_pretrained(tiny_checkpoint)
    source = expression_source(counts_adata)
    alignment = align_genes(source.var, pretrained.vocab)
    kwargs = {"device": torch.device("cpu"), "batch_size": 16, "progress": False}
    bucketed = embed_cells(pretrained.module, source, alignment, bucketing=True, **kwargs)
    naive = embed_cells(pretrained.module, source, alignment, bucketing=False, **kwargs)
    np.testing.assert_allclose(bucketed.embeddings, naive.embeddings, atol=1e-5, rtol=0)
    assert bucketed.n_tokens == naive.n_tokens
    assert bucketed.n_subsampled_cells == naive.n_subsampled_cells > 0


def test_embed_cells_rows_subset(counts_adata, tiny_checkpoint, reference):
    pretrained = load_pretrained(tiny_checkpoint)
    source = expression_source(counts_adata)
    alignment = align_genes(source.var, pretrained.vocab)
    rows = np.array([5, 0, 119, 42, 5])
    result = embed_cells(
        pretrained.module, source, alignment, device=torch.device("cpu"), rows=rows, block_size=2, progress=False
    )
    np.testing.assert_allclose(result.embeddings, reference[rows], atol=1e-6, rtol=0)


# -- other inputs -------------------------------------------------------------------------------
def test_copy_returns_new_anndata(counts_adata, tiny_checkpoint, reference):
    before = snapshot(counts_adata)
    out = scfm.tl.embed(counts_adata, model=tiny_checkpoint, copy=True, progress=False)
    assert isinstance(out, ad.AnnData)
    assert out is not counts_adata
    np.testing.assert_array_equal(out.obsm["X_scfm"], reference)
    assert "X_scfm" in out.uns["scfm"]
    assert_unchanged(counts_adata, before)
    assert "X_scfm" not in counts_adata.obsm
    assert "scfm" not in counts_adata.uns


def test_use_raw_on_pbmc68k_reduced(pbmc_small, tiny_checkpoint):
    with pytest.raises(ValueError, match="negative values"):  # X is scaled
        scfm.tl.embed(pbmc_small, model=tiny_checkpoint, progress=False)
    scfm.tl.embed(pbmc_small, model=tiny_checkpoint, use_raw=True, progress=False)
    emb = pbmc_small.obsm["X_scfm"]
    assert emb.shape == (700, 32)
    assert np.isfinite(emb).all()
    record = pbmc_small.uns["scfm"]["X_scfm"]
    assert record["matrix"] == "raw.X"
    assert record["input_kind"] == "log1p"
    assert record["genes_total"] == 765
    assert record["genes_matched"] == 300  # the tiny vocabulary is the first 300 raw genes


def test_cells_without_expressed_genes(counts_adata, tiny_checkpoint, reference):
    x = counts_adata.X.toarray()
    x[[3, 10, 50]] = 0.0
    x[60, :] = 0.0
    x[60, 299] = 1.0
    matrix = sp.csr_matrix(x)
    assert matrix.indptr[61] - matrix.indptr[60] == 1
    matrix.data[matrix.indptr[60]] = 0.0  # row 60: a stored zero is not an expressed gene
    counts_adata.X = matrix
    emb = embed(counts_adata, tiny_checkpoint)
    assert np.isfinite(emb).all()
    empty = [3, 10, 50, 60]
    for row in empty[1:]:
        np.testing.assert_array_equal(emb[row], emb[empty[0]])
    assert counts_adata.uns["scfm"]["X_scfm"]["n_empty_cells"] == len(empty)
    others = np.setdiff1d(np.arange(counts_adata.n_obs), empty)
    np.testing.assert_allclose(emb[others], reference[others], atol=1e-6, rtol=0)
    assert not np.allclose(emb[3], reference[3], atol=1e-3)


def test_genes_outside_vocabulary_are_ignored(counts_adata, tiny_checkpoint, reference):
    extra = ad.AnnData(
        sp.random(counts_adata.n_obs, 20, density=0.5, format="csr", dtype=np.float32, random_state=0) * 10,
        obs=counts_adata.obs,
        var=pd.DataFrame(index=[f"NOTAGENE{i}" for i in range(20)]),
    )
    extra.X.data = np.ceil(extra.X.data)
    combined = ad.AnnData(
        sp.hstack([extra.X, counts_adata.X], format="csr"),
        obs=counts_adata.obs.copy(),
        var=pd.concat([extra.var, counts_adata.var]),
    )
    emb = embed(combined, tiny_checkpoint)
    np.testing.assert_array_equal(emb, reference)
    assert combined.uns["scfm"]["X_scfm"]["genes_total"] == 320
    assert combined.uns["scfm"]["X_scfm"]["genes_matched"] == 300


# -- bad input: exception, message, and the AnnData left unchanged ------------------------------
def _check_bad(adata, ckpt, exc, patterns, **kwargs):
    before = snapshot(adata)
    with pytest.raises(exc) as info:
        scfm.tl.embed(adata, model=ckpt, progress=False, **kwargs)
    message = str(info.value)
    for pattern in patterns:
        assert re.search(pattern, message), (pattern, message)
    assert_unchanged(adata, before)
    return info


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values(counts_adata, tiny_checkpoint, bad):
    counts_adata.X.data[7] = bad
    _check_bad(counts_adata, tiny_checkpoint, ValueError, [r"1 NaN/inf values", r"\bX\b"])


def test_non_finite_in_late_block_writes_nothing(counts_adata, tiny_checkpoint):
    x = counts_adata.X.toarray()
    x[-1, 0] = np.nan  # found only in the last block
    counts_adata.X = sp.csr_matrix(x)
    _check_bad(counts_adata, tiny_checkpoint, ValueError, ["NaN/inf"], block_size=10)


def test_negative_values(counts_adata, tiny_checkpoint):
    counts_adata.X.data[0] = -0.5
    _check_bad(counts_adata, tiny_checkpoint, ValueError, ["negative values", "scaled data", "layer"])


def test_empty_anndata(counts_adata, tiny_checkpoint):
    empty = counts_adata[:0].copy()
    _check_bad(empty, tiny_checkpoint, ValueError, ["no cells", "n_obs == 0"])


def test_zero_genes(tiny_checkpoint):
    adata = ad.AnnData(np.zeros((5, 0), dtype=np.float32))
    _check_bad(adata, tiny_checkpoint, ValueError, ["no genes", "n_vars == 0"])


def test_no_gene_overlap(counts_adata, tiny_checkpoint):
    counts_adata.var_names = [f"NOTAGENE{i}" for i in range(counts_adata.n_vars)]
    _check_bad(counts_adata, tiny_checkpoint, ValueError, ["only 0 of 300 genes match", "NOTAGENE0"])


def test_too_few_genes(counts_adata, tiny_checkpoint):
    names = [f"NOTAGENE{i}" for i in range(counts_adata.n_vars)]
    names[:30] = counts_adata.var_names[:30]
    counts_adata.var_names = names
    _check_bad(counts_adata, tiny_checkpoint, ValueError, ["only 30 of 300", r"min_genes=50"])
    embed(counts_adata, tiny_checkpoint, min_genes=20)  # allowed with a lower threshold
    assert counts_adata.uns["scfm"]["X_scfm"]["genes_matched"] == 30


def test_duplicated_gene_names(counts_adata, tiny_checkpoint, reference):
    names = list(counts_adata.var_names)
    first = names[5]
    names[200] = first
    counts_adata.var_names = names
    _check_bad(counts_adata, tiny_checkpoint, ValueError, ["more than once", "var_names_make_unique", "'first'"])
    emb = embed(counts_adata, tiny_checkpoint, on_duplicate="first")
    assert emb.shape == (counts_adata.n_obs, 32)
    assert counts_adata.uns["scfm"]["X_scfm"]["genes_matched"] == 299
    assert not np.allclose(emb, reference, atol=1e-4)  # column 200 (a different gene) is now dropped


def test_missing_layer(counts_adata, tiny_checkpoint):
    counts_adata.layers["spliced"] = counts_adata.X.copy()
    _check_bad(counts_adata, tiny_checkpoint, KeyError, ["'counts' not found", "available: 'spliced'"], layer="counts")


def test_missing_gene_key(counts_adata, tiny_checkpoint):
    counts_adata.var["ensembl"] = [f"ENSG{i:011d}" for i in range(counts_adata.n_vars)]
    _check_bad(counts_adata, tiny_checkpoint, KeyError, ["gene_key='symbols'", "ensembl"], gene_key="symbols")


def test_use_raw_without_raw(counts_adata, tiny_checkpoint):
    _check_bad(counts_adata, tiny_checkpoint, ValueError, [r"adata\.raw is None"], use_raw=True)


def test_layer_and_use_raw_together(counts_adata, tiny_checkpoint):
    counts_adata.layers["counts"] = counts_adata.X.copy()
    counts_adata.raw = counts_adata.copy()
    _check_bad(
        counts_adata, tiny_checkpoint, ValueError, ["either layer= or use_raw=True"], layer="counts", use_raw=True
    )


def test_bad_batch_size(counts_adata, tiny_checkpoint):
    _check_bad(counts_adata, tiny_checkpoint, ValueError, ["batch_size must be an integer >= 1", "got 0"], batch_size=0)


def test_nonexistent_model_path(counts_adata, tmp_path):
    _check_bad(counts_adata, tmp_path / "missing", FileNotFoundError, ["no checkpoint at", "bundled names", "default"])


def test_checkpoint_directory_missing_files(counts_adata, tiny_checkpoint, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, broken)
    (broken / "vocab.json").unlink()
    (broken / "model_card.md").unlink()
    _check_bad(counts_adata, broken, CheckpointError, ["is missing vocab.json, model_card.md"])


def test_unknown_device(counts_adata, tiny_checkpoint):
    _check_bad(counts_adata, tiny_checkpoint, ValueError, ["unknown device 'gpu0'"], device="gpu0")
