"""``scfm.tl.gene_network``: a sparse gene-gene network from a model, written to ``adata.varp``."""

from __future__ import annotations

import time
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from scfm._validation import checked_arguments, integer, one_of, text
from scfm.data import expression_source
from scfm.genes import align_genes
from scfm.models import ModelArg, resolve_device, resolve_model
from scfm.models.base import AttentionRequest

from ._network_graph import cosine_top_k_graph, embed_in_vars, top_k_graph
from ._provenance import check_anndata, check_result_key, checkpoint_and_genes, write_provenance

METHODS = ("embedding", "attention")


def _cells(adata: AnnData, groupby: str | None, group: str | None, min_cells: int) -> np.ndarray | None:
    """Row positions of the cells of ``group`` in ``obs[groupby]`` (``None``: every cell)."""
    if groupby is None:
        if group is not None:
            raise ValueError(f"group={group!r} needs groupby= naming the adata.obs column it belongs to")
        if adata.n_obs < min_cells:
            raise ValueError(
                f"the AnnData has {adata.n_obs} cells; method='attention' needs at least min_cells={min_cells}"
            )
        return None
    if groupby not in adata.obs.columns:
        raise KeyError(f"groupby={groupby!r} is not a column of adata.obs (columns: {list(adata.obs.columns)[:20]})")
    if group is None:
        raise ValueError(
            f"groupby={groupby!r} needs group= naming the cells to aggregate over (one value of the column)"
        )
    labels = adata.obs[groupby].astype(str).to_numpy()
    rows = np.flatnonzero(labels == str(group))
    if rows.size == 0:
        values = sorted(pd.unique(labels))[:20]
        raise ValueError(f"group={group!r} does not occur in adata.obs[{groupby!r}] (values: {values})")
    if rows.size < min_cells:
        raise ValueError(
            f"group={group!r} of adata.obs[{groupby!r}] has {rows.size} cells, fewer than min_cells={min_cells}; "
            "pick a larger group or lower min_cells"
        )
    return rows


def _network_positions(
    adata: AnnData, source_var: pd.DataFrame, alignment, genes
) -> tuple[np.ndarray, np.ndarray, int]:
    """Positions in ``adata.var`` and vocabulary ids of the network genes, and how many asked genes are unknown.

    ``genes`` (``adata.var_names``; ``None``: every gene) restricts the network. Returns the positions, the token
    ids, and the number of requested genes outside the vocabulary.
    """
    var_positions = pd.Index(adata.var_names).get_indexer(pd.Index(source_var.index))
    matched = var_positions[alignment.var_index]
    token_ids = np.asarray(alignment.token_ids)
    in_adata = matched >= 0
    matched, token_ids = matched[in_adata], token_ids[in_adata]
    if genes is None:
        wanted = np.ones(adata.n_vars, dtype=bool)
    else:
        names = [genes] if isinstance(genes, str) else list(genes)
        index = pd.Index(adata.var_names).get_indexer(pd.Index(names))
        unknown = [name for name, i in zip(names, index, strict=True) if i < 0]
        if unknown:
            raise ValueError(
                f"{len(unknown)} of {len(names)} genes are not in adata.var_names: {unknown[:10]}; pass names of "
                "adata.var_names"
            )
        wanted = np.zeros(adata.n_vars, dtype=bool)
        wanted[index] = True
    keep = wanted[matched]
    order = np.argsort(matched[keep], kind="stable")
    positions, token_ids = matched[keep][order], token_ids[keep][order]
    return positions, token_ids, int(wanted.sum()) - positions.size


