"""``scfm.tl.denoise``: expected counts of every cell from a model that predicts counts (CellPLM's decoder).

The checks and the plan shared with :func:`scfm.tl.impute` live here too; the predictions come from the model's
family (capability ``"predict_counts"``).
"""

from __future__ import annotations

import os
import time
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from scfm._validation import checked_arguments
from scfm.data import expression_source
from scfm.genes import GeneRules
from scfm.models import FoundationModel, ModelArg, Pretrained, resolve_device, resolve_model

from ._provenance import check_anndata, check_result_key, checkpoint_and_genes, write_provenance

_BYTES_PER_GB = 1e9


def counts_record(plan, **extra: Any) -> dict[str, Any]:
    """Provenance fields common to the count tools."""
    return {
        **checkpoint_and_genes(plan.pretrained, plan.alignment, plan.source),
        "input_kind": "counts",
        "context": plan.context,
        "n_sentences": len(plan.sentences),
        "device": str(plan.device),
        **extra,
    }


def check_arguments(adata: AnnData, *, copy: bool, block_size: int, max_dense_gb: float, key: str, what: str) -> None:
    """Run the checks shared by the count tools that need neither the model nor the matrix."""
    check_anndata(adata)
    if adata.n_obs == 0:
        raise ValueError(f"the AnnData has no cells (n_obs == 0); nothing to {what}")
    if adata.n_vars == 0:
        raise ValueError("the AnnData has no genes (n_vars == 0)")
    if copy and adata.isbacked:
        raise ValueError("copy=True is not supported for a backed AnnData; use copy=False (results are kept in memory)")
    if isinstance(block_size, bool) or not isinstance(block_size, int | np.integer) or block_size < 1:
        raise ValueError(f"block_size must be an integer >= 1, got {block_size!r}")
    if not max_dense_gb > 0:
        raise ValueError(f"max_dense_gb must be positive, got {max_dense_gb!r}")
    check_result_key(adata, key, "the result key")


def check_dense_size(n_obs: int, n_columns: int, max_dense_gb: float, what: str) -> None:
    """Refuse a dense float32 result larger than ``max_dense_gb`` gigabytes (10^9 bytes)."""
    size_gb = n_obs * n_columns * 4 / _BYTES_PER_GB
    if size_gb > max_dense_gb:
        raise ValueError(
            f"the dense float32 {what} would take {size_gb:.2f} GB ({n_obs} cells x {n_columns} genes), more than "
            f"max_dense_gb={max_dense_gb:g}; subset the cells or genes (e.g. run on batches of cells) or raise "
            "max_dense_gb"
        )


def plan_counts(
    adata: AnnData,
    model: ModelArg,
    *,
    layer: str | None,
    gene_key: str | None,
    sample_key: str | None,
    spatial_key: str | None,
    context: int | None,
    seed: int,
    min_genes: int,
    on_duplicate: Literal["error", "first"],
    device: str,
    gene_rules: GeneRules = GeneRules(),
):
    """Resolve the matrix, a model that predicts counts, and the family's validated plan (nothing computed)."""
    source = expression_source(adata, layer=layer)
    target = resolve_device(device)
    if not isinstance(model, str | os.PathLike | FoundationModel | Pretrained | None):
        raise TypeError(
            "model must be a checkpoint directory, a bundled name such as 'cellplm', or a model instance, "
            f"got {type(model).__name__}"
        )
    pretrained = resolve_model(model, capability="predict_counts")
    return pretrained.spec.plan_counts(
        pretrained,
        adata,
        source,
        gene_key=gene_key,
        sample_key=sample_key,
        spatial_key=spatial_key,
        context=context,
        seed=seed,
        min_genes=min_genes,
        on_duplicate=on_duplicate,
        device=target,
        gene_rules=gene_rules,
    )


