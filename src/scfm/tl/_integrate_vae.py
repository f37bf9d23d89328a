"""``tl.integrate(method="vae")``: fit a batch-conditioned count VAE on the data's genes, or map a query onto one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from scfm.data import expression_source, highly_variable_subset
from scfm.genes import GeneRules
from scfm.models import Pretrained
from scfm.models.base import CountVAEModel, fit_count_vae, fit_new_batches
from scfm.tokenize import check_values, detect_input_kind

from ._embed import compute_embeddings

VAE_TOP_GENES = 2000  # genes the VAE models by default, as many as the scVI baseline
VAE_BATCH_SIZE = 128
VAE_LR = 1e-3
MIN_SHARED_GENE_FRACTION = 0.5  # a query must hold at least this share of a reference model's genes


@dataclass(frozen=True)
class VAESettings:
    """What :func:`integrate_by_vae` needs besides the data (the arguments of :func:`scfm.tl.integrate`)."""

    batch_key: str
    layer: str | None
    use_raw: bool
    gene_key: str | None
    n_top_genes: int | None
    n_latent: int
    embedding_weight: float
    encode_batch: bool
    max_epochs: int | None
    batch_size: int
    lr: float
    min_genes: int
    gene_rules: GeneRules
    seed: int
    device: str
    progress: bool


@dataclass
class VAEIntegration:
    """The latent ``(n_obs, n_latent)``, provenance fields, the foundation model's gene alignment, the count VAE.

    ``alignment`` is None without an embedding; ``model`` is None when the VAE read an embedding (it cannot map
    queries from counts alone).
    """

    embedding: np.ndarray
    record: dict[str, Any]
    alignment: Any
    model: CountVAEModel | None = None


def integrate_by_vae(pretrained: Pretrained | None, adata: AnnData, batches: pd.Series, settings: VAESettings):
    """Fit the count VAE on ``adata``'s most variable genes (never modifying ``adata``) and return its latent.

    The encoder reads each cell's log counts beside its frozen cell embedding from ``pretrained``, standardised
    over the cells and multiplied by ``settings.embedding_weight`` (0: no embedding, ``pretrained`` unused). Cells
    are fitted in the order of their names, so the result does not depend on the order of ``adata``'s rows.
    """
    counts = _counts(adata, settings)
    genes = AnnData(counts, obs=pd.DataFrame({settings.batch_key: batches.to_numpy()}, index=adata.obs_names))
    genes.var_names = _gene_names(adata, settings)
    genes = highly_variable_subset(genes, settings.n_top_genes, settings.batch_key)
    side, alignment = None, None
    if settings.embedding_weight > 0:
        computed = compute_embeddings(
            adata,
            pretrained,
            layer=settings.layer,
            use_raw=settings.use_raw,
            gene_key=settings.gene_key,
            device=settings.device,
            min_genes=settings.min_genes,
            on_duplicate="first",
            gene_rules=settings.gene_rules,
            progress=settings.progress,
        )
        alignment = computed.alignment
        embedding = np.asarray(computed.result.embeddings, dtype=np.float64)
        std = embedding.std(0)
        std[std == 0] = 1.0
        side = (settings.embedding_weight * (embedding - embedding.mean(0)) / std).astype(np.float32)
    order = np.argsort(np.asarray(adata.obs_names, dtype=str), kind="stable")
    categorical = pd.Categorical(batches)
    codes = categorical.codes.astype(np.int64)
    fit = fit_count_vae(
        sp.csr_matrix(genes.X)[order],
        codes[order],
        None if side is None else side[order],
        n_latent=settings.n_latent,
        encode_batch=settings.encode_batch,
        **_training(settings),
    )
    latent = np.empty_like(fit.latent)
    latent[order] = fit.latent
    record = {
        "method": "vae",
        "batches": sorted(pd.unique(batches.astype(str))),
        "genes_used": int(genes.n_vars),
        "n_latent": settings.n_latent,
        "embedding_weight": settings.embedding_weight,
        "embedding_dim": 0 if side is None else int(side.shape[1]),
        "encode_batch": settings.encode_batch,
        "norm": list(fit.module.norm),
        "epochs": fit.epochs,
        "final_loss": fit.loss_per_epoch[-1],
        "train_seconds": fit.seconds,
        "seconds_per_epoch": fit.seconds / fit.epochs,
    }
    model = None
    if side is None:
        model_record = {key: record[key] for key in ("epochs", "final_loss", "train_seconds")}
        model_record |= {"seed": settings.seed, "lr": settings.lr, "batch_size": settings.batch_size}
        model = CountVAEModel(
            fit.module, tuple(genes.var_names), tuple(str(c) for c in categorical.categories), model_record
        )
    return VAEIntegration(latent, record, alignment, model)


def map_by_vae(model: CountVAEModel, adata: AnnData, batches: pd.Series, settings: VAESettings) -> VAEIntegration:
    """Encode ``adata``'s cells with ``model``'s encoder into the reference's latent space.

    The query's counts of the model's genes are read by name; genes it lacks count as zeros (at most half may be
    missing). If the encoder does not read the batch, nothing is trained: this equals scArches' query step for an
    scVI model whose covariates are not encoded, where query training leaves the latent unchanged. If it does
    (``encode_batch``), batches the reference lacks get input columns of their own (starting at the mean of the
    reference batches'), trained alone on the query (scArches' surgery), and the returned model knows them.
    """
    counts = _counts(adata, settings)
    names = pd.Index(_gene_names(adata, settings))
    if names.has_duplicates:
        duplicated = sorted(set(names[names.duplicated()]))[:5]
        raise ValueError(
            f"the query's gene names repeat ({duplicated}...); make them unique (adata.var_names_make_unique())"
        )
    position = names.get_indexer(list(model.genes))
    found = position >= 0
    if found.mean() < MIN_SHARED_GENE_FRACTION:
        raise ValueError(
            f"the query holds {int(found.sum())} of the reference model's {len(model.genes)} genes (e.g. "
            f"{list(model.genes[:3])}); at least {MIN_SHARED_GENE_FRACTION:.0%} are needed. Name genes the way the "
            "reference did (gene_key=, the same identifier type), or integrate reference and query together"
        )
    select = sp.csr_matrix(
        (np.ones(int(found.sum()), dtype=np.float32), (position[found], np.flatnonzero(found))),
        shape=(counts.shape[1], len(model.genes)),
    )
    aligned = sp.csr_matrix(counts @ select)
    names = batches.astype(str).to_numpy()
    new = sorted(set(names) - set(model.batches))
    mapped, trained = model, None
    if model.encodes_batch and new:
        order = np.argsort(np.asarray(adata.obs_names, dtype=str), kind="stable")
        batch_names = (*model.batches, *new)
        codes = pd.Index(batch_names).get_indexer(names)
        fit = fit_new_batches(
            model.module.with_new_batches(len(new)),
            aligned[order],
            codes[order],
            n_new=len(new),
            **_training(settings),
        )
        embedding = np.empty_like(fit.latent)
        embedding[order] = fit.latent
        trained = {"new_batches": new, "epochs": fit.epochs, "final_loss": fit.loss_per_epoch[-1]}
        trained |= {"train_seconds": fit.seconds, "batch_size": settings.batch_size, "lr": settings.lr}
        trained["seed"] = settings.seed
        mapped = CountVAEModel(fit.module, model.genes, batch_names, model.record)
    else:
        codes = pd.Index(model.batches).get_indexer(names)
        embedding = model.encode(aligned, np.maximum(codes, 0), device=settings.device)
    record = {
        "method": "vae",
        "mode": "query_mapping",
        "batches": sorted(pd.unique(batches.astype(str))),
        "reference_batches": list(model.batches),
        "genes_used": len(model.genes),
        "genes_found": int(found.sum()),
        "n_latent": model.n_latent,
        "reference_record": dict(model.record),
        "query_training": trained,
    }
    return VAEIntegration(embedding, record, None, mapped)


def _training(settings: VAESettings) -> dict[str, Any]:
    """Return the optimisation arguments shared by fitting a VAE and fitting a query's new batches."""
    return {
        "max_epochs": settings.max_epochs,
        "batch_size": settings.batch_size,
        "lr": settings.lr,
        "seed": settings.seed,
        "device": settings.device,
    }