@checked_arguments(
    method=one_of(*METHODS),
    groupby=text(),
    group=text(),
    min_cells=integer(1),
    attention_layer=integer(),
    max_genes=integer(2),
)
def gene_network(
    adata: AnnData,
    model: ModelArg = None,
    *,
    method: Literal["embedding", "attention"] = "embedding",
    genes: list[str] | None = None,
    top_k: int = 20,
    groupby: str | None = None,
    group: str | None = None,
    layer: str | None = None,
    use_raw: bool = False,
    gene_key: str | None = None,
    min_genes: int = 50,
    on_duplicate: Literal["error", "first"] = "error",
    gene_id_type: Literal["auto", "symbol", "ensembl"] = "auto",
    species: Literal["human", "mouse"] = "human",
    aliases: bool = False,
    min_cells: int = 10,
    attention_layer: int = -1,
    max_len: int | None = None,
    max_genes: int = 5000,
    batch_size: int = 16,
    block_size: int = 1024,
    device: str = "auto",
    progress: bool = False,
    key_added: str = "scfm_gene_network",
    copy: bool = False,
) -> AnnData | None:
    """Infer a gene-gene network with a pretrained model and store it as a sparse matrix in ``adata.varp``.

    ``method="embedding"`` (zero-shot, as in the scGPT paper): cosine similarity of the model's gene embeddings;
    each gene keeps its ``top_k`` most similar genes (positive similarity only) and the union of those edges is
    stored in both directions, so the matrix is **symmetric** and a row may hold more than ``top_k`` entries
    (at most ``2 * top_k * n_genes`` in all). No cells are read.

    ``method="attention"``: the model's attention between gene tokens, read from one transformer layer and averaged
    over heads, aggregated over the cells of ``adata`` (or of ``group`` in ``obs[groupby]``). For each cell, the
    attention that gene ``j``'s token pays to gene ``i``'s token is multiplied by the cell's number of tokens (so 1
    means uniform attention) and averaged over the cells whose tokens hold both genes. ``varp[i, j]`` is that
    score: the matrix is **directed**; row ``i`` keeps the ``top_k`` genes that attend most to gene ``i``. Cells
    are streamed ``block_size`` rows at a time and ``batch_size`` cells per forward pass; memory is bounded by
    ``12 * n_genes**2`` bytes of accumulators plus about ``3 * batch_size * max_len**2`` float32 for one batch's
    attention, whatever the number of cells (never heads x cells x length**2). The zero-shot attention of a
    pretrained, not fine-tuned model is what is computed; the paper reads attention after fine-tuning.

    Genes outside the model's vocabulary (or outside ``genes``) get empty rows and columns; their number is
    recorded in the provenance.

    Parameters
    ----------
    adata
        Cells x genes; for ``method="attention"``, raw counts or log-normalised values (as for :func:`scfm.tl.embed`).
    model
        ``None`` for the bundled default checkpoint, a bundled name, a checkpoint directory or a model instance
        whose family can infer gene networks (scGPT).
    method
        ``"embedding"`` or ``"attention"``.
    genes
        Names of ``adata.var_names`` to build the network over (e.g. highly variable genes); default every gene
        the model knows. Needed for ``method="attention"`` when more than ``max_genes`` genes match.
    top_k
        Edges kept per gene; at most the number of network genes minus one.
    groupby, group
        ``method="attention"`` only: aggregate over the cells whose ``obs[groupby]`` equals ``group``.
    layer, use_raw, gene_key, min_genes, on_duplicate, gene_id_type, species, aliases
        Which matrix and gene names to read, and the gene-alignment rules of :func:`scfm.genes.align_genes`
        (as in :func:`scfm.tl.embed`).
    min_cells
        Fewest cells (of ``group``) that ``method="attention"`` accepts.
    attention_layer
        Transformer layer whose attention is read (negative counts from the last).
    max_len
        Tokens per cell including ``<cls>`` (default: the checkpoint's); cells with more known expressed genes are
        subsampled with a generator seeded from the cell.
    max_genes
        Most network genes ``method="attention"`` accepts (its accumulators take ``12 * n_genes**2`` bytes).
    batch_size, block_size, device, progress
        Cells per forward pass, rows read at a time, device, progress bar (results do not depend on the sizes
        beyond float rounding).
    key_added
        Results go to ``adata.varp[key_added]`` and ``adata.uns["scfm"][key_added]``.
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    ``None`` (or the copy when ``copy=True``). Sets

    ``adata.varp[key_added]``
        ``n_vars x n_vars`` float32 CSR matrix of edge weights (cosine similarity, or attention relative to
        uniform).
    ``adata.uns["scfm"][key_added]``
        Provenance: model, method, ``top_k``, genes in the network, genes outside the vocabulary, cells used.

    Notes
    -----
    Every argument is checked before anything is computed; on error the AnnData is unchanged. Published
    evaluations found foundation-model networks near expression correlation or below it; see
    ``docs/gene_networks.md`` for this package's numbers.

    Examples
    --------
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> scfm.tl.gene_network(adata, use_raw=True, min_genes=20)
    >>> scfm.tl.gene_programs(adata)
    """
    check_anndata(adata)
    check_result_key(adata, key_added)
    if copy and adata.isbacked:
        raise ValueError("copy=True is not supported for a backed AnnData; use copy=False (results go to varp/uns)")
    if method == "embedding":
        given = [name for name, value in (("groupby", groupby), ("group", group), ("max_len", max_len)) if value]
        if given:
            raise ValueError(f"{given} only apply to method='attention'; method='embedding' reads no cells")
        rows = None
    else:
        if adata.n_obs == 0:
            raise ValueError("the AnnData has no cells (n_obs == 0); method='attention' aggregates over cells")
        rows = _cells(adata, groupby, group, min_cells)
    source = expression_source(adata, layer=layer, use_raw=use_raw)
    pretrained = resolve_model(model, capability="gene_network")
    family = pretrained.spec
    if method not in family.network_methods:
        raise ValueError(
            f"method={method!r} is not available for {family.a_label} model (it offers {list(family.network_methods)})"
        )
    alignment = align_genes(
        source.var,
        pretrained.vocab,
        gene_key=gene_key,
        min_genes=min_genes,
        on_duplicate=on_duplicate,
        gene_id_type=gene_id_type,
        species=species,
        aliases=aliases,
    )
    positions, token_ids, n_out_of_vocabulary = _network_positions(adata, source.var, alignment, genes)
    n_genes = positions.size
    if n_genes < 2:
        raise ValueError(
            f"only {n_genes} of the requested genes are in the model's vocabulary; a network needs at least 2 "
            f"({alignment.summary()})"
        )
    if top_k > n_genes - 1:
        raise ValueError(f"top_k={top_k} is more than the {n_genes - 1} other genes in the network; lower top_k")
    if method == "attention" and n_genes > max_genes:
        raise ValueError(
            f"{n_genes} genes match the vocabulary, more than max_genes={max_genes} for method='attention' "
            f"(accumulators of 12 * n_genes**2 bytes); pass genes= (e.g. highly variable genes) or raise max_genes"
        )
    target = resolve_device(device)
    pretrained.module.to(target)
    start = time.perf_counter()
    record: dict = {}
    if method == "embedding":
        graph = cosine_top_k_graph(family.gene_embeddings(pretrained, token_ids), top_k)
        n_cells = 0
    else:
        request = AttentionRequest(target, batch_size, block_size, rows, attention_layer, max_len, progress)
        scores = family.attention_scores(pretrained, source, alignment, token_ids, request)
        graph = top_k_graph(scores.scores, top_k)
        n_cells, record = scores.n_cells, scores.record
    varp = embed_in_vars(graph, positions, adata.n_vars)
    seconds = time.perf_counter() - start
    if copy:
        adata = adata.copy()
    adata.varp[key_added] = varp
    write_provenance(
        adata,
        key_added,
        {
            **checkpoint_and_genes(pretrained, alignment, source),
            "method": method,
            "top_k": top_k,
            "symmetric": method == "embedding",
            "edge_meaning": "cosine similarity of gene embeddings"
            if method == "embedding"
            else "varp[i, j]: attention gene j pays to gene i, relative to uniform, mean over cells with both",
            "n_genes_network": int(n_genes),
            "n_genes_out_of_vocabulary": int(n_out_of_vocabulary),
            "n_edges": int(varp.nnz),
            "groupby": groupby,
            "group": group,
            "n_cells": int(n_cells),
            **record,
            "device": str(target),
            "seconds": seconds,
        },
    )
    return adata if copy else None
