"""``scfm.tl.integrate_modalities``: a joint embedding of paired or mosaic multi-omic cells held in a MuData."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, Literal

from anndata import AnnData

from scfm._validation import ArgumentTypeError, Rule, checked_arguments
from scfm.data._mudata import check_mudata, resolve_modalities
from scfm.genes import GeneRules
from scfm.models import ModelArg, resolve_model
from scfm.models.base import ModalityIntegrationRequest

from ._provenance import check_result_key, write_provenance

CAPABILITY = "integrate_modalities"


def _is_mudata(value: Any) -> bool:
    return type(value).__name__ == "MuData"


def _mudata_rule() -> Rule:
    accepts = "a MuData (mudata.MuData({'rna': ..., 'atac': ...}))"

    def check(value: Any) -> tuple[type[Exception], str] | None:
        if isinstance(value, AnnData):
            return ArgumentTypeError, f"{accepts}; this is an AnnData: use scfm.tl.integrate for one modality"
        if not _is_mudata(value):
            return ArgumentTypeError, accepts
        return None

    return Rule(accepts, check)


def anndata_or_mudata() -> Rule:
    """Return the rule of :func:`scfm.tl.integrate`'s first argument: an AnnData, or a MuData (multi-omic)."""
    accepts = "an AnnData, or a MuData for multi-omic integration"

    def check(value: Any) -> tuple[type[Exception], str] | None:
        return None if isinstance(value, AnnData) or _is_mudata(value) else (ArgumentTypeError, accepts)

    return Rule(accepts, check)


@checked_arguments(mdata=_mudata_rule())
def integrate_modalities(
    mdata,
    batch_key: str | None = None,
    *,
    model: ModelArg = None,
    modalities: Mapping[str, str | None] | None = None,
    rna_layer: str | None = None,
    atac_layer: str | None = None,
    protein_layer: str | None = None,
    n_top_genes: int | None = 1000,
    n_top_peaks: int | None = 4000,
    max_tokens: Mapping[str, int] | None = None,
    zero_fraction: float = 0.25,
    gene_tokens: Literal["pretrained", "new"] = "pretrained",
    gene_id_type: Literal["auto", "symbol", "ensembl"] = "auto",
    species: Literal["human", "mouse"] = "human",
    max_epochs: int = 10,
    batch_size: int = 32,
    lr: float = 1e-4,
    mask_ratio: float = 0.4,
    gep_weight: float = 1.0,
    gepc_weight: float = 1.0,
    ecs_weight: float = 0.0,
    dar_weight: float | None = None,
    modality_dropout: float | None = None,
    modality_embeddings: bool = False,
    seed: int = 0,
    device: str = "auto",
    key_added: str = "X_scfm_multiome",
    return_model: bool = False,
    progress: bool = True,
    copy: bool = False,
):
    """Fine-tune scGPT's multi-omic model on a MuData and write the joint cell embedding.

    The recipe is scGPT's (Cui et al. 2024): genes, ATAC peaks and proteins are tokens of one extended vocabulary;
    a modality embedding per token plus the cell's batch embedding are concatenated to the transformer output for
    the expression heads (never fed into attention); GEP + GEPC train on every input token, zero and non-zero; on
    mosaic data (cells missing a modality) a batch discriminator behind gradient reversal (DAR) is added.

    Parameters
    ----------
    mdata
        MuData with an RNA modality and ATAC and/or protein modalities holding raw counts. Cells may lack a
        modality (an outer join of ``obs``); which cells have which modality is read from the MuData, never
        guessed from zeros. Only ``mdata.obsm[key_added]`` (and ``{key_added}_{kind}`` per modality) and
        ``mdata.uns["scfm"][key_added]`` are written; the modalities are untouched; on error nothing is.
    batch_key
        Column of ``mdata.obs`` with each cell's batch (``None``: one batch). Use ``mdata.pull_obs()`` first when
        the column lives in a modality.
    model
        Starting checkpoint (``None``: the bundled scGPT model). Its transformer and, with
        ``gene_tokens="pretrained"``, the embeddings of the genes it knows initialise the model.
    modalities
        Modality kind -> ``mdata.mod`` key (``{"rna": "rna", "atac": "atac", "protein": "prot"}`` by default,
        where present). A key named here must exist.
    rna_layer, atac_layer, protein_layer
        Layers holding each modality's counts (``None``: ``X``).
    n_top_genes, n_top_peaks
        Highly variable genes (Seurat flavour, within batches) and peaks (binarised, TF-IDF, Seurat flavour) to
        keep; ``None`` keeps all. Every protein is kept.
    max_tokens
        Kind -> most non-zero tokens per cell (defaults ``{"rna": 256, "atac": 256, "protein": 512}``).
    zero_fraction
        Zero-valued tokens added per modality, as a fraction of the cell's non-zero tokens in it.
    gene_tokens
        ``"pretrained"``: genes the checkpoint knows (see ``gene_id_type``/``species``) start from its embeddings;
        ``"new"``: every gene token is trained from scratch.
    gene_id_type, species
        How gene names meet the checkpoint vocabulary (``species="mouse"`` matches mouse symbols to the human
        vocabulary case-insensitively).
    max_epochs, batch_size, lr, mask_ratio
        Fine-tuning length, cells per step, peak learning rate, fraction of tokens masked for GEP.
    gep_weight, gepc_weight, ecs_weight, dar_weight
        Objective weights; ``dar_weight=None`` uses 1 on mosaic data with two or more batches, else 0.
    modality_dropout
        Probability that a training cell measured in several modalities hides one of them from its input while
        GEPC still predicts that modality's values (cross-modal prediction, an scfm addition to the paper's recipe
        that places cells measured in one modality beside paired cells). ``None``: 0.3 on mosaic data, else 0.
    modality_embeddings
        Also write per-modality embeddings ``obsm[f"{key_added}_{kind}"]`` (``NaN`` rows for cells without it).
    seed, device, progress
        Seed, ``"auto"``/``"cpu"``/``"cuda"``/``"mps"``, progress bar.
    key_added
        ``mdata.obsm`` key of the joint embedding (L2-normalised).
    return_model
        Return the fine-tuned :class:`~scfm.models.scgpt.SCGPTMultiome` (``model.save(path)``).
    copy
        Write into a copy of ``mdata`` and return it.

    Returns
    -------
    The model if ``return_model``, else the copy if ``copy``, else ``None``.
    """
    check_mudata(mdata)
    check_result_key(mdata, key_added)
    chosen = resolve_modalities(mdata, modalities)
    if batch_key is not None:
        if batch_key not in mdata.obs:
            in_mods = [f"{m}:{batch_key}" for m, mod in mdata.mod.items() if batch_key in mod.obs]
            hint = f"; call mdata.pull_obs() to get {in_mods}" if in_mods else ""
            raise KeyError(f"batch_key={batch_key!r} is not a column of mdata.obs ({list(mdata.obs.columns)}){hint}")
        if mdata.obs[batch_key].isna().any():
            raise ValueError(f"mdata.obs[{batch_key!r}] is missing for {int(mdata.obs[batch_key].isna().sum())} cells")
    if max_epochs < 1 or batch_size < 2:
        raise ValueError(f"max_epochs must be >= 1 and batch_size >= 2, got {max_epochs} and {batch_size}")
    pretrained = resolve_model(model, capability=CAPABILITY)
    request = ModalityIntegrationRequest(
        batch_key=batch_key,
        modalities=chosen,
        layers={"rna": rna_layer, "atac": atac_layer, "protein": protein_layer},
        n_top_features={"rna": n_top_genes, "atac": n_top_peaks, "protein": None},
        max_tokens=dict(max_tokens or {}),
        gene_tokens=gene_tokens,
        gene_rules=GeneRules(gene_id_type=gene_id_type, species=species),
        max_epochs=max_epochs,
        batch_size=batch_size,
        lr=lr,
        mask_ratio=mask_ratio,
        zero_fraction=zero_fraction,
        gep_weight=gep_weight,
        gepc_weight=gepc_weight,
        ecs_weight=ecs_weight,
        dar_weight=dar_weight,
        modality_dropout=modality_dropout,
        modality_embeddings=modality_embeddings,
        seed=seed,
        device=device,
        progress=progress,
    )
    result = pretrained.spec.integrate_modalities(pretrained, mdata, request)
    if copy:
        mdata = mdata.copy()
    mdata.obsm[key_added] = result.embedding
    for kind, embedding in result.per_modality.items():
        mdata.obsm[f"{key_added}_{kind}"] = embedding
    write_provenance(
        mdata,
        key_added,
        {
            "tool": "integrate_modalities",
            **pretrained.provenance(),
            "batch_key": batch_key,
            "max_epochs": max_epochs,
            "batch_size": batch_size,
            "lr": lr,
            "weights": {"gep": gep_weight, "gepc": gepc_weight, "ecs": ecs_weight, "dar": result.model.dar_weight_},
            "per_modality_keys": [f"{key_added}_{kind}" for kind in result.per_modality],
            **result.record,
            "seed": seed,
        },
    )
    if return_model:
        return result.model
    return mdata if copy else None


