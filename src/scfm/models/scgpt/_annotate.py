"""scGPT's cell-type annotation from a labelled reference: fine-tuned classification head or embedding kNN."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from scfm.data import (
    HEAD_LR_FACTOR,
    accelerator_for,
    expression_source,
    highly_variable_subset,
    training_copy,
)
from scfm.genes import align_genes

from ..base import AnnotationRequest, Pretrained, ReferenceAnnotation, knn_label_probabilities, resolve_device
from ._embed import embed_cells


def annotate_with_reference(
    pretrained: Pretrained, adata: AnnData, reference: AnnData, request: AnnotationRequest
) -> ReferenceAnnotation:
    """Return class probabilities of the query.

    They come from fine-tuning (scGPT's recipe: cross-entropy only, no masking, on the reference's most variable
    shared genes) or from a cosine kNN vote among the reference's embeddings.
    """
    from ._model import SCGPT

    vocab, categories, min_genes = pretrained.vocab, request.categories, request.min_genes
    query, query_alignment = training_copy(
        adata,
        {},
        layer=request.layer,
        use_raw=request.use_raw,
        gene_key=request.gene_key,
        vocab=vocab,
        min_genes=min_genes,
        gene_rules=request.gene_rules,
    )
    ref, reference_alignment = training_copy(
        reference,
        {"label": pd.Categorical(request.labels, categories=categories)},
        layer=request.reference_layer,
        use_raw=False,
        gene_key=request.reference_gene_key,
        vocab=vocab,
        min_genes=min_genes,
        gene_rules=request.gene_rules,
    )
    alignments = {"alignment": query_alignment, "reference_alignment": reference_alignment}
    if request.shared_genes_only:  # copies name genes by vocabulary token, so shared genes are shared names
        shared = query.var_names.intersection(ref.var_names)
        if len(shared) < min_genes:
            raise ValueError(
                f"the query and the reference share {len(shared)} of the model's genes; at least {min_genes} are "
                "needed (check gene names, or lower min_genes)"
            )
        query = query[:, query.var_names.isin(shared)].copy()
        ref = ref[:, ref.var_names.isin(shared)].copy()

    max_len = request.max_len
    if request.method == "knn":
        probabilities = _knn_probabilities(pretrained, ref, query, categories, request)
        return ReferenceAnnotation(probabilities, query.n_vars, ref.n_obs, None, **alignments)
    ref = highly_variable_subset(ref, request.n_top_genes)
    query = query[:, query.var_names.isin(ref.var_names)].copy()
    if max_len is None:
        max_len = min(pretrained.config.max_len, ref.n_vars + 1)
    finetuned = SCGPT.for_finetuning(
        pretrained,
        ref,
        labels_key="label",
        label_categories=categories,
        classifier_gene_linear=request.gene_linear,
        min_genes=min_genes,
        seed=request.seed,
    )
    finetuned.train(
        max_epochs=request.max_epochs,
        batch_size=request.batch_size,
        lr=request.lr,
        max_len=max_len,
        mask_ratio=0.0,
        gep_weight=0.0,
        gepc_weight=0.0,
        cls_weight=1.0,
        head_lr_factor=HEAD_LR_FACTOR,
        seed=request.seed,
        accelerator=accelerator_for(request.device),
        enable_progress_bar=request.progress,
    )
    probabilities = finetuned.predict(query, max_len=max_len, device=request.device).to_numpy()
    return ReferenceAnnotation(probabilities, query.n_vars, ref.n_obs, request.n_top_genes, finetuned, **alignments)


def _knn_probabilities(pretrained: Pretrained, ref: AnnData, query: AnnData, categories, request) -> np.ndarray:
    target = resolve_device(request.device)
    module = pretrained.module.to(target)

    def embed(data: AnnData) -> np.ndarray:
        source = expression_source(data)
        alignment = align_genes(source.var, pretrained.vocab, min_genes=1)
        return embed_cells(
            module, source, alignment, device=target, max_len=request.max_len, progress=request.progress
        ).embeddings

    position = {str(category): i for i, category in enumerate(categories)}
    codes = np.array([position[label] for label in ref.obs["label"].astype(str)], dtype=np.int64)
    return knn_label_probabilities(
        embed(ref), codes, embed(query), len(categories), n_neighbors=request.n_neighbors, seed=request.seed
    )
