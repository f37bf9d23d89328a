"""scGPT's multi-omic integration behind the ``integrate_modalities`` capability.

Fine-tune on a private copy of the MuData, embed every cell jointly (and per modality on request).
"""

from __future__ import annotations

import numpy as np

from scfm.data import accelerator_for
from scfm.data._mudata import check_mudata

from ..base import ModalityIntegration, ModalityIntegrationRequest, Pretrained


def training_mudata(mdata, modalities: dict[str, str], layers: dict, batch_key: str | None):
    """Return a private MuData with only the modalities used, their count layers as ``X``, and the batch column.

    scvi-tools' registration writes into ``obs`` and ``uns``; the user's MuData must stay untouched.
    """
    import mudata as md
    from anndata import AnnData

    mods = {}
    for kind, key in modalities.items():
        source = mdata.mod[key]
        layer = layers.get(kind)
        if layer is not None and layer not in source.layers:
            raise KeyError(f"{kind}_layer={layer!r} is not a layer of mdata.mod[{key!r}] ({list(source.layers)})")
        matrix = source.layers[layer] if layer is not None else source.X
        mods[key] = AnnData(X=matrix, obs=source.obs[[]].copy(), var=source.var[[]].copy())
    with md.set_options(pull_on_update=False):
        work = md.MuData(mods)
    work = work[mdata.obs_names].copy() if list(work.obs_names) != list(mdata.obs_names) else work
    if batch_key is not None:
        work.obs[batch_key] = mdata.obs[batch_key].astype(str).to_numpy()
    return work


def integrate_modalities(pretrained: Pretrained, mdata, request: ModalityIntegrationRequest) -> ModalityIntegration:
    """Fine-tune :class:`SCGPTMultiome` from ``pretrained`` on a copy of ``mdata`` and return its embeddings."""
    from scfm.data._mudata import resolve_modalities

    from ._multiome_model import SCGPTMultiome

    check_mudata(mdata)
    modalities = resolve_modalities(mdata, request.modalities)
    layers = {kind: request.layers.get(kind) for kind in modalities}
    work = training_mudata(mdata, modalities, layers, request.batch_key)
    SCGPTMultiome.setup_mudata(work, batch_key=request.batch_key, modalities=modalities)
    model = SCGPTMultiome(
        work,
        pretrained,
        gene_tokens=request.gene_tokens,
        n_top_features=request.n_top_features,
        max_tokens=request.max_tokens,
        zero_fraction=request.zero_fraction,
        gene_rules=request.gene_rules,
        batch_discriminator=None if request.dar_weight is None else request.dar_weight > 0,
    )
    model.train(
        request.max_epochs,
        batch_size=request.batch_size,
        lr=request.lr,
        mask_ratio=request.mask_ratio,
        gep_weight=request.gep_weight,
        gepc_weight=request.gepc_weight,
        ecs_weight=request.ecs_weight,
        dar_weight=request.dar_weight,
        modality_dropout=request.modality_dropout,
        seed=request.seed,
        accelerator=accelerator_for(request.device),
        progress=request.progress,
    )
    embedding = model.get_latent_representation(device=request.device)
    per_modality = {}
    if request.modality_embeddings:
        for kind in model.config.modalities:
            per_modality[kind] = model.get_latent_representation(modality=kind, device=request.device)
    present = {c.kind: int(c.present.sum()) for c in model.columns_}
    record = {
        "modalities": dict(modalities),
        "cells_per_modality": present,
        "mosaic": bool(model.mosaic),
        "features": {kind: len(names) for kind, names in model.features_.items()},
        "feature_selection": {
            "rna": "highly variable genes (scanpy seurat flavour, per batch)",
            "atac": "binarised peaks, TF-IDF, highly variable (seurat flavour)",
            "protein": "all",
        },
        "atac_values": "binarised",
        "gene_tokens": request.gene_tokens,
        "genes_from_checkpoint": int(model.n_genes_from_checkpoint_),
        "batches": list(model.config.batch_categories),
        "max_tokens": dict(model.config.max_tokens),
        "zero_fraction": model.config.zero_fraction,
        "batch_discriminator": bool(model.config.batch_discriminator),
        "modality_dropout": float(model.modality_dropout_),
        "train_seconds": float(model.train_seconds_[-1]),
        "seconds_per_epoch": float(model.seconds_per_epoch_),
    }
    return ModalityIntegration(np.asarray(embedding, dtype=np.float32), model, record, per_modality)
