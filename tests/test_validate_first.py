"""Bad input through the shared contract: validate first, write last, never a silent wrong or non-finite result."""

from __future__ import annotations

import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
import torch
from conftest import assert_unchanged, snapshot
from safetensors.torch import load_file, save_file

import scfm
from scfm.models import SCGPT, TGPT, CellPLM, NonFiniteOutputError, SCMulan

FAMILIES = ("scgpt", "tgpt", "cellplm", "scmulan")


@pytest.fixture(scope="module")
def pbmc_counts() -> ad.AnnData:
    """60 cells of pbmc68k_reduced's log-normalised ``raw`` as a CSR AnnData of its own."""
    pbmc = sc.datasets.pbmc68k_reduced()
    return ad.AnnData(sp.csr_matrix(pbmc.raw.X[:60], dtype=np.float32), obs=pbmc.obs.iloc[:60].copy(), var=pbmc.raw.var)


def with_duplicate_entries(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """The same matrix stored non-canonically: every stored value split into two entries of half its size."""
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    data = np.concatenate([matrix.data / 2, matrix.data / 2])
    indptr = np.concatenate([[0], np.cumsum(2 * np.diff(matrix.indptr))])
    both_rows = np.concatenate([rows, rows])
    order = np.argsort(both_rows, kind="stable")
    duplicated = sp.csr_matrix(
        (data[order], np.concatenate([matrix.indices, matrix.indices])[order], indptr), shape=matrix.shape
    )
    assert not duplicated.has_canonical_format
    return duplicated


@pytest.mark.parametrize("family", FAMILIES)
def test_duplicate_csr_entries_give_the_same_embedding_and_are_not_canonicalised_in_place(pbmc_counts, family):
    canonical = pbmc_counts.copy()
    scfm.tl.embed(canonical, model=family, progress=False, min_genes=10)
    duplicated = pbmc_counts.copy()
    duplicated.X = with_duplicate_entries(pbmc_counts.X)
    stored = duplicated.X.data.copy()
    scfm.tl.embed(duplicated, model=family, progress=False, min_genes=10)
    np.testing.assert_allclose(duplicated.obsm["X_scfm"], canonical.obsm["X_scfm"], atol=1e-5)
    np.testing.assert_array_equal(duplicated.X.data, stored)  # the user's matrix is untouched


def test_float16_and_object_matrices_are_read_as_float32(pbmc_counts):
    reference = pbmc_counts.copy()
    reference.X = reference.X.toarray()
    scfm.tl.embed(reference, model="tgpt", progress=False, min_genes=10)
    for dtype in (np.float16, object):
        other = pbmc_counts.copy()
        other.X = np.asarray(reference.X.astype(np.float16), dtype=dtype)
        scfm.tl.embed(other, model="tgpt", progress=False, min_genes=10)
        assert np.isfinite(other.obsm["X_scfm"]).all()
    complex_values = pbmc_counts.copy()
    complex_values.X = reference.X.astype(np.complex64)
    before = snapshot(complex_values)
    with pytest.raises(TypeError, match="complex-valued"):
        scfm.tl.embed(complex_values, model="tgpt", progress=False, min_genes=10)
    assert_unchanged(complex_values, before)


def test_non_finite_weights_raise_instead_of_returning_nan(tmp_path, tiny_checkpoint, counts_adata):
    broken = shutil.copytree(tiny_checkpoint, tmp_path / "broken")
    weights = load_file(broken / "model.safetensors")
    name = next(k for k, v in weights.items() if "transformer" in k and v.ndim == 2)
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, str(broken / "model.safetensors"))
    before = snapshot(counts_adata)
    with pytest.raises(NonFiniteOutputError, match=r"non-finite .*load_checkpoint"):
        scfm.tl.embed(counts_adata, model=broken, progress=False)
    assert_unchanged(counts_adata, before)


