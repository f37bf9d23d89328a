"""``scfm.tl.gene_embeddings``: a model's gene embeddings, one row per gene of ``adata.var``, in ``adata.varm``."""

from __future__ import annotations

from typing import Literal

import numpy as np
from anndata import AnnData

from scfm._validation import checked_arguments
from scfm.genes import align_genes
from scfm.models import ModelArg, resolve_model

from ._provenance import check_anndata, check_result_key, gene_fields, write_provenance


@checked_arguments()
def gene_embeddings(
    adata: AnnData,
    model: ModelArg = None,
    *,
    gene_key: str | None = None,
    min_genes: int = 50,
    on_duplicate: Literal["error", "first"] = "error",
    gene_id_type: Literal["auto", "symbol", "ensembl"] = "auto",
    species: Literal["human", "mouse"] = "human",
    aliases: bool = False,
    key_added: str = "scfm_gene_embedding",
    copy: bool = False,
) -> AnnData | None:
    """Store the model's embedding of every gene of ``adata.var`` in ``adata.varm[key_added]`` (zero-shot).

    The embedding of a gene is the one the model's gene-embedding network uses (token embedding and its layer norm:
    the vectors whose cosine similarities :func:`scfm.tl.gene_network` ranks). No cells are read. Genes outside the
    model's vocabulary get a row of NaN; their number is recorded in the provenance.

    Parameters
    ----------
    adata
        AnnData whose genes (``var_names``, or the ``gene_key`` column of ``var``) are embedded.
    model
        ``None`` for the bundled default checkpoint, a bundled name, a checkpoint directory or a model instance of
        a family that serves gene embeddings (scGPT).
    gene_key, min_genes, on_duplicate, gene_id_type, species, aliases
        Gene names and the gene-alignment rules of :func:`scfm.genes.align_genes` (as in :func:`scfm.tl.embed`).
    key_added
        ``adata.varm`` key and ``adata.uns["scfm"]`` key of the result.
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    ``None`` (or the copy with ``copy=True``); sets

    ``adata.varm[key_added]``
        ``(n_vars, width)`` float32; NaN rows for genes outside the vocabulary.
    ``adata.uns["scfm"][key_added]``
        Checkpoint, gene matches by kind, width, genes outside the vocabulary.

    Examples
    --------
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> scfm.tl.gene_embeddings(adata, min_genes=20)
    >>> known = np.isfinite(adata.varm["scfm_gene_embedding"][:, 0])
    """
    check_anndata(adata)
    check_result_key(adata, key_added)
    pretrained = resolve_model(model, capability="gene_network")
    alignment = align_genes(
        adata.var,
        pretrained.vocab,
        gene_key=gene_key,
        min_genes=min_genes,
        on_duplicate=on_duplicate,
        gene_id_type=gene_id_type,
        species=species,
        aliases=aliases,
    )
    vectors = np.asarray(pretrained.spec.gene_embeddings(pretrained, alignment.token_ids), dtype=np.float32)
    embedding = np.full((adata.n_vars, vectors.shape[1]), np.nan, dtype=np.float32)
    embedding[alignment.var_index] = vectors
    if copy:
        adata = adata.copy()
    adata.varm[key_added] = embedding
    write_provenance(
        adata,
        key_added,
        {
            **pretrained.provenance(),
            **gene_fields(alignment),
            "width": int(vectors.shape[1]),
            "n_genes_out_of_vocabulary": int(adata.n_vars - alignment.var_index.size),
        },
    )
    return adata if copy else None
