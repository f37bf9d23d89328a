"""Shared fixtures: synthetic count data and a tiny random-weight SCGPT checkpoint (no network, no bundled model)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
import torch
from threadpoolctl import threadpool_limits

N_CELLS = 120
N_GENES = 300
N_TYPES = 3
TINY = {"d_model": 32, "n_heads": 2, "n_layers": 2, "d_hidden": 64, "max_len": 64}


@contextlib.contextmanager
def one_thread():
    """One torch thread and one BLAS/OpenMP thread: tiny models train many times faster on the two shared cores
    (threads fight each other). Set per test and inside module fixtures, not once per module: scanpy's numba layer
    resets the OpenMP thread count that torch shares."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def single_thread():
    """Opt in per module with ``pytestmark = pytest.mark.usefixtures("single_thread")``."""
    with one_thread():
        yield


@pytest.fixture(scope="session")
def pbmc_raw_genes() -> list[str]:
    """Real gene symbols (the 765 genes of ``pbmc68k_reduced().raw``)."""
    return list(sc.datasets.pbmc68k_reduced().raw.var_names)


def make_counts(genes: list[str], n_cells: int = N_CELLS, seed: int = 0) -> ad.AnnData:
    """Cells x genes negative-binomial counts (CSR, float32) with three cell types and a wide spread of depths.

    Each type over-expresses its own block of genes. Library sizes span ~1.5 orders of magnitude and the
    last five cells are very deep, so they express far more genes than ``max_len`` of the tiny model.
    """
    rng = np.random.default_rng(seed)
    n_genes = len(genes)
    labels = np.arange(n_cells) % N_TYPES
    base = rng.gamma(0.6, 1.0, size=n_genes)
    programme = np.ones((N_TYPES, n_genes))
    block = n_genes // N_TYPES
    for t in range(N_TYPES):
        programme[t, t * block : (t + 1) * block] *= 8.0
    depth = np.exp(rng.uniform(np.log(0.05), np.log(1.5), size=n_cells))
    depth[-5:] = 20.0
    mean = depth[:, None] * base[None, :] * programme[labels]
    counts = rng.negative_binomial(2, 2 / (2 + mean)).astype(np.float32)
    adata = ad.AnnData(
        sp.csr_matrix(counts),
        obs=pd.DataFrame(
            {"cell_type": pd.Categorical([f"type{t}" for t in labels])},
            index=[f"cell{i}" for i in range(n_cells)],
        ),
        var=pd.DataFrame(index=list(genes)),
    )
    return adata


def make_batched_counts(genes: list[str], n_cells: int = 240, seed: int = 0) -> ad.AnnData:
    """Counts with three planted cell types and two planted batches.

    Each type over-expresses its own block of genes (x6). Batch ``b1`` has 2x the depth and a batch
    programme: a further block of genes x5 and another block x0.2 in every cell type. ``obs`` holds
    ``cell_type`` and ``batch``; the two are independent (balanced design).
    """
    rng = np.random.default_rng(seed)
    n_genes = len(genes)
    labels = np.arange(n_cells) % N_TYPES
    batches = (np.arange(n_cells) // N_TYPES) % 2
    base = rng.gamma(0.8, 1.0, size=n_genes)
    block = n_genes // 6
    effect = np.ones((N_TYPES + 2, n_genes))
    for t in range(N_TYPES):
        effect[t, t * block : (t + 1) * block] = 6.0
    effect[N_TYPES + 1, 3 * block : 4 * block] = 5.0
    effect[N_TYPES + 1, 4 * block : 5 * block] = 0.2
    depth = rng.uniform(0.5, 1.5, size=n_cells) * np.where(batches == 1, 2.0, 1.0)
    mean = depth[:, None] * base[None, :] * effect[labels] * effect[N_TYPES + batches]
    counts = rng.negative_binomial(3, 3 / (3 + mean)).astype(np.float32)
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical([f"type{t}" for t in labels]),
            "batch": pd.Categorical([f"b{b}" for b in batches]),
        },
        index=[f"cell{i}" for i in range(n_cells)],
    )
    return ad.AnnData(sp.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=list(genes)))


@pytest.fixture
def batched_adata(pbmc_raw_genes) -> ad.AnnData:
    """240 cells x 300 real gene symbols with planted cell types (``cell_type``) and batches (``batch``)."""
    return make_batched_counts(pbmc_raw_genes[:N_GENES])


@pytest.fixture(scope="session")
def _counts_template(pbmc_raw_genes) -> ad.AnnData:
    return make_counts(pbmc_raw_genes[:N_GENES])


@pytest.fixture
def counts_adata(_counts_template) -> ad.AnnData:
    """A fresh copy of the synthetic counts AnnData (120 cells x 300 real gene symbols, CSR float32)."""
    return _counts_template.copy()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, _counts_template) -> Path:
    """Directory of a tiny random-weight SCGPT checkpoint whose vocabulary is the synthetic data's 300 genes."""
    from scfm.models import SCGPT

    torch.manual_seed(0)
    adata = _counts_template.copy()
    SCGPT.setup_anndata(adata)
    model = SCGPT(adata, **TINY)
    return model.save(tmp_path_factory.mktemp("ckpt") / "tiny_scgpt")


@pytest.fixture
def pbmc_small() -> ad.AnnData:
    """``sc.datasets.pbmc68k_reduced()`` (700 cells; X scaled, raw log-normalised with 765 genes)."""
    return sc.datasets.pbmc68k_reduced()


def snapshot(adata: ad.AnnData) -> dict:
    """What a failed call must leave untouched."""
    x = adata.X
    x = x.toarray() if sp.issparse(x) else np.array(x, copy=True)
    return {"obsm": sorted(adata.obsm.keys()), "uns": sorted(adata.uns.keys()), "X": x, "shape": adata.shape}


def assert_unchanged(adata: ad.AnnData, before: dict) -> None:
    after = snapshot(adata)
    assert after["obsm"] == before["obsm"]
    assert after["uns"] == before["uns"]
    assert after["shape"] == before["shape"]
    np.testing.assert_array_equal(after["X"], before["X"])


@pytest.fixture(scope="session")
def tiny_tgpt_checkpoint(tmp_path_factory, _counts_template) -> Path:
    """Directory of a tiny random-weight TGPT checkpoint whose vocabulary is the synthetic data's 300 genes."""
    from scfm.models import TGPT

    torch.manual_seed(0)
    adata = _counts_template.copy()
    TGPT.setup_anndata(adata)
    model = TGPT(adata, d_model=32, n_heads=2, n_layers=2, d_hidden=64, max_len=64)
    return model.save(tmp_path_factory.mktemp("ckpt") / "tiny_tgpt")
