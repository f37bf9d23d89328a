"""Private training copies of the user's AnnData, their log-normalised view and checked ``obs`` categories.

scvi-tools registration writes into ``uns``; fine-tuning registers a copy so that the user's AnnData is untouched.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp
from anndata import AnnData

from scfm.data._matrix import expression_source
from scfm.genes import GeneAlignment, GeneRules, GeneVocab, align_genes
from scfm.tokenize import check_values, detect_input_kind

HEAD_LR_FACTOR = 10.0  # new heads (discriminator, classifier) learn this much faster than the pretrained encoder
UNLABELLED = "<unlabelled>"  # stands for a missing label in training copies; never a label category


def training_copy(
    adata: AnnData,
    obs_columns: dict[str, pd.Series],
    *,
    layer: str | None,
    use_raw: bool,
    gene_key: str | None,
    vocab: GeneVocab,
    min_genes: int,
    gene_rules: GeneRules = GeneRules(),
) -> tuple[AnnData, GeneAlignment]:
    """Return a new AnnData of the in-vocabulary genes of ``adata`` (CSR) and the alignment it was made from.

    The copy holds the given ``obs`` columns; the alignment of ``adata``'s genes is returned for provenance.
    Genes are named by their vocabulary token, so a later alignment is exact and two copies share a gene
    exactly when they share its name. ``gene_rules`` say how the names of ``adata`` are read
    (:func:`~scfm.genes.align_genes`).
    """
    source = expression_source(adata, layer=layer, use_raw=use_raw)
    if source.is_backed:
        raise ValueError("fine-tuning needs the matrix in memory; load the AnnData without backed mode")
    check_values(source.matrix, where=source.label)
    alignment = align_genes(
        source.var, vocab, gene_key=gene_key, min_genes=min_genes, on_duplicate="first", **gene_rules.as_kwargs()
    )
    token_ids = alignment.column_token_ids()
    keep = token_ids >= 0
    seen = set()
    for column in np.flatnonzero(keep):  # one column per token (duplicated symbols: the first)
        if token_ids[column] in seen:
            keep[column] = False
        seen.add(token_ids[column])
    if keep.sum() < min_genes:
        raise ValueError(
            f"only {int(keep.sum())} genes are usable (in the vocabulary, one column per gene); need {min_genes}"
        )
    matrix = sp.csr_matrix(source.matrix, dtype=np.float32)[:, np.flatnonzero(keep)]
    names = [vocab.token(int(i)) for i in token_ids[keep]]
    obs = pd.DataFrame(obs_columns, index=adata.obs_names.astype(str))
    return AnnData(matrix, obs=obs, var=pd.DataFrame(index=names)), alignment


def highly_variable_subset(work: AnnData, n_top_genes: int | None, batch_key: str | None = None) -> AnnData:
    """Return ``work`` restricted to its ``n_top_genes`` most variable genes; ``None`` keeps every gene.

    Genes are ranked by scanpy's Seurat flavour on log-normalised values, within each batch and combined when
    ``batch_key`` is given.
    """
    if n_top_genes is None or work.n_vars <= n_top_genes:
        return work
    if n_top_genes < 1:
        raise ValueError(f"n_top_genes must be positive or None, got {n_top_genes}")
    logged = log_normalised(work)
    if batch_key is not None:
        logged.obs[batch_key] = work.obs[batch_key].to_numpy()
    sc.pp.highly_variable_genes(logged, n_top_genes=n_top_genes, batch_key=batch_key)
    return work[:, logged.var["highly_variable"].to_numpy()].copy()


def accelerator_for(device: str) -> str:
    """Lightning accelerator name for scfm's ``device`` argument."""
    if device in ("auto", "cpu"):
        return device
    if device.startswith("cuda"):
        return "gpu"
    if device == "mps":
        return "mps"
    raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'mps', got {device!r}")


def _matrix(adata: AnnData, layer: str | None, use_raw: bool, what: str):
    source = expression_source(adata, layer=layer, use_raw=use_raw)
    if source.is_backed:
        raise ValueError(f"{what} needs the matrix in memory; load the AnnData without backed mode")
    check_values(source.matrix, where=source.label)
    return source


def log_normalised(adata: AnnData, *, layer: str | None = None, use_raw: bool = False) -> AnnData:
    """Return a new AnnData (same cells, same genes) of log-normalised values; ``adata`` is not modified.

    Counts and other non-log values (expected counts, TPM) are normalised to 10,000 per cell and
    log1p-transformed; log-normalised input (non-integer, max <= 30) is used as is.
    """
    source = _matrix(adata, layer, use_raw, "log-normalisation")
    # copy: a float32 CSR input would otherwise be shared, and callers transform ``work.X`` in place
    work = AnnData(sp.csr_matrix(source.matrix, dtype=np.float32, copy=True), var=source.var[[]].copy())
    work.obs_names = adata.obs_names
    if detect_input_kind(work.X) != "log1p":
        sc.pp.normalize_total(work, target_sum=1e4)
        sc.pp.log1p(work)
    return work


def obs_categories(adata: AnnData, key: str, what: str, min_categories: int = 1) -> pd.Series:
    """``adata.obs[key]`` as strings, after checking it exists, has no missing values and enough categories."""
    if key not in adata.obs:
        raise KeyError(f"{what}={key!r} is not a column of adata.obs (columns: {list(adata.obs.columns)})")
    values = adata.obs[key]
    if values.isna().any():
        raise ValueError(f"adata.obs[{key!r}] has {int(values.isna().sum())} missing values; fill or drop those cells")
    values = values.astype(str)
    if values.nunique() < min_categories:
        raise ValueError(
            f"adata.obs[{key!r}] has {values.nunique()} distinct value(s); {what} needs at least {min_categories}"
        )
    return values
