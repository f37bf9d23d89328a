"""``scfm.tl.embed``: cell embeddings from a pretrained model."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any, Literal

from anndata import AnnData

from scfm._validation import checked_arguments
from scfm.data import ExpressionSource, expression_source
from scfm.genes import GeneAlignment, GeneRules, align_genes
from scfm.models import EmbedRequest, ModelArg, Pretrained, resolve_device, resolve_model
from scfm.models.base import Embedding
from scfm.models.base._device import compute_dtype_name

from ._provenance import check_anndata, check_result_key, checkpoint_and_genes, write_provenance


@checked_arguments
def embed(
    adata: AnnData,
    model: ModelArg = None,
    *,
    layer: str | None = None,
    use_raw: bool = False,
    gene_key: str | None = None,
    batch_size: int = 64,
    key_added: str = "X_scfm",
    device: str = "auto",
    normalize: bool = True,
    max_len: int | None = None,
    min_genes: int = 50,
    on_duplicate: Literal["error", "first"] = "error",
    gene_id_type: Literal["auto", "symbol", "ensembl"] = "auto",
    species: Literal["human", "mouse"] = "human",
    aliases: bool = False,
    block_size: int = 4096,
    sample_key: str | None = None,
    spatial_key: str | None = None,
    context: int | None = None,
    progress: bool = True,
    precision: Literal["fp32", "bf16"] = "fp32",
    copy: bool = False,
) -> AnnData | None:
    """Embed cells with a pretrained single-cell foundation model.

    scGPT models (the default): cells are tokenised as ``<cls>`` plus their expressed genes that the model knows, with
    per-cell quantile-binned values; cells expressing more than ``max_len - 1`` such genes are subsampled with a
    generator seeded from the cell itself, so a cell's embedding never depends on the batch, the chunk, or the order of
    cells. scMulan models (``model="scmulan"``): a cell is its c-sentence (expressed known genes with fixed-width
    expression levels, highest first, equal levels in a cell-seeded order) and the embedding is the mean of the last
    hidden states over its gene words. tGPT models (``model="tgpt"``): a cell is its expressed known genes ranked by
    expression (highest first, ties by vocabulary id, cut to the context) and the embedding is the mean of the last
    hidden states over those genes. CellPLM models (``model="cellplm"``): each cell is one token and the cells of a
    sample (``sample_key``) or spatial neighbourhood (``spatial_key``) are read together in sentences of at most
    ``context`` cells, grouped by a seeded hash of the cell names or by a k-d split of the coordinates, so the result
    does not depend on cell order or batch size; the embedding is the posterior mean of the Gaussian-mixture latent. The
    matrix is read ``block_size`` rows at a time (dense, CSR, CSC or backed ``.h5ad``), never densified as a whole;
    batches group cells of similar length.

    Parameters
    ----------
    adata
        Cells x genes, raw counts or log-normalised values (not scaled: negative values are rejected).
        A file opened with ``sc.read_h5ad(path, backed="r")`` is streamed from disk.
    model
        ``None`` for the bundled default checkpoint (tGPT's: the best zero-shot embedding of the bundled models on the
        leave-dataset-out protocol of ``docs/benchmarks.md``), a bundled name (``"default"``/``"tgpt"``, ``"scgpt"``,
        ``"cellplm"``, ``"scmulan"``), an scfm checkpoint directory of any family, a checkpoint directory of the
        reference scGPT code (``best_model.pt``, ``args.json``, ``vocab.json``; converted in memory, see
        ``docs/scgpt_checkpoints.md``), or an :class:`~scfm.models.SCGPT`/:class:`~scfm.models.TGPT`/
        :class:`~scfm.models.CellPLM` instance. Nothing is downloaded.
    layer
        Layer to read instead of ``adata.X``.
    use_raw
        Read ``adata.raw`` (e.g. ``sc.datasets.pbmc68k_reduced()``, whose ``X`` is scaled).
    gene_key
        ``adata.var`` column with gene names (default: ``var_names``; when fewer than half of them match, usual
        columns such as ``gene_symbols`` or ``gene_ids`` are tried too). Symbols in any case and Ensembl gene ids
        (with or without version) are resolved; see ``docs/genes.md``.
    batch_size
        Cells per forward pass (memory only; results do not depend on it). CellPLM runs one sentence per pass.
    key_added
        Results go to ``adata.obsm[key_added]`` and ``adata.uns["scfm"][key_added]``.
    device
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``...; bf16 autocast on CUDA.
    normalize
        L2-normalise embeddings (as scGPT does for zero-shot use).
    max_len
        Tokens per cell including ``<cls>`` (default: the checkpoint's). scGPT models only: the context of a
        tGPT or scMulan model is fixed by the checkpoint.
    min_genes, on_duplicate, gene_id_type, species, aliases
        Gene-alignment rules, see :func:`scfm.genes.align_genes`: ``gene_id_type`` (``"auto"``, ``"symbol"`` or
        ``"ensembl"``) says what the names are, ``species="mouse"`` matches mouse symbols case-insensitively to
        the human vocabulary without the human gene table, ``aliases=True`` also resolves aliases and previous
        symbols of genes that match no other way (off by default: it can change which genes are used).
    block_size
        Rows read from the matrix at a time (bounds memory for backed data).
    sample_key, spatial_key, context
        CellPLM only: the ``obs`` column of samples (sentences never mix samples; default one sample), the
        ``obsm`` key of ``(n_obs, 2)`` coordinates, and the most cells per sentence (default: the checkpoint's).
    progress
        Show a progress bar.
    precision
        ``"fp32"`` (default): float32 forward pass on CPU and MPS, exactly as before this option existed; on CUDA
        the forward pass keeps running under bf16 autocast (when the GPU supports bf16), as it always has.
        ``"bf16"``: bf16 autocast on CPU too (matrix products and attention in bf16, accumulated in float32),
        every family. Faster only on CPUs with bf16 matrix instructions (AVX512-BF16, AMX); elsewhere torch
        emulates bf16 and it is several times slower (a warning says so). Embeddings stay float32 and
        L2-normalised; they differ from ``"fp32"`` by bf16 rounding (see ``docs/benchmarks.md``). The provenance
        records ``precision`` and the ``compute_dtype`` actually used.
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    ``None`` (or the copy when ``copy=True``). Sets

    ``adata.obsm[key_added]``
        ``n_obs x d_model`` float32 embeddings.
    ``adata.uns["scfm"][key_added]``
        Provenance: model, checkpoint sha256, vocabulary size, genes matched, input kind, parameters, version.

    Notes
    -----
    With an scGPT model, a cell that expresses none of the model's genes is embedded from the ``<cls>`` token
    alone: all such cells share one embedding (reported as ``n_empty_cells`` in the provenance). A tGPT
    embedding of such a cell is undefined, so it is an error.
    On error nothing is written: the AnnData is left unchanged.

    Examples
    --------
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> scfm.tl.embed(adata, use_raw=True)
    >>> sc.pp.neighbors(adata, use_rep="X_scfm")
    """
    check_anndata(adata)
    if adata.n_obs == 0:
        raise ValueError("the AnnData has no cells (n_obs == 0); nothing to embed")
    if copy and adata.isbacked:
        raise ValueError("copy=True is not supported for a backed AnnData; use copy=False (results go to obsm/uns)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    check_result_key(adata, key_added)
    pretrained = resolve_model(model, capability="embed")
    start = time.perf_counter()
    computed = compute_embeddings(
        adata,
        pretrained,
        layer=layer,
        use_raw=use_raw,
        gene_key=gene_key,
        batch_size=batch_size,
        device=device,
        normalize=normalize,
        options={"max_len": max_len, "sample_key": sample_key, "spatial_key": spatial_key, "context": context},
        min_genes=min_genes,
        on_duplicate=on_duplicate,
        gene_rules=GeneRules(gene_id_type=gene_id_type, species=species, aliases=aliases),
        block_size=block_size,
        progress=progress,
        precision=precision,
    )
    result, alignment, source = computed.result, computed.alignment, computed.source
    seconds = time.perf_counter() - start
    if copy:
        adata = adata.copy()
    _warn_if_replacing_another_model(adata, key_added, pretrained.family)
    adata.obsm[key_added] = result.embeddings
    write_provenance(
        adata,
        key_added,
        {
            **checkpoint_and_genes(pretrained, alignment, source),
            "input_kind": result.input_kind,
            "mean_tokens_per_cell": result.n_tokens / adata.n_obs,
            **result.record,
            "normalize": normalize,
            "device": computed.device,
            "precision": precision,
            "compute_dtype": computed.compute_dtype,
            "seconds": seconds,
        },
    )
    return adata if copy else None


@dataclass
class ComputedEmbedding:
    """Embeddings of a model (``result``) and how they were made.

    The gene alignment, the matrix read, the device and the dtype the matrix products ran in come with them.
    """

    result: Embedding
    alignment: GeneAlignment
    source: ExpressionSource
    device: str
    compute_dtype: str


def compute_embeddings(
    adata: AnnData,
    pretrained: Pretrained,
    *,
    layer: str | None = None,
    use_raw: bool = False,
    gene_key: str | None = None,
    batch_size: int = 64,
    device: str = "auto",
    normalize: bool = True,
    options: dict[str, Any] | None = None,
    min_genes: int = 50,
    on_duplicate: Literal["error", "first"] = "error",
    gene_rules: GeneRules = GeneRules(),
    block_size: int = 4096,
    progress: bool = True,
    precision: Literal["fp32", "bf16"] = "fp32",
) -> ComputedEmbedding:
    """Embed the cells of ``adata`` with ``pretrained`` (an embedding family) without writing anything to ``adata``.

    The arguments are :func:`embed`'s; ``options`` are the family's embedding options (``max_len``, ``sample_key``,
    ``spatial_key``, ``context``; ``None`` values are the checkpoint's defaults).
    """
    source = expression_source(adata, layer=layer, use_raw=use_raw)
    if source.var.shape[0] == 0:
        raise ValueError("the AnnData has no genes (n_vars == 0)")
    family = pretrained.spec
    options = {"max_len": None, "sample_key": None, "spatial_key": None, "context": None, **(options or {})}
    family.check_embed_options(pretrained, options)
    alignment = align_genes(
        source.var,
        pretrained.vocab,
        gene_key=gene_key,
        min_genes=min_genes,
        on_duplicate=on_duplicate,
        **gene_rules.as_kwargs(),
    )
    target = resolve_device(device)
    pretrained.module.to(target)
    request = EmbedRequest(options, target, batch_size, block_size, normalize, progress, precision=precision)
    result = family.embed(pretrained, adata, source, alignment, request)
    return ComputedEmbedding(result, alignment, source, str(target), compute_dtype_name(target, precision))


def _warn_if_replacing_another_model(adata: AnnData, key_added: str, family: str) -> None:
    """Warn when ``obsm[key_added]`` holds an embedding that another model family wrote (e.g. both use ``X_scfm``)."""
    if key_added not in adata.obsm:
        return
    record = (adata.uns.get("scfm") or {}).get(key_added)
    previous = record.get("family") if isinstance(record, dict) else None
    if previous is not None and previous != family:
        warnings.warn(
            f"adata.obsm[{key_added!r}] held a {previous} embedding; it is replaced by this {family} one. Pass "
            f"key_added='X_{family}' (or another name) to keep both",
            UserWarning,
            stacklevel=3,
        )
