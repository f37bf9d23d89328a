"""``scfm.tl.impute``: expression of genes a panel did not measure, predicted by a CellPLM model."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from scfm._validation import checked_arguments
from scfm.genes import GeneRules, GeneVocab
from scfm.models import ModelArg

from ._denoise import (
    check_arguments,
    check_dense_size,
    counts_record,
    plan_counts,
)
from ._provenance import write_provenance


def _requested_genes(genes: str | Sequence[str]) -> list[str]:
    if isinstance(genes, str):
        genes = [genes]
    try:
        genes = list(genes)
    except TypeError as err:
        raise TypeError(f"genes must be a gene name or a list of gene names, got {type(genes).__name__}") from err
    if not genes:
        raise ValueError("genes is empty; name at least one gene to impute, e.g. genes=['CD3E']")
    not_strings = [g for g in genes if not isinstance(g, str) or not g]
    if not_strings:
        raise TypeError(f"genes must be non-empty strings, got {not_strings[:5]!r}")
    genes = [str(g) for g in genes]  # numpy strings become plain ones (column names, provenance)
    duplicated = list(dict.fromkeys(pd.Index(genes)[pd.Index(genes).duplicated()]))
    if duplicated:
        raise ValueError(f"genes lists {duplicated[:10]!r} more than once; each gene can be imputed once")
    return genes


def _gene_ids(genes: list[str], vocab: GeneVocab) -> np.ndarray:
    """Vocabulary ids of ``genes`` (exact match, then case-insensitive), with clear errors."""
    ids = vocab.lookup(genes)
    unmatched = np.flatnonzero(ids < 0)
    if unmatched.size:
        ids[unmatched] = vocab.lookup_casefold([genes[i] for i in unmatched])
    missing = [genes[i] for i in np.flatnonzero(ids < 0)]
    if missing:
        shown = ", ".join(repr(g) for g in missing[:10]) + (", ..." if len(missing) > 10 else "")
        raise ValueError(
            f"{len(missing)} of the {len(genes)} genes to impute are not in the model's vocabulary "
            f"({len(vocab.genes)} genes): {shown}; a model can only predict genes it was trained on (check the "
            "spelling and the id type: the vocabulary holds gene symbols)"
        )
    same = pd.Series(genes).groupby(ids).agg(list)
    clashes = [names for names in same if len(names) > 1]
    if clashes:
        raise ValueError(
            f"genes {clashes[:5]!r} name the same vocabulary gene (names equal up to case); list each gene once"
        )
    return ids


@checked_arguments
def impute(
    adata: AnnData,
    genes: str | Sequence[str],
    model: ModelArg = "cellplm",
    *,
    layer: str | None = None,
    gene_key: str | None = None,
    sample_key: str | None = None,
    spatial_key: str | None = None,
    context: int | None = None,
    seed: int = 0,
    key_added: str = "scfm_imputed",
    min_genes: int = 10,
    on_duplicate: Literal["error", "first"] = "error",
    gene_id_type: Literal["auto", "symbol", "ensembl"] = "auto",
    species: Literal["human", "mouse"] = "human",
    aliases: bool = False,
    max_dense_gb: float = 8.0,
    device: str = "auto",
    block_size: int = 4096,
    progress: bool = True,
    copy: bool = False,
) -> AnnData | None:
    """Impute genes a panel did not measure (e.g. a targeted spatial panel) with a CellPLM model.

    Each cell is read in its tissue context (a sentence of cells of its sample, or its spatial neighbourhood with
    ``spatial_key``) from the genes it measured that the model knows (its panel). The negative-binomial decoder
    gives proportions ``p = softmax(logits)`` over the whole vocabulary; the panel holds a share ``s`` of them
    (the sum of ``p`` over the panel genes). The expected count of a requested gene ``g`` is
    ``p_g / s * library``, ``library`` being the cell's observed counts over the panel: the prediction is on the
    scale of the measured counts.

    Parameters
    ----------
    adata
        Cells x genes raw counts of the measured panel (dense, sparse or backed ``.h5ad``; read ``block_size``
        rows at a time). Non-integer (e.g. log-normalised) values are refused.
    genes
        Gene names to predict, as in the model's vocabulary (a case-insensitive match is accepted when
        unambiguous, like ``Cd3e`` for ``CD3E``). Genes that the panel also measures are allowed: they get the
        model's prediction from the cell's context and its whole panel (which includes the gene itself), useful
        for held-out evaluation against the measurement; to evaluate a gene truly held out, remove it from
        ``adata`` first.
    model
        A CellPLM checkpoint directory (written by :meth:`~scfm.models.CellPLM.save`), the bundled name
        ``"cellplm"``, or a :class:`~scfm.models.CellPLM` instance. Nothing is downloaded.
    layer
        Layer holding the counts (default ``X``).
    gene_key
        ``adata.var`` column with gene symbols (default: ``var_names``).
    sample_key
        ``adata.obs`` column: cells of one sample form sentences together (default: all cells are one sample).
        A sample with a single cell is an error.
    spatial_key
        ``adata.obsm`` key of ``(n_obs, 2)`` coordinates: sentences become spatial neighbourhoods and the model's
        positional encoding sees them.
    context
        Cells per sentence (default: the checkpoint's).
    seed
        Seed of the grouping of non-spatial cells into sentences.
    key_added
        Results go to ``adata.obsm[key_added]`` and ``adata.uns["scfm"][key_added]``.
    min_genes, on_duplicate
        Gene-alignment rules for the panel, see :func:`scfm.genes.align_genes`.
    gene_id_type, species, aliases
        Gene-alignment rules, see :func:`scfm.genes.align_genes`: ``gene_id_type`` (``"auto"``, ``"symbol"`` or
        ``"ensembl"``) says what the names are, ``species="mouse"`` matches mouse symbols case-insensitively to
        the human vocabulary without the human gene table, ``aliases=True`` also resolves aliases and previous
        symbols of genes that match no other way (off by default: it can change which genes are used).
    max_dense_gb
        Largest result (``n_obs x len(genes)`` float32) accepted, in gigabytes.
    device
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``...
    block_size
        Rows read from the matrix at a time (memory only; results do not depend on it).
    progress
        Show a progress bar.
    copy
        Return a modified copy instead of writing into ``adata`` (not for backed AnnData).

    Returns
    -------
    ``None`` (or the copy when ``copy=True``). Sets

    ``adata.obsm[key_added]``
        :class:`pandas.DataFrame` of float32 expected counts, index ``obs_names``, one column per requested gene
        named as given.
    ``adata.uns["scfm"][key_added]``
        Provenance: model, checkpoint sha256, panel genes matched, genes imputed (and which of them the panel
        measured), sentence plan, parameters, version.

    Notes
    -----
    The result depends on which cells share a sentence (``sample_key``, ``spatial_key``, ``context``, ``seed``)
    but not on the order of the cells or on ``block_size``. A cell with no counts over the panel gets zeros.
    On error nothing is written: the AnnData is left unchanged.

    Examples
    --------
    >>> scfm.tl.impute(spatial, ["CD3E", "MS4A1"], "path/to/cellplm_checkpoint", spatial_key="spatial")
    >>> spatial.obs["CD3E_imputed"] = spatial.obsm["scfm_imputed"]["CD3E"]
    """
    start_time = time.perf_counter()
    check_arguments(adata, copy=copy, block_size=block_size, max_dense_gb=max_dense_gb, key=key_added, what="impute")
    requested = _requested_genes(genes)
    check_dense_size(adata.n_obs, len(requested), max_dense_gb, "imputed matrix")
    plan = plan_counts(
        adata,
        model,
        layer=layer,
        gene_key=gene_key,
        sample_key=sample_key,
        spatial_key=spatial_key,
        context=context,
        seed=seed,
        min_genes=min_genes,
        on_duplicate=on_duplicate,
        device=device,
        gene_rules=GeneRules(gene_id_type=gene_id_type, species=species, aliases=aliases),
    )
    vocab = plan.pretrained.vocab
    ids = _gene_ids(requested, vocab)
    panel = set(plan.alignment.token_ids.tolist())
    in_panel = [gene for gene, i in zip(requested, ids.tolist(), strict=True) if i in panel]

    imputed = np.zeros((adata.n_obs, len(requested)), dtype=np.float32)
    n_empty = 0
    for cells, values in plan.pretrained.spec.iter_expected_counts(plan, ids, block_size=block_size, progress=progress):
        imputed[cells] = values
        n_empty += int(np.count_nonzero(values.sum(1) == 0))
    result = pd.DataFrame(imputed, index=adata.obs_names.copy(), columns=pd.Index(requested, dtype=object))

    if copy:
        adata = adata.copy()
    adata.obsm[key_added] = result
    write_provenance(
        adata,
        key_added,
        counts_record(
            plan,
            task="impute",
            genes=requested,
            vocab_genes=[vocab.token(int(i)) for i in ids],
            genes_in_panel=in_panel,
            sample_key=sample_key,
            spatial_key=spatial_key,
            seed=seed,
            n_empty_cells=n_empty,
            seconds=time.perf_counter() - start_time,
        ),
    )
    return adata if copy else None
