"""scfm.tl.denoise and scfm.tl.impute with small CellPLM models on synthetic counts."""

from __future__ import annotations

import json
import shutil

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
import torch
from conftest import one_thread

import scfm
from scfm.models import CellPLM

N_TYPES = 3
N_GENES = 60
GENES = [f"G{i}" for i in range(N_GENES)]
UNKNOWN = ["U0", "U1", "U2"]  # in the data, not in any model's vocabulary
SMALL = {
    "d_model": 32,
    "n_heads": 2,
    "n_layers": 1,
    "d_hidden": 64,
    "latent_dim": 8,
    "n_components": 3,
    "latent_hidden": 32,
    "decoder_hidden": 32,
    "decoder_bottleneck": 32,
    "context": 64,
    "dropout": 0.0,
}
QUIET = {"progress": False, "device": "cpu"}


pytestmark = pytest.mark.usefixtures("single_thread")


def make_data(n_cells: int = 240, seed: int = 0, unknown: bool = True) -> tuple[ad.AnnData, np.ndarray]:
    """NB counts of three cell types (each over-expresses its own third of the genes), two samples and x/y
    coordinates; returns the AnnData (CSR float32) and the true means."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n_cells) % N_TYPES
    base = rng.gamma(1.0, 1.0, N_GENES) + 0.2
    programme = np.ones((N_TYPES, N_GENES))
    block = N_GENES // N_TYPES
    for t in range(N_TYPES):
        programme[t, t * block : (t + 1) * block] = 10.0
    depth = rng.uniform(1.5, 4.5, n_cells)
    mean = depth[:, None] * base * programme[labels]
    counts = rng.negative_binomial(5, 5 / (5 + mean)).astype(np.float32)
    genes = list(GENES)
    if unknown:
        counts = np.hstack([counts, rng.poisson(2.0, (n_cells, len(UNKNOWN))).astype(np.float32)])
        genes += UNKNOWN
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical([f"type{t}" for t in labels]),
            "sample": pd.Categorical([f"s{i % 2}" for i in range(n_cells)]),
        },
        index=[f"cell{i}" for i in range(n_cells)],
    )
    adata = ad.AnnData(sp.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=genes))
    adata.obsm["spatial"] = rng.uniform(0, 100, (n_cells, 2)) + 100 * labels[:, None]
    return adata, mean


@pytest.fixture(scope="module")
def untrained() -> CellPLM:
    """Random-weight model (2-D positional encoding) whose vocabulary is the 60 synthetic genes."""
    torch.manual_seed(0)
    adata, _ = make_data(unknown=False)
    CellPLM.setup_anndata(adata)
    return CellPLM(adata, min_genes=5, **SMALL)


@pytest.fixture(scope="module")
def trained() -> tuple[CellPLM, ad.AnnData, np.ndarray]:
    """A tiny model trained on all 60 genes of 300 cells, with its data and true means.

    This recipe imputed every one of genes 5, 25 and 45 with Pearson r >= 0.79 (observed counts), >= 0.98 (true
    means) and MSE <= 0.38x that of the gene's mean, for data and torch seeds 0-4; with 3 mixture components or
    a KL weight of 1 some seeds stayed at the mean profile.
    """
    torch.manual_seed(0)
    adata, mean = make_data(n_cells=300, unknown=False)
    CellPLM.setup_anndata(adata)
    config = {**SMALL, "latent_dim": 16, "n_components": 8, "kl_weight": 0.1, "positional_encoding": "none"}
    model = CellPLM(adata, min_genes=5, **config)
    with one_thread():
        model.train(
            max_epochs=40,
            lr=3e-3,
            warmup_steps=5,
            accelerator="cpu",
            enable_progress_bar=False,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
        )
    return model, adata, mean


@pytest.fixture
def adata() -> ad.AnnData:
    return make_data()[0]


def dense(x) -> np.ndarray:
    return x.toarray() if sp.issparse(x) else np.asarray(x)


def snapshot(adata: ad.AnnData) -> dict:
    return {
        "obs": list(adata.obs.columns),
        "var": list(adata.var.columns),
        "obsm": sorted(adata.obsm.keys()),
        "layers": sorted(adata.layers.keys()),
        "uns": json.dumps(adata.uns.get("scfm", {}), default=str, sort_keys=True) + str(sorted(adata.uns.keys())),
        "X": dense(adata.X).copy(),
        "obs_names": list(adata.obs_names),
    }


def assert_unchanged(adata: ad.AnnData, before: dict) -> None:
    after = snapshot(adata)
    for key in ("obs", "var", "obsm", "layers", "uns", "obs_names"):
        assert after[key] == before[key], key
    np.testing.assert_array_equal(after["X"], before["X"])


# -- denoise ------------------------------------------------------------------------------------------
def test_denoise_places_results_and_keeps_the_library(adata, untrained, tmp_path):
    observed = dense(adata.X).copy()
    assert scfm.tl.denoise(adata, untrained, **QUIET) is None
    out = adata.layers["scfm_denoised"]
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == adata.shape
    matched = adata.var["scfm_denoised_matched"].to_numpy()
    np.testing.assert_array_equal(matched, np.isin(adata.var_names, GENES))
    np.testing.assert_array_equal(out[:, ~matched], observed[:, ~matched])  # unknown genes untouched
    np.testing.assert_allclose(out[:, matched].sum(1), observed[:, matched].sum(1), rtol=1e-4)
    assert (out >= 0).all() and not np.allclose(out[:, matched], observed[:, matched])
    record = adata.uns["scfm"]["scfm_denoised"]
    assert record["task"] == "denoise" and record["genes_matched"] == N_GENES
    assert record["genes_total"] == N_GENES + len(UNKNOWN) and record["input_kind"] == "counts"
    assert record["n_sentences"] == 4 and "sample_key" not in record
    adata.write_h5ad(tmp_path / "denoised.h5ad")  # provenance is serialisable
    np.testing.assert_array_equal(ad.read_h5ad(tmp_path / "denoised.h5ad").layers["scfm_denoised"], out)


def test_denoise_copy_layer_and_checkpoint_directory(adata, untrained, tmp_path):
    adata.layers["counts"] = adata.X.copy()
    adata.X = sp.csr_matrix(np.log1p(dense(adata.X)))
    before = snapshot(adata)
    result = scfm.tl.denoise(adata, untrained, layer="counts", copy=True, **QUIET)
    assert_unchanged(adata, before)
    path = untrained.save(tmp_path / "cellplm")
    from_disk = scfm.tl.denoise(adata, path, layer="counts", layer_added="d", copy=True, **QUIET)
    np.testing.assert_allclose(from_disk.layers["d"], result.layers["scfm_denoised"], rtol=1e-5, atol=1e-6)
    assert from_disk.uns["scfm"]["d"]["checkpoint"] == str(path)
    assert from_disk.uns["scfm"]["d"]["matrix"] == "layers['counts']"


def test_denoise_refuses_log_normalised_input(adata, untrained):
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    before = snapshot(adata)
    with pytest.raises(ValueError, match=r"does not hold raw counts .*log-normalised.*layer='counts'"):
        scfm.tl.denoise(adata, untrained, **QUIET)
    assert_unchanged(adata, before)


# -- impute -------------------------------------------------------------------------------------------
def test_impute_dataframe_and_panel_genes(adata, untrained):
    scfm.tl.denoise(adata, untrained, **QUIET)
    assert scfm.tl.impute(adata, ["G3", "g7"], untrained, **QUIET) is None
    frame = adata.obsm["scfm_imputed"]
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == ["G3", "g7"]  # as given, even when matched case-insensitively
    assert frame.index.equals(adata.obs_names)
    assert (frame.dtypes == np.float32).all() and (frame.to_numpy() >= 0).all()
    # a gene the panel measures gets the model's prediction: the same as its denoised value
    denoised = adata.layers["scfm_denoised"]
    np.testing.assert_allclose(frame["G3"], denoised[:, 3], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(frame["g7"], denoised[:, 7], rtol=1e-5, atol=1e-6)
    record = adata.uns["scfm"]["scfm_imputed"]
    assert record["genes"] == ["G3", "g7"] and record["vocab_genes"] == ["G3", "G7"]
    assert record["genes_in_panel"] == ["G3", "g7"] and record["task"] == "impute"


def test_impute_single_gene_name_and_copy(adata, untrained):
    before = snapshot(adata)
    panel = adata[:, [g for g in adata.var_names if g != "G10"]]
    result = scfm.tl.impute(panel, "G10", untrained, copy=True, **QUIET)
    assert list(result.obsm["scfm_imputed"].columns) == ["G10"]
    assert result.uns["scfm"]["scfm_imputed"]["genes_in_panel"] == []
    assert_unchanged(adata, before)


def test_trained_model_imputes_a_held_out_gene(trained):
    model, adata, mean = trained
    gene = 5  # over-expressed by type 0
    panel = adata[:, [g for g in GENES if g != GENES[gene]]].copy()
    scfm.tl.impute(panel, [GENES[gene]], model, **QUIET)
    predicted = panel.obsm["scfm_imputed"][GENES[gene]].to_numpy()
    truth = dense(adata.X)[:, gene]
    assert np.corrcoef(predicted, truth)[0, 1] > 0.5
    assert np.corrcoef(predicted, mean[:, gene])[0, 1] > 0.8
    mse, mse_of_mean = np.mean((predicted - truth) ** 2), np.mean((truth.mean() - truth) ** 2)
    assert mse < 0.6 * mse_of_mean


# -- determinism --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("sample_key", "spatial_key"), [(None, None), ("sample", None), (None, "spatial")])
def test_results_do_not_depend_on_block_size_or_cell_order(adata, untrained, sample_key, spatial_key):
    keys = {"sample_key": sample_key, "spatial_key": spatial_key, "context": 50, **QUIET}
    scfm.tl.denoise(adata, untrained, **keys)
    scfm.tl.impute(adata, ["G1", "G40"], untrained, **keys)
    order = np.random.default_rng(1).permutation(adata.n_obs)
    shuffled = adata[order].copy()
    del shuffled.layers["scfm_denoised"], shuffled.obsm["scfm_imputed"]
    scfm.tl.denoise(shuffled, untrained, block_size=7, **keys)
    scfm.tl.impute(shuffled, ["G1", "G40"], untrained, block_size=7, **keys)
    np.testing.assert_allclose(
        shuffled.layers["scfm_denoised"], adata.layers["scfm_denoised"][order], rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(
        shuffled.obsm["scfm_imputed"].to_numpy(), adata.obsm["scfm_imputed"].to_numpy()[order], rtol=1e-4, atol=1e-5
    )


def test_backed_input(adata, untrained, tmp_path):
    scfm.tl.impute(adata, ["G2", "G30"], untrained, sample_key="sample", **QUIET)
    scfm.tl.denoise(adata, untrained, sample_key="sample", **QUIET)
    path = tmp_path / "panel.h5ad"
    ad.AnnData(adata.X, obs=adata.obs, var=pd.DataFrame(index=adata.var_names)).write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    scfm.tl.impute(backed, ["G2", "G30"], untrained, sample_key="sample", block_size=50, **QUIET)
    scfm.tl.denoise(backed, untrained, sample_key="sample", block_size=50, **QUIET)
    pd.testing.assert_frame_equal(backed.obsm["scfm_imputed"], adata.obsm["scfm_imputed"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(backed.layers["scfm_denoised"], adata.layers["scfm_denoised"], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="copy=True is not supported for a backed AnnData"):
        scfm.tl.impute(backed, ["G2"], untrained, copy=True, **QUIET)
    backed.file.close()


# -- bad input: clear errors, AnnData unchanged --------------------------------------------------------
def _set(adata, where, key, value):
    getattr(adata, where)[key] = value


BAD_INPUT = {
    "nan": (lambda a: a.X.data.__setitem__(0, np.nan), {}, ValueError, "NaN/inf"),
    "negative": (lambda a: a.X.data.__setitem__(0, -1.0), {}, ValueError, "negative values"),
    "non-integer late block": (lambda a: a.X.data.__setitem__(-1, 0.5), {"block_size": 16}, ValueError, "rows 224-"),
    "missing layer": (None, {"layer": "counts"}, KeyError, "layer 'counts' not found"),
    "missing gene_key": (None, {"gene_key": "symbol"}, KeyError, "gene_key='symbol' is not a column"),
    "missing sample_key": (None, {"sample_key": "donor"}, KeyError, "sample_key='donor' is not a column"),
    "single-cell sample": (
        lambda a: _set(a, "obs", "donor", ["d0"] * (a.n_obs - 1) + ["d1"]),
        {"sample_key": "donor"},
        ValueError,
        "fewer than 2 cells",
    ),
    "missing spatial_key": (None, {"spatial_key": "xy"}, KeyError, "spatial_key='xy' is not in adata.obsm"),
    "3-D coordinates": (
        lambda a: _set(a, "obsm", "xyz", np.ones((a.n_obs, 3))),
        {"spatial_key": "xyz"},
        ValueError,
        "needs 2-D coordinates",
    ),
    "NaN coordinates": (
        lambda a: a.obsm["spatial"].__setitem__((3, 0), np.nan),
        {"spatial_key": "spatial"},
        ValueError,
        "NaN/inf coordinates for 1 cells",
    ),
    "too few genes": (None, {"min_genes": 100}, ValueError, "only 60 of 63 genes match the vocabulary"),
    "context": (None, {"context": 0}, ValueError, "context must be an integer >= 1"),
    "block_size": (None, {"block_size": 0}, ValueError, "block_size must be an integer >= 1"),
    "max_dense_gb": (None, {"max_dense_gb": 1e-9}, ValueError, "more than max_dense_gb"),
    "empty": (None, {"_subset": slice(0, 0)}, ValueError, "no cells"),
    "device": (None, {"device": "tpu9"}, ValueError, "unknown device 'tpu9'"),
}


@pytest.mark.parametrize("tool", ["denoise", "impute"])
@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_refused_and_leaves_adata_unchanged(adata, untrained, tool, case):
    change, kwargs, error, message = BAD_INPUT[case]
    kwargs = dict(kwargs)
    if "_subset" in kwargs:
        adata = adata[kwargs.pop("_subset")].copy()
    if change is not None:
        change(adata)
    before = snapshot(adata)
    call = scfm.tl.denoise if tool == "denoise" else lambda a, m, **kw: scfm.tl.impute(a, ["G1"], m, **kw)
    with pytest.raises(error, match=message):
        call(adata, untrained, **{**QUIET, **kwargs})
    assert_unchanged(adata, before)


@pytest.mark.parametrize(
    ("genes", "error", "message"),
    [
        ([], ValueError, "genes must be .*with at least one entry"),
        (["G1", "NOPE", "ALSO_NOT"], ValueError, r"2 of the 3 genes .* not in the model's vocabulary.*'NOPE', 'ALSO"),
        (["U0"], ValueError, "'U0'"),  # measured, but unknown to the model
        (["G1", "G2", "G1"], ValueError, r"lists \['G1'\] more than once"),
        (["G1", "g1"], ValueError, r"name the same vocabulary gene"),
        (["G1", 3], TypeError, "genes must be a string or a list of strings"),
    ],
)
def test_impute_refuses_bad_genes(adata, untrained, genes, error, message):
    before = snapshot(adata)
    with pytest.raises(error, match=message):
        scfm.tl.impute(adata, genes, untrained, **QUIET)
    assert_unchanged(adata, before)


def test_other_refusals_leave_adata_unchanged(adata, untrained, tmp_path):
    adata.layers["counts"] = adata.X.copy()
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    before = snapshot(adata)
    with pytest.raises(ValueError, match="does not hold raw counts"):
        scfm.tl.impute(adata, ["G1"], untrained, **QUIET)
    with pytest.raises(ValueError, match="would overwrite the input counts"):
        scfm.tl.denoise(adata, untrained, layer="counts", layer_added="counts", **QUIET)
    foreign = shutil.copytree(untrained.save(tmp_path / "cellplm"), tmp_path / "foreign")
    config = json.loads((foreign / "config.json").read_text())
    (foreign / "config.json").write_text(json.dumps({**config, "family": "tgpt"}))
    with pytest.raises(ValueError, match=r"not a valid TGPT config.*another model family"):
        scfm.tl.denoise(adata, foreign, layer="counts", **QUIET)
    with pytest.raises(TypeError, match=r"model must be None, .*a checkpoint directory.*got 42 \(int\)"):
        scfm.tl.impute(adata, ["G1"], 42, layer="counts", **QUIET)
    assert_unchanged(adata, before)