def _gene_names(adata: AnnData, settings: VAESettings) -> pd.Index:
    """Return the genes of the matrix the VAE reads: ``var[gene_key]`` if given, else the var names (raw's if used)."""
    var = expression_source(adata, layer=settings.layer, use_raw=settings.use_raw).var
    if settings.gene_key is None:
        return var.index.astype(str)
    if settings.gene_key not in var:
        raise KeyError(f"gene_key={settings.gene_key!r} is not a column of var (columns: {list(var.columns)})")
    return pd.Index(var[settings.gene_key].astype(str))


def _counts(adata: AnnData, settings: VAESettings) -> sp.csr_matrix:
    source = expression_source(adata, layer=settings.layer, use_raw=settings.use_raw)
    if source.is_backed:
        raise ValueError("method='vae' needs the matrix in memory; load the AnnData without backed mode")
    check_values(source.matrix, where=source.label)
    matrix = sp.csr_matrix(source.matrix, dtype=np.float32, copy=True)
    if detect_input_kind(matrix) == "log1p":
        raise ValueError(
            f"{source.label} looks log-normalised (non-integer values, max <= 30); method='vae' models counts. Pass "
            "the raw counts (layer='counts' or use_raw=True), or method='finetune'"
        )
    empty = int(np.count_nonzero(np.diff(matrix.indptr) == 0))
    if empty:
        raise ValueError(
            f"{empty} cells have no counts in {source.label}; drop them (sc.pp.filter_cells(min_counts=1))"
        )
    return matrix
