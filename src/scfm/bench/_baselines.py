"""Simple baselines that write to ``obsm`` like the scfm tools."""

from __future__ import annotations

import numpy as np
import scanpy as sc
import scipy.sparse as sp
from anndata import AnnData

from scfm.data import expression_source
from scfm.tokenize import check_values, detect_input_kind


def hvg_pca(
    adata: AnnData,
    *,
    layer: str | None = None,
    use_raw: bool = False,
    n_top_genes: int = 2000,
    n_comps: int = 50,
    key_added: str = "X_hvg_pca",
    seed: int = 0,
    copy: bool = False,
) -> AnnData | None:
    """HVG + PCA baseline: log-normalise (if counts), select highly variable genes, scale, PCA.

    The input is not modified apart from ``adata.obsm[key_added]``. Counts (and other non-log values
    such as expected counts or TPM) are normalised to 10,000 per cell and log1p-transformed;
    log-normalised input (non-integer, max <= 30) is used as is.

    Parameters
    ----------
    adata
        Cells x genes (counts or log-normalised).
    layer, use_raw
        Which matrix to read (as in :func:`scfm.tl.embed`).
    n_top_genes
        Highly variable genes kept (all genes when fewer).
    n_comps
        Principal components (capped by the data's rank).
    key_added
        ``adata.obsm`` key.
    seed
        Seed of the randomised PCA solver.
    copy
        Return a modified copy.
    """
    source = expression_source(adata, layer=layer, use_raw=use_raw)
    matrix = source.matrix
    if source.is_backed:
        raise ValueError("hvg_pca needs the matrix in memory; load the AnnData without backed mode")
    check_values(matrix, where=source.label)
    work = AnnData(sp.csr_matrix(matrix, dtype=np.float32), var=source.var[[]].copy())
    if detect_input_kind(work.X) != "log1p":
        sc.pp.normalize_total(work, target_sum=1e4)
        sc.pp.log1p(work)
    if work.n_vars > n_top_genes:
        sc.pp.highly_variable_genes(work, n_top_genes=n_top_genes, subset=True)
    sc.pp.scale(work, max_value=10)
    n_comps = min(n_comps, work.n_obs - 1, work.n_vars - 1)
    sc.pp.pca(work, n_comps=n_comps, random_state=seed)
    if copy:
        adata = adata.copy()
    adata.obsm[key_added] = work.obsm["X_pca"].astype(np.float32)
    return adata if copy else None
