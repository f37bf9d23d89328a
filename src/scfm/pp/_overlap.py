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
    gene_id_type: Literal["auto", "symbol", "ensembl"] = "auto",
    species: Literal["human", "mouse"] = "human",
    aliases: bool = False,
) -> GeneAlignment:
    """How ``adata``'s genes meet a model's vocabulary, without running the model or changing ``adata``.

    Every gene is matched as :func:`scfm.tl.embed` would match it (see :func:`scfm.genes.align_genes` and
    ``docs/genes.md``): exactly (``"direct"``), case-insensitively (``"case"``), through its Ensembl id
    (``"ensembl"``) or, with ``aliases=True``, through an alias or previous symbol (``"alias"``). Names that map to
    several genes are ``"ambiguous"`` and not matched; columns that resolve to a token another column keeps are
    ``"duplicate"``.

    Parameters
    ----------
    adata
        The data to check.
    model
        As in :func:`scfm.tl.embed` (``None`` = bundled default).
    use_raw, gene_key, on_duplicate, gene_id_type, species, aliases
        As in :func:`scfm.tl.embed`.
    min_genes
        Raise when fewer genes match (default 0: only report).

    Returns
    -------
    The :class:`~scfm.genes.GeneAlignment`: ``print(result.summary())`` for a one-line report, ``result.counts()``
    for the number of genes per match kind, ``result.report()`` for a table with one row per gene (how it matched,
    the vocabulary token, the official symbol it went through) and ``result.ambiguous()`` for the names not guessed.

    Examples
    --------
    >>> overlap = scfm.pp.gene_overlap(adata, gene_key="gene_ids")
    >>> print(overlap.summary())
    >>> overlap.report().query("match == 'unmatched'")
    """
    source = expression_source(adata, use_raw=use_raw)
    vocab = resolve_model(model).vocab
    return align_genes(
        source.var,
        vocab,
        gene_key=gene_key,
        min_genes=min_genes,
        on_duplicate=on_duplicate,
        gene_id_type=gene_id_type,
        species=species,
        aliases=aliases,
    )