_SHARED = (
    "batch_key", "model", "mask_ratio", "gep_weight", "gepc_weight", "seed",
    "device", "key_added", "return_model", "progress", "copy", "species", "gene_id_type",
)  # fmt: skip
_WHEN_CHANGED = {
    name: name for name in ("n_top_genes", "ecs_weight", "dar_weight", "max_epochs", "batch_size", "lr")
}  # passed when given: their AnnData defaults are the method's, not integrate_modalities' own
_IGNORED = {"method": "finetune"}  # the multi-omic recipe is a fine-tuning; this value of method is accepted


def integrate_mudata(function, arguments: dict[str, Any]):
    """Serve ``scfm.tl.integrate(mdata, ...)``: pass its arguments that apply to :func:`integrate_modalities`.

    An AnnData-only argument changed from its default is an error naming :func:`integrate_modalities`.
    """
    defaults = {name: p.default for name, p in inspect.signature(function).parameters.items()}
    mdata = arguments.pop("adata")
    passed = {}
    for name, value in arguments.items():
        if name in _SHARED:
            passed[name] = value
        elif name in _IGNORED and value == _IGNORED[name]:
            continue
        elif name in _WHEN_CHANGED:
            if value != defaults[name]:
                passed[_WHEN_CHANGED[name]] = value
        elif value != defaults[name]:
            raise ValueError(
                f"integrate: {name}={value!r} applies to AnnData input only; for a MuData use "
                f"scfm.tl.integrate_modalities (rna_layer=..., modalities=..., n_top_peaks=...)"
            )
    return integrate_modalities(mdata, **passed)
