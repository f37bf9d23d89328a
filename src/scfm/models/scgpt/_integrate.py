"""scGPT's batch-integration fine-tuning, and the mapping of query batches onto a model fine-tuned that way.

Fine-tuning: GEP + GEPC + ECS, batch embeddings beside the encoder output, DAR, DSBN. Mapping: scArches-style, new
batches get their own parameters and the rest stays frozen (:meth:`SCGPT.load_query_data`).
"""

from __future__ import annotations

import time

import numpy as np
from anndata import AnnData

from scfm.data import HEAD_LR_FACTOR, accelerator_for, highly_variable_subset, training_copy

from ..base import Integration, IntegrationRequest, Pretrained
from ..base._arches import ArchesReference


def integrate_batches(pretrained: Pretrained, adata: AnnData, request: IntegrationRequest) -> Integration:
    """Fine-tune a copy of ``pretrained`` on a training copy of ``adata`` and return its L2-normalised embedding.

    A ``pretrained`` already fine-tuned with batch-specific parts is not fine-tuned anew: ``adata`` is mapped onto
    it (:func:`map_query`).
    """
    from ._model import SCGPT

    if pretrained.spec.maps_queries(pretrained):
        return map_query(pretrained, adata, request)
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
        seed=request.seed,
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


def map_query(reference: Pretrained, adata: AnnData, request: IntegrationRequest) -> Integration:
    """Map the cells of ``adata`` onto a model fine-tuned for integration and return their L2-normalised embedding.

    The training copy holds the reference's genes in its order (missing ones padded with zeros) when the reference
    records them, else the ``n_top_genes`` most variable genes. New batches get their own parameters, trained for
    ``max_epochs`` with everything else frozen (:meth:`SCGPT.load_query_data`); a query of reference batches only
    is embedded without training.
    """
    from ._model import SCGPT

    work, alignment = training_copy(
        adata,
        {request.batch_key: request.columns[request.batch_key]},
        layer=request.layer,
        use_raw=request.use_raw,
        gene_key=request.gene_key,
        vocab=reference.vocab,
        min_genes=request.min_genes,
        gene_rules=request.gene_rules,
    )
    resolved = SCGPT._arches_reference(reference)
    reference_batches = SCGPT._reference_batches(resolved)
    genes = resolved.var_names
    if genes is not None and genes.isin(work.var_names).any():  # the reference's genes, named by vocabulary symbol
        work = SCGPT.prepare_query_anndata(work, reference, inplace=False)
    else:  # genes not recorded, or named otherwise (a reference set up on Ensembl ids): the most variable ones
        genes = None
        work = highly_variable_subset(work, request.n_top_genes, request.batch_key)
    plan = ArchesReference(
        reference,
        {"batch_key": request.batch_key},
        {"batch": {"categorical_mapping": reference_batches, "original_key": request.batch_key}},
        genes,
    )
    model = SCGPT._query_model(
        work,
        plan,
        inplace_subset_query_vars=False,
        accelerator=accelerator_for(request.device),
        device=request.device,
        unfrozen=False,
        freeze_dropout=False,
        freeze_classifier=True,
        min_genes=request.min_genes,
    )
    max_len = request.max_len
    if max_len is None:
        max_len = min(reference.config.max_len, work.n_vars + 1)
    weights = request.weights
    # Query training fits the new batches' parameters with the reconstruction objectives only, as scArches does
    # (every minibatch holds query cells only). On pancreas, adding ECS + DAR gave the same scores
    # (benchmarks/query_mapping.py).
    new_batches = model.arches_["new_batches"]
    train_seconds = 0.0
    if new_batches:
        start = time.perf_counter()
        model.train(
            max_epochs=request.max_epochs,
            batch_size=request.batch_size,
            lr=request.lr,
            max_len=max_len,
            mask_ratio=request.mask_ratio,
            gep_weight=weights.gep,
            gepc_weight=weights.gepc,
            seed=request.seed,
            accelerator=accelerator_for(request.device),
            enable_progress_bar=request.progress,
        )
        train_seconds = time.perf_counter() - start
    embedding = model.get_latent_representation(work, max_len=max_len, device=request.device)
    padded = work.var["scfm_padded"].to_numpy(dtype=bool) if "scfm_padded" in work.var else np.zeros(0, bool)
    record = {
        "mode": "query_mapping",
        "batches": list(model.config.batch_categories),
        "reference_batches": reference_batches,
        "new_batches": list(new_batches),
        "genes_used": int(work.n_vars),
        "genes_padded": int(padded.sum()),
        "genes_from": "reference" if genes is not None else "highly variable",
        "max_len": max_len,
        "weights": {"gep": weights.gep, "gepc": weights.gepc, "ecs": 0.0, "dar": 0.0, "cls": 0.0},
        "train_seconds": train_seconds,
        "seconds_per_epoch": train_seconds / request.max_epochs if new_batches else 0.0,
        "trained": list(model.arches_["trainable"]) if new_batches else [],
    }
    return Integration(embedding.astype(np.float32), model, record, alignment)
