"""Gene overlap between an AnnData and a model vocabulary."""

from __future__ import annotations

from typing import Literal

from anndata import AnnData

from scfm._validation import checked_arguments
from scfm.data import expression_source
from scfm.genes import GeneAlignment, align_genes
from scfm.models import ModelArg, resolve_model


@checked_arguments
def gene_overlap(
    adata: AnnData,
    model: ModelArg = None,
    *,
    use_raw: bool = False,
    gene_key: str | None = None,
    min_genes: int = 0,
    on_duplicate: Literal["error", "first"] = "error",
) -> GeneAlignment:
    """How ``adata``'s genes meet a model's vocabulary, without running the model or changing ``adata``.

    Parameters
    ----------
    adata
        The data to check.
    model
        As in :func:`scfm.tl.embed` (``None`` = bundled default).
    use_raw, gene_key, on_duplicate
        As in :func:`scfm.tl.embed`.
    min_genes
        Raise when fewer genes match (default 0: only report).

    Returns
    -------
    The :class:`~scfm.genes.GeneAlignment`; ``print(result.summary())`` for a one-line report.
    """
    source = expression_source(adata, use_raw=use_raw)
    vocab = resolve_model(model).vocab
    return align_genes(source.var, vocab, gene_key=gene_key, min_genes=min_genes, on_duplicate=on_duplicate)
