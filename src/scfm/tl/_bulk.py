"""``scfm.tl.bulk_features``: tGPT embeddings of bulk expression samples (tumours, tissues)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from anndata import AnnData

from scfm._validation import checked_arguments
from scfm.data import expression_source, iter_row_blocks
from scfm.models import ModelArg, NoKnownGenesError, resolve_model

from ._embed import embed
from ._provenance import check_anndata

# tl.embed's input kinds (from scfm.tokenize.detect_input_kind), named for bulk data
BULK_SCALES = {"counts": "counts", "log1p": "log", "nonnegative": "linear"}


@checked_arguments
def bulk_features(
    bdata: AnnData,
    *,
    model: ModelArg = "tgpt",
    layer: str | None = None,
    gene_key: str | None = None,
    key_added: str = "X_scfm_bulk",
    min_genes: int = 50,
    gene_id_type: Literal["auto", "symbol", "ensembl"] = "auto",
    species: Literal["human", "mouse"] = "human",
    aliases: bool = False,
    batch_size: int = 64,
    device: str = "auto",
    progress: bool = False,
    copy: bool = False,
) -> AnnData | None:
    """Embed bulk samples (e.g. tumours) with a tGPT model, for survival or mutation analyses.

    A sample becomes its expressed genes that the model knows, ranked by value (highest first, ties by
    vocabulary id) and cut to the model's context; its feature vector is the mean of the model's last hidden
    states over those genes, L2-normalised.

    Because only the order of genes within a sample matters, the features are the same whether the matrix holds
    counts, TPM/FPKM, or ``log(x + 1)``-type values of them (any per-sample increasing transform that keeps 0 at
    0). The detected scale is recorded in the provenance. Negative values (log with a pseudo-count below 1,
    centred or z-scored data) are rejected: they no longer separate unexpressed from expressed genes.

    Parameters
    ----------
    bdata
        Samples x genes (dense or sparse) with gene symbols in ``var_names`` or ``var[gene_key]``.
    model
        ``"tgpt"`` (bundled default), a tGPT checkpoint directory, or a :class:`~scfm.models.TGPT` instance.
    layer
        Layer to read instead of ``bdata.X``.
    gene_key
        ``var`` column with gene symbols.
    key_added
        Results go to ``bdata.obsm[key_added]`` and ``bdata.uns["scfm"][key_added]``.
    min_genes
        Fewest genes that must match the vocabulary.
    gene_id_type, species, aliases
        Gene-alignment rules, see :func:`scfm.genes.align_genes`: ``gene_id_type`` (``"auto"``, ``"symbol"`` or
        ``"ensembl"``) says what the names are, ``species="mouse"`` matches mouse symbols case-insensitively to
        the human vocabulary without the human gene table, ``aliases=True`` also resolves aliases and previous
        symbols of genes that match no other way (off by default: it can change which genes are used).
    batch_size, device, progress
        As in :func:`scfm.tl.embed`.
    copy
        Return a modified copy instead of writing into ``bdata``.

    Returns
    -------
    ``None`` (or the copy when ``copy=True``). Sets ``bdata.obsm[key_added]`` (samples x d_model, float32) and
    the provenance ``bdata.uns["scfm"][key_added]`` (model, genes matched, ``input_scale``, samples whose
    ranking was cut to the context, ...). On error ``bdata`` is left unchanged.

    Examples
    --------
    >>> scfm.tl.bulk_features(tumours)
    >>> scfm.tl.associate(tumours, "X_scfm_bulk", duration_key="time", event_key="event")
    """
    check_anndata(bdata)
    if bdata.n_obs == 0:
        raise ValueError("the AnnData has no samples (n_obs == 0)")
    pretrained = resolve_model(model, capability="bulk_features")
    source = expression_source(bdata, layer=layer)
    for _, _, block in iter_row_blocks(source.matrix, 4096):
        if not np.all(np.isfinite(block.data)):
            raise ValueError(f"{source.label} contains NaN/inf values; remove or impute them before ranking genes")
        if block.nnz and block.data.min() < 0:
            raise ValueError(
                f"{source.label} has negative values (min {block.data.min():.3g}): tGPT ranks expressed genes, so it "
                "needs expression levels where 0 means not expressed: counts, TPM/FPKM, or log(x + 1) of them. Log "
                "values with a pseudo-count below 1, centred or z-scored data cannot be used; pass the un-centred "
                "values (e.g. 2**x - pseudo_count for log2(x + pseudo_count))"
            )
    try:
        result = embed(
            bdata,
            pretrained,
            layer=layer,
            gene_key=gene_key,
            batch_size=batch_size,
            key_added=key_added,
            device=device,
            min_genes=min_genes,
            gene_id_type=gene_id_type,
            species=species,
            aliases=aliases,
            progress=progress,
            copy=copy,
        )
    except NoKnownGenesError as err:
        raise NoKnownGenesError(f"{err}. In bulk data this usually means an all-zero sample row.") from err
    target = result if copy else bdata
    record = target.uns["scfm"][key_added]
    record["input_scale"] = BULK_SCALES[record["input_kind"]]
    record["task"] = "bulk_features"
    return result
