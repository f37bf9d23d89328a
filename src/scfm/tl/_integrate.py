"""``scfm.tl.integrate``: fine-tune an SCGPT model for batch integration (scGPT's recipe) and embed the cells."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
from anndata import AnnData

from scfm._validation import checked_arguments, model_source
from scfm.data import UNLABELLED, obs_categories
from scfm.genes import GeneRules
from scfm.models import (
    CountVAEModel,
    FoundationModel,
    IntegrationRequest,
    IntegrationWeights,
    ModelArg,
    Pretrained,
    resolve_model,
)
from scfm.models.base import is_count_vae_directory

from ._integrate_modalities import anndata_or_mudata, integrate_mudata
from ._integrate_vae import VAE_BATCH_SIZE, VAE_LR, VAE_TOP_GENES, VAESettings, integrate_by_vae, map_by_vae
from ._provenance import check_anndata, check_result_key, gene_fields, write_provenance

if TYPE_CHECKING:
    from mudata import MuData


@checked_arguments(adata=anndata_or_mudata(), model=model_source(count_vae=True))
def integrate(
    adata: AnnData | MuData,
    batch_key: str,
    *,
    method: Literal["vae", "finetune"] | None = None,
    model: ModelArg = None,
    labels_key: str | None = None,
    layer: str | None = None,
    use_raw: bool = False,
    gene_key: str | None = None,
    n_top_genes: int | Literal["auto"] | None = "auto",
    max_epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    n_latent: int = 30,
    embedding_weight: float = 0.0,
    encode_batch: bool = False,
    max_len: int | None = None,
    mask_ratio: float = 0.4,
    gep_weight: float = 1.0,
    gepc_weight: float = 1.0,
    ecs_weight: float = 10.0,
    ecs_threshold: float = 0.8,
    dar_weight: float = 1.0,
    cls_weight: float = 1.0,
    batch_embeddings: bool = True,
    domain_batchnorm: bool = False,
    min_genes: int = 50,
    gene_id_type: Literal["auto", "symbol", "ensembl"] = "auto",
    species: Literal["human", "mouse"] = "human",
    aliases: bool = False,
    seed: int = 0,
    device: str = "auto",
    key_added: str = "X_scfm_integrated",
    return_model: bool = False,
    progress: bool = True,
    copy: bool = False,
) -> FoundationModel | CountVAEModel | AnnData | None:
    """Remove batch effects from the cells' embedding and write it to ``obsm[key_added]``.

    Two methods:

    ``method="vae"`` (the default): a batch-conditioned variational autoencoder of the counts (the model class of
    scVI, Lopez et al. 2018) fitted to ``adata``. The encoder reads each cell's log counts of the ``n_top_genes``
    most variable genes (ranked within each batch), and with ``embedding_weight > 0`` its frozen cell embedding from
    ``model`` (standardised, times ``embedding_weight``); the decoder reads the ``n_latent``-dimensional latent and
    the batch and gives each gene a negative-binomial share of the cell's library, so the latent need not carry the
    batch. The written embedding is the latent's posterior mean. It needs counts (non-integer expected counts are
    accepted; log-normalised values are refused). ``docs/benchmarks.md`` ("Integration by a count VAE") measures it
    beside scVI, Harmony and the fine-tuning recipe: the bundled default's embedding added nothing beyond seed noise
    on any set measured (slightly less on the held-out cortex), so the default reads the genes alone and loads no
    model. No foundation model is involved then; pass ``embedding_weight=1.0`` to read one.

    ``method="finetune"``: scGPT's integration fine-tuning of ``model`` (an SCGPT checkpoint):

    - GEP (masked values) and GEPC (values from the cell embedding);
    - ECS, which pulls similar cells together (weight 10, threshold 0.8 as in the paper's tutorial);
    - batch embeddings concatenated to the transformer output before the expression heads, never fed into
      attention, so the heads can explain batch-specific expression and the cell embedding need not;
    - DAR, a batch classifier behind gradient reversal, which makes the batch unpredictable from the cell
      embedding;
    - optionally, domain-specific batch norm (DSBN) of the token embeddings.

    With ``labels_key``, cells with a label also train a cell-type classifier on the cell embedding
    (semi-supervised integration); cells with a missing label only contribute the other objectives.

    **Query mapping** (``method="finetune"``, chosen by default for such a model). When ``model`` is already
    fine-tuned for integration (e.g. what ``method="finetune", return_model=True`` gave, or its saved directory),
    ``adata`` is mapped onto it instead, scArches-style (:meth:`~scfm.models.SCGPT.load_query_data`): the
    reference's genes are used (missing ones count as zeros), batches the model was not trained on get their own
    parameters, trained for ``max_epochs`` with GEP + GEPC and everything else frozen, and the cells are embedded in
    the reference's space. A single batch is then enough;
    ``labels_key``, ``n_top_genes`` (when the reference records its genes), ``batch_embeddings``,
    ``domain_batchnorm``, ``ecs_weight`` and ``dar_weight`` do not apply. The record says ``mode="query_mapping"``.
    See ``docs/finetuning.md``.

    **Query mapping onto a count VAE** (``method="vae"``). When ``model`` is the
    :class:`~scfm.models.CountVAEModel` that ``return_model=True`` gave for a reference (or the directory its
    ``save`` wrote), ``adata`` is encoded into the reference's latent space: the reference's genes are read by name
    (at least half must be present; missing ones count as zeros). A query may hold one batch, new batches or
    reference batches. If the reference was fitted with ``encode_batch=False`` (the default), its encoder ignores
    the batch and nothing is trained. With ``encode_batch=True`` (scArches' reference setting), the query's new
    batches get input columns of their own, trained alone on the query for ``max_epochs`` (default: the VAE
    heuristic) with everything else frozen, and ``return_model=True`` returns the model extended by them.
    ``n_top_genes``, ``n_latent``, ``embedding_weight`` and ``encode_batch`` do not apply. The record says
    ``mode="query_mapping"``. A VAE fitted with ``embedding_weight > 0`` cannot be returned.

    Parameters
    ----------
    adata
        Cells x genes (counts or log-normalised) with ``obs[batch_key]``, or a MuData (see below). Only
        ``obsm[key_added]`` and ``uns["scfm"][key_added]`` are written; on error nothing is.
    batch_key
        ``adata.obs`` column with each cell's batch (at least two batches, no missing values).
    method
        ``"vae"``, ``"finetune"`` or ``None``: ``"finetune"`` when ``model`` is already fine-tuned for integration
        (query mapping), else ``"vae"``. An argument of the other method changed from its default is an error.
    model
        ``None`` (the bundled default that serves the method: an embedding model for ``"vae"``, the SCGPT checkpoint
        for ``"finetune"``), a name or directory, or a model; a :class:`~scfm.models.CountVAEModel` or its directory
        maps ``adata`` onto that reference (above).
    labels_key
        Optional ``adata.obs`` column of cell types for the semi-supervised variant (``"finetune"`` only).
    layer, use_raw, gene_key
        Which matrix and gene names to read (as in :func:`scfm.tl.embed`).
    n_top_genes
        ``"auto"``: 2,000 for ``"vae"`` (as scVI's benchmark setting), 500 for ``"finetune"``. ``"vae"`` models this
        many highly variable genes of ``adata`` (any genes, in the vocabulary or not); ``None`` models every gene.
        ``"finetune"``: fine-tune and embed on this many highly variable genes, ranked within each batch (scGPT's
        integration recipe uses 1200; 500 keeps a CPU epoch over 10,000 cells to minutes). ``None`` uses every
        vocabulary gene; cells with more expressed genes than ``max_len`` then show the model a random subset, which
        blurs cell types.
    max_epochs, batch_size, lr
        Training length, cells per step and learning rate; ``None`` takes the method's default. ``"vae"``: scvi-tools'
        epoch heuristic (``min(20000 / n_cells * 400, 400)``), 128 cells, Adam at 1e-3, the KL weight warmed up
        over the first 75% of the steps. ``"finetune"``: 10 epochs, 32 cells, AdamW peaking at 1e-4 (warm-up +
        cosine).
    n_latent
        Latent width of ``"vae"`` (the scib benchmark's scVI setting is 30).
    embedding_weight
        ``"vae"``: weight of the standardised frozen embedding in the encoder's input. 0 (the default, see above)
        reads the genes alone and loads no model; passing a ``model`` then is an error.
    encode_batch
        ``"vae"``: the encoder reads the batch too, with layer norm in encoder and decoder and dropout 0.2
        (scArches' setting for a reference that queries will be mapped onto, with their new batches trained).
        Without it (the default) the encoder is layer-normed, the decoder batch-normed, dropout 0.1.
        ``docs/benchmarks.md`` ("Reference mapping of a held-out batch", "The encoder reading the batch too")
        compares the settings.
    max_len, mask_ratio, gep_weight, ..., domain_batchnorm
        ``"finetune"`` only (below).
    max_len
        Tokens per cell in fine-tuning and embedding (default: enough for every selected gene, at most the
        checkpoint's context); shorter contexts train faster but subsample genes.
    mask_ratio
        Fraction of each cell's genes whose values are masked for GEP.
    gep_weight, gepc_weight, ecs_weight, ecs_threshold, dar_weight, cls_weight
        Objective weights (``cls_weight`` only matters with ``labels_key``; ``dar_weight=0`` builds no
        discriminator). The discriminator and the classifier learn at ``10 * lr``. The defaults are the
        paper's; ``docs/benchmarks.md`` measures each part (on some data ECS and DAR increase batch separation).
    batch_embeddings, domain_batchnorm
        Batch-aware parts of the model (see above).
    min_genes
        Fewest vocabulary genes the data must share with the model.
    gene_id_type, species, aliases
        Gene-alignment rules, see :func:`scfm.genes.align_genes`: ``gene_id_type`` (``"auto"``, ``"symbol"`` or
        ``"ensembl"``) says what the names are, ``species="mouse"`` matches mouse symbols case-insensitively to
        the human vocabulary without the human gene table, ``aliases=True`` also resolves aliases and previous
        symbols of genes that match no other way (off by default: it can change which genes are used).
    seed
        Seeds initialisation, masks, shuffling and the split.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
    key_added
        ``adata.obsm`` key of the integrated embedding (``"finetune"``: L2-normalised; ``"vae"``: the latent means).
    return_model
        ``"vae"``: return the fitted :class:`~scfm.models.CountVAEModel` (save it with ``model.save(path)``; map
        queries with ``tl.integrate(query, batch_key, model=model)``; a mapping returns the model that knows the
        query's batches). ``"finetune"``: return the fine-tuned
        :class:`~scfm.models.SCGPT` (save it with ``model.save(path)``; embed new cells of the same batches with
        ``model.get_latent_representation(new_adata[:, model.adata.var_names])``: the model was fine-tuned on
        ``model.adata.var_names`` only, named by vocabulary symbol).
    progress
        Show the training progress bar.
    copy
        Write into a copy of ``adata`` and return it.

    Returns
    -------
    The fitted or fine-tuned model if ``return_model``, else the copy if ``copy``, else ``None``.

    A MuData is integrated across its modalities by :func:`scfm.tl.integrate_modalities` (scGPT's multi-omic
    recipe), which receives the arguments that apply to it; an AnnData-only argument changed from its default is
    an error.
    """
    if type(adata).__name__ == "MuData":
        return integrate_mudata(integrate, dict(locals()))
    check_anndata(adata)
    if adata.n_obs == 0:
        raise ValueError("the AnnData has no cells (n_obs == 0)")
    check_result_key(adata, key_added)
    if method not in (None, "vae", "finetune"):
        raise ValueError(f"method must be 'vae', 'finetune' or None, got {method!r}")
    arguments = dict(locals())
    if isinstance(model, CountVAEModel) or is_count_vae_directory(model):
        if method not in (None, "vae"):
            raise ValueError(f"model is a count VAE (method='vae'); method={method!r} cannot use it")
        _check_arguments_of("vae", arguments, _FINETUNE_ONLY, "method='finetune'")
        vae = model if isinstance(model, CountVAEModel) else CountVAEModel.load(model)
        refused = _VAE_FIT_ONLY if vae.encodes_batch else (*_VAE_FIT_ONLY, "max_epochs", "batch_size", "lr")
        _check_arguments_of("vae", arguments, refused, _fit_only_owner(vae))
        return _integrate_by_vae(adata, vae, arguments)
    pretrained = None
    if model is not None:
        pretrained = resolve_model(model)
        if method is None:
            method = "finetune" if _maps_queries(pretrained) else "vae"
    method = method or "vae"
    other, names = ("finetune", _FINETUNE_ONLY) if method == "vae" else ("vae", _VAE_ONLY)
    _check_arguments_of(method, arguments, names, f"method={other!r}")
    if n_top_genes == "auto":
        n_top_genes = VAE_TOP_GENES if method == "vae" else FINETUNE_TOP_GENES
    if method == "vae":
        if pretrained is not None and embedding_weight == 0:
            raise ValueError(
                "method='vae' reads a model only through its embedding, and embedding_weight is 0 (the default: "
                "see docs/benchmarks.md); pass embedding_weight=1.0 to read this model, or method='finetune'"
            )
        if embedding_weight > 0 and return_model:
            raise ValueError(
                "return_model=True needs embedding_weight=0: a count VAE that reads a model's embedding cannot map "
                "queries from their counts alone"
            )
        if embedding_weight > 0:
            pretrained = resolve_model(pretrained, capability="embed")  # None: the bundled default
        return _integrate_by_vae(adata, pretrained, arguments | {"n_top_genes": n_top_genes})
    max_epochs = FINETUNE_EPOCHS if max_epochs is None else max_epochs
    batch_size = FINETUNE_BATCH_SIZE if batch_size is None else batch_size
    lr = FINETUNE_LR if lr is None else lr
    pretrained = resolve_model(pretrained, capability="integrate")  # None: the bundled model that integrates
    maps_query = pretrained.spec.maps_queries(pretrained)  # a fine-tuned model: map adata's batches onto it
    batches = obs_categories(adata, batch_key, "batch_key", min_categories=1 if maps_query else 2)
    columns = {batch_key: pd.Categorical(batches)}
    label_categories = None
    if labels_key is not None:
        if labels_key == batch_key:
            raise ValueError("labels_key and batch_key must be different columns")
        if labels_key not in adata.obs:
            raise KeyError(
                f"labels_key={labels_key!r} is not a column of adata.obs (columns: {list(adata.obs.columns)})"
            )
        labels = adata.obs[labels_key]
        strings = labels.astype(str).where(labels.notna(), None)
        label_categories = sorted(set(strings.dropna()))
        if len(label_categories) < 2:
            raise ValueError(f"adata.obs[{labels_key!r}] has fewer than two labels; drop labels_key or fix the labels")
        columns[labels_key] = pd.Categorical(strings.fillna(UNLABELLED))  # scvi-tools needs no missing values
    if max_epochs < 1 or batch_size < 2:
        raise ValueError(f"max_epochs must be >= 1 and batch_size >= 2, got {max_epochs} and {batch_size}")
    weights = IntegrationWeights(
        gep=gep_weight, gepc=gepc_weight, ecs=ecs_weight, ecs_threshold=ecs_threshold, dar=dar_weight, cls=cls_weight
    )
    request = IntegrationRequest(
        batch_key=batch_key,
        columns=columns,
        label_categories=label_categories,
        labels_key=labels_key,
        layer=layer,
        use_raw=use_raw,
        gene_key=gene_key,
        n_top_genes=n_top_genes,
        max_epochs=max_epochs,
        batch_size=batch_size,
        lr=lr,
        max_len=max_len,
        mask_ratio=mask_ratio,
        weights=weights,
        batch_embeddings=batch_embeddings,
        domain_batchnorm=domain_batchnorm,
        min_genes=min_genes,
        gene_rules=GeneRules(gene_id_type=gene_id_type, species=species, aliases=aliases),
        seed=seed,
        device=device,
        progress=progress,
    )
    result = pretrained.spec.integrate(pretrained, adata, request)
    if copy:
        adata = adata.copy()
    adata.obsm[key_added] = result.embedding
    record = result.record
    write_provenance(
        adata,
        key_added,
        {
            "tool": "integrate",
            "method": "finetune",
            "model": pretrained.name,
            "family": pretrained.family,
            "checkpoint_sha256": pretrained.sha256,
            "batch_key": batch_key,
            "labels_key": labels_key,
            **(gene_fields(result.alignment) if result.alignment is not None else {}),
            "batches": record.pop("batches"),
            "genes_used": record.pop("genes_used"),
            "n_top_genes": n_top_genes,
            "max_epochs": max_epochs,
            "batch_size": batch_size,
            "lr": lr,
            "max_len": record.pop("max_len"),
            "batch_embeddings": batch_embeddings,
            "domain_batchnorm": domain_batchnorm,
            **record,
            "seed": seed,
        },
    )
    if return_model:
        return result.model
    return adata if copy else None


FINETUNE_TOP_GENES = 500
FINETUNE_EPOCHS = 10
FINETUNE_BATCH_SIZE = 32
FINETUNE_LR = 1e-4
_FINETUNE_ONLY = (
    "labels_key", "max_len", "mask_ratio", "gep_weight", "gepc_weight", "ecs_weight", "ecs_threshold", "dar_weight",
    "cls_weight", "batch_embeddings", "domain_batchnorm",
)  # fmt: skip
_VAE_ONLY = ("n_latent", "embedding_weight", "encode_batch")
_VAE_FIT_ONLY = ("n_top_genes", "n_latent", "embedding_weight", "encode_batch")


def _fit_only_owner(vae: CountVAEModel) -> str:
    if vae.encodes_batch:
        return "fitting a VAE (model is a fitted one, to map onto)"
    return "fitting a VAE (model is a fitted one whose encoder ignores the batch: mapping onto it trains nothing)"


def _maps_queries(pretrained) -> bool:
    return "integrate" in pretrained.spec.capabilities and pretrained.spec.maps_queries(pretrained)


def _check_arguments_of(method: str, arguments: dict[str, Any], names: tuple[str, ...], owner: str) -> None:
    """Refuse any of ``names`` changed from its default, saying they only apply to ``owner``."""
    defaults = {name: p.default for name, p in inspect.signature(integrate).parameters.items()}
    changed = [name for name in names if arguments[name] != defaults[name]]
    if changed:
        raise ValueError(
            f"{', '.join(changed)} only apply to {owner}; this call uses method={method!r} (drop them"
            + (f", or pass {owner})" if owner.startswith("method=") else ")")
        )


def _integrate_by_vae(
    adata: AnnData, source: Pretrained | CountVAEModel | None, arguments: dict[str, Any]
) -> CountVAEModel | AnnData | None:
    """Fit a count VAE on ``adata`` (reading ``source``'s embedding if it is a model), or map onto a fitted one."""
    batch_key = arguments["batch_key"]
    mapping = isinstance(source, CountVAEModel)
    batches = obs_categories(adata, batch_key, "batch_key", min_categories=1 if mapping else 2)
    batch_size = VAE_BATCH_SIZE if arguments["batch_size"] is None else arguments["batch_size"]
    lr = VAE_LR if arguments["lr"] is None else arguments["lr"]
    if arguments["n_latent"] < 1 or arguments["embedding_weight"] < 0:
        raise ValueError(
            f"n_latent must be >= 1 and embedding_weight >= 0, got {arguments['n_latent']} and "
            f"{arguments['embedding_weight']}"
        )
    settings = VAESettings(
        batch_key=batch_key,
        layer=arguments["layer"],
        use_raw=arguments["use_raw"],
        gene_key=arguments["gene_key"],
        n_top_genes=arguments["n_top_genes"],
        n_latent=arguments["n_latent"],
        embedding_weight=float(arguments["embedding_weight"]),
        encode_batch=bool(arguments["encode_batch"]),
        max_epochs=arguments["max_epochs"],
        batch_size=batch_size,
        lr=lr,
        min_genes=arguments["min_genes"],
        gene_rules=GeneRules(
            gene_id_type=arguments["gene_id_type"], species=arguments["species"], aliases=arguments["aliases"]
        ),
        seed=arguments["seed"],
        device=arguments["device"],
        progress=arguments["progress"],
    )
    if mapping:
        result = map_by_vae(source, adata, batches, settings)
        pretrained = None
    else:
        result = integrate_by_vae(source, adata, batches, settings)
        pretrained = source
    if arguments["copy"]:
        adata = adata.copy()
    key_added = arguments["key_added"]
    adata.obsm[key_added] = result.embedding
    record = result.record
    fitting = {} if mapping else {
        "n_top_genes": arguments["n_top_genes"],
        "max_epochs": record.pop("epochs"),
        "batch_size": batch_size,
        "lr": lr,
        "seed": arguments["seed"],
    }  # fmt: skip
    write_provenance(
        adata,
        key_added,
        {
            "tool": "integrate",
            "method": record.pop("method"),
            "model": None if pretrained is None else pretrained.name,
            "family": None if pretrained is None else pretrained.family,
            "checkpoint_sha256": None if pretrained is None else pretrained.sha256,
            "batch_key": batch_key,
            **(gene_fields(result.alignment) if result.alignment is not None else {}),
            "batches": record.pop("batches"),
            "genes_used": record.pop("genes_used"),
            **fitting,
            **record,
        },
    )
    if arguments["return_model"]:
        return result.model
    return adata if arguments["copy"] else None
