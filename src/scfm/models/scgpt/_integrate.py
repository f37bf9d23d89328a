"""scGPT's batch-integration fine-tuning: GEP + GEPC + ECS, batch embeddings beside the encoder output, DAR, DSBN."""

from __future__ import annotations

import time

import numpy as np
from anndata import AnnData

from scfm.data import HEAD_LR_FACTOR, accelerator_for, highly_variable_subset, training_copy

from ..base import Integration, IntegrationRequest, Pretrained


def integrate_batches(pretrained: Pretrained, adata: AnnData, request: IntegrationRequest) -> Integration:
    """Fine-tune a copy of ``pretrained`` on a training copy of ``adata`` and return its L2-normalised embedding."""
    from ._model import SCGPT

    work, alignment = training_copy(
        adata,
        dict(request.columns),
        layer=request.layer,
        use_raw=request.use_raw,
        gene_key=request.gene_key,
        vocab=pretrained.vocab,
        min_genes=request.min_genes,
        gene_rules=request.gene_rules,
    )
    work = highly_variable_subset(work, request.n_top_genes, request.batch_key)
    max_len = request.max_len
    if max_len is None:
        max_len = min(pretrained.config.max_len, work.n_vars + 1)
    weights = request.weights
    cls_weight = weights.cls if request.label_categories else 0.0
    finetuned = SCGPT.for_finetuning(
        pretrained,
        work,
        batch_key=request.batch_key,
        labels_key=request.labels_key,
        use_batch_embeddings=request.batch_embeddings,
        batch_discriminator=weights.dar > 0,
        domain_batchnorm=request.domain_batchnorm,
        label_categories=request.label_categories,
        min_genes=request.min_genes,
    )
    start = time.perf_counter()
    finetuned.train(
        max_epochs=request.max_epochs,
        batch_size=request.batch_size,
        lr=request.lr,
        max_len=max_len,
        mask_ratio=request.mask_ratio,
        gep_weight=weights.gep,
        gepc_weight=weights.gepc,
        ecs_weight=weights.ecs,
        ecs_threshold=weights.ecs_threshold,
        dar_weight=weights.dar,
        cls_weight=cls_weight,
        head_lr_factor=HEAD_LR_FACTOR,
        seed=request.seed,
        accelerator=accelerator_for(request.device),
        enable_progress_bar=request.progress,
    )
    train_seconds = time.perf_counter() - start
    embedding = finetuned.get_latent_representation(work, max_len=max_len, device=request.device)
    record = {
        "batches": list(finetuned.config.batch_categories),
        "genes_used": int(work.n_vars),
        "max_len": max_len,
        "weights": {
            "gep": weights.gep,
            "gepc": weights.gepc,
            "ecs": weights.ecs,
            "dar": weights.dar,
            "cls": cls_weight,
        },
        "ecs_threshold": weights.ecs_threshold,
        "train_seconds": train_seconds,
        "seconds_per_epoch": train_seconds / request.max_epochs,
        "reinitialised": list(finetuned.reinitialised_),
    }
    return Integration(embedding.astype(np.float32), finetuned, record, alignment)