@pytest.mark.parametrize("model_cls", [SCGPT, TGPT, CellPLM, SCMulan], ids=lambda c: c.__name__)
def test_from_pretrained_leaves_no_registration_behind_on_error(pbmc_counts, model_cls):
    too_few = pbmc_counts[:, :20].copy()  # 20 genes: fewer than min_genes=50
    before = snapshot(too_few)
    with pytest.raises(ValueError, match="genes"):
        model_cls.from_pretrained(None, too_few)
    assert not [k for k in too_few.uns if k.startswith("_scvi")]
    assert not [c for c in too_few.obs.columns if c.startswith("_scvi")]
    assert_unchanged(too_few, before)


def test_results_are_checked_before_anything_is_written(pbmc_counts):
    adata = pbmc_counts.copy()
    adata.uns["scfm"] = "left by the user"
    before = snapshot(adata)
    with pytest.raises(TypeError, match=r"uns\['scfm'\] holds a str"):
        scfm.tl.embed(adata, model="tgpt", progress=False, min_genes=10)
    assert "X_scfm" not in adata.obsm
    assert_unchanged(adata, before)
    adata = pbmc_counts.copy()
    for key in ("", "a/b", None, 3):
        with pytest.raises((ValueError, TypeError), match="key_added must be a non-empty string"):
            scfm.tl.embed(adata, model="tgpt", key_added=key, progress=False, min_genes=10)
    assert not adata.obsm


def test_finetune_annotation_needs_at_least_one_epoch(pbmc_counts):
    before = snapshot(pbmc_counts)
    with pytest.raises(ValueError, match="max_epochs must be an integer >= 1"):
        scfm.tl.annotate(pbmc_counts, pbmc_counts, "bulk_labels", max_epochs=0, min_genes=10)
    assert_unchanged(pbmc_counts, before)


def test_arguments_are_checked_with_messages_that_name_them(pbmc_counts, counts_adata, tiny_checkpoint):
    with pytest.raises(TypeError, match=r"adata must be an AnnData .*, got DataFrame"):
        scfm.tl.embed(pbmc_counts.to_df(), model="tgpt")
    with pytest.raises(TypeError, match=r"reference must be an AnnData .*, got ndarray"):
        scfm.tl.annotate(pbmc_counts, np.zeros((3, 3)), "bulk_labels")
    with pytest.raises(ValueError, match="device 'meta' cannot run scfm models"):
        scfm.tl.embed(pbmc_counts.copy(), model="tgpt", device="meta", min_genes=10)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        scfm.tl.generate("scmulan", 2, temperature=float("inf"))
    model = TGPT.from_pretrained("tgpt", pbmc_counts.copy(), min_genes=10)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 60\)"):
        model.get_latent_representation(indices=[0, 60])
    np.testing.assert_array_equal(
        model.get_latent_representation(indices=np.arange(60) < 5), model.get_latent_representation(indices=range(5))
    )
    tiny = SCGPT.from_pretrained(tiny_checkpoint, counts_adata)
    for name, value in (("batch_size", 0), ("lr", float("nan")), ("max_epochs", 0), ("validation_size", 1.0)):
        with pytest.raises(ValueError, match=f"{name} must be"):
            tiny.train(**{name: value})


@pytest.mark.parametrize(
    ("bundled", "edits", "message"),
    [
        ("scgpt_default", {"n_heads": 0}, "not a valid SCGPT config"),
        ("tgpt_default", {"d_model": -4}, "does not describe a valid TGPT model"),
        ("scgpt_default", {"d_model": 10**7}, "shape mismatches"),
        ("cellplm_default", {"n_layers": 10**6}, "holds only .* tensors"),
    ],
)
def test_tampered_checkpoint_configs_are_refused_before_anything_is_built(tmp_path, bundled, edits, message):
    import json

    from scfm.models import CheckpointError, load_pretrained

    directory = shutil.copytree(Path(scfm.__file__).parent / "checkpoints" / bundled, tmp_path / bundled)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, **edits}))
    with pytest.raises(CheckpointError, match=message):
        load_pretrained(directory)


def test_cli_reports_an_unreadable_input_in_one_line(tmp_path, capsys):
    from scfm.cli import main

    text = tmp_path / "cells.h5ad"
    text.write_text("not an HDF5 file")
    assert main(["embed", str(text), str(tmp_path / "out.h5ad")]) == 2
    assert capsys.readouterr().err.startswith("scfm embed: error:")