@checked_arguments
def denoise(
    adata: AnnData,
    model: ModelArg = "cellplm",
    *,
    layer: str | None = None,
    gene_key: str | None = None,
    sample_key: str | None = None,
    spatial_key: str | None = None,
    context: int | None = None,
    seed: int = 0,
    layer_added: str = "scfm_denoised",
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
    """Denoise counts with a CellPLM model: each cell's expected counts from its tissue context.

    Cells are grouped into sentences (chunks of a sample, or spatial neighbourhoods with ``spatial_key``), the
    transformer reads each sentence, and the negative-binomial decoder gives every cell a proportion per gene from
    its latent (posterior mean). A cell's denoised counts over the genes of ``adata`` that the model knows are
    ``softmax(decoder logits over those genes) * library``, ``library`` being the cell's observed counts over
    the same genes: the library is preserved, only its distribution over genes changes. Genes outside the
    vocabulary keep their observed values.

    Parameters
    ----------
    adata
        Cells x genes raw counts (dense, sparse or backed ``.h5ad``; read ``block_size`` rows at a time).
        Log-normalised or otherwise non-integer values are refused.
    model
        A CellPLM checkpoint directory (written by :meth:`~scfm.models.CellPLM.save`), the bundled name
        ``"cellplm"``, or a :class:`~scfm.models.CellPLM` instance. Nothing is downloaded.
    layer
        Layer holding the counts (default ``X``).
    gene_key
        ``adata.var`` column with gene symbols (default: ``var_names``).
    sample_key
        ``adata.obs`` column: cells of one sample (tissue section, donor...) form sentences together
        (default: all cells are one sample). A sample with a single cell is an error.
    spatial_key
        ``adata.obsm`` key of ``(n_obs, 2)`` coordinates: sentences become spatial neighbourhoods and the model's
        positional encoding sees them.
    context
        Cells per sentence (default: the checkpoint's).
    seed
        Seed of the grouping of non-spatial cells into sentences.
    layer_added
        The result goes to ``adata.layers[layer_added]``, the flag of denoised genes to
        ``adata.var[f"{layer_added}_matched"]`` and the provenance to ``adata.uns["scfm"][layer_added]``.
    min_genes, on_duplicate
        Gene-alignment rules, see :func:`scfm.genes.align_genes` (a spatial panel may hold only a few dozen
        genes).
    gene_id_type, species, aliases
        Gene-alignment rules, see :func:`scfm.genes.align_genes`: ``gene_id_type`` (``"auto"``, ``"symbol"`` or
        ``"ensembl"``) says what the names are, ``species="mouse"`` matches mouse symbols case-insensitively to
        the human vocabulary without the human gene table, ``aliases=True`` also resolves aliases and previous
        symbols of genes that match no other way (off by default: it can change which genes are used).
    max_dense_gb
        The result layer is a dense float32 ``n_obs x n_vars`` array (denoised counts are not sparse); a result
        larger than this many gigabytes is refused before anything is computed.
    device
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``...
    block_size
        Rows read from the matrix at a time (memory only; results do not depend on it).
    progress
        Show a progress bar.
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    ``None`` (or the copy when ``copy=True``). Sets

    ``adata.layers[layer_added]``
        Dense ``n_obs x n_vars`` float32: denoised counts for the matched genes, observed values elsewhere.
    ``adata.var[f"{layer_added}_matched"]``
        Whether the gene was denoised (known to the model).
    ``adata.uns["scfm"][layer_added]``
        Provenance: model, checkpoint sha256, genes matched, sentence plan, parameters, version.

    Notes
    -----
    The result depends on which cells share a sentence (``sample_key``, ``spatial_key``, ``context``, ``seed``)
    but not on the order of the cells or on ``block_size``. A cell with no counts over the matched genes stays
    all zero there. On error nothing is written: the AnnData is left unchanged.

    Examples
    --------
    >>> scfm.tl.denoise(adata, "path/to/cellplm_checkpoint", sample_key="sample")
    >>> sc.pp.normalize_total(adata, layer="scfm_denoised")
    """
    start_time = time.perf_counter()
    check_arguments(adata, copy=copy, block_size=block_size, max_dense_gb=max_dense_gb, key=layer_added, what="denoise")
    if layer is not None and layer_added == layer:
        raise ValueError(f"layer_added={layer_added!r} would overwrite the input counts; choose another layer_added")
    check_dense_size(adata.n_obs, adata.n_vars, max_dense_gb, "denoised layer")
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
    matched = np.zeros(adata.n_vars, dtype=bool)
    matched[plan.alignment.var_index] = True
    denoised = np.zeros((adata.n_obs, adata.n_vars), dtype=np.float32)
    unmatched = np.flatnonzero(~matched)

    def keep_observed(start: int, stop: int, block: sp.csr_matrix) -> None:
        if unmatched.size:
            denoised[start:stop, unmatched] = block[:, unmatched].toarray()

    var_index = plan.alignment.var_index
    n_empty = 0
    for cells, values in plan.pretrained.spec.iter_expected_counts(
        plan, plan.alignment.token_ids, block_size=block_size, progress=progress, on_block=keep_observed
    ):
        denoised[np.ix_(cells, var_index)] = values
        n_empty += int(np.count_nonzero(values.sum(1) == 0))

    if copy:
        adata = adata.copy()
    adata.layers[layer_added] = denoised
    adata.var[f"{layer_added}_matched"] = matched
    write_provenance(
        adata,
        layer_added,
        counts_record(
            plan,
            task="denoise",
            sample_key=sample_key,
            spatial_key=spatial_key,
            seed=seed,
            n_empty_cells=n_empty,
            seconds=time.perf_counter() - start_time,
        ),
    )
    return adata if copy else None
