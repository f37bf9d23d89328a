"""Annotation from a labelled reference with CellPLM: fine-tuned classifier or kNN on the latent."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from scfm.data import expression_source
from scfm.genes import GeneAlignment, align_genes

from ..base import AnnotationRequest, Pretrained, ReferenceAnnotation, knn_label_probabilities, resolve_device
from ._annotation import classifier_probabilities, finetune_classifier
from ._data import plan_sentences
from ._inference import cell_features, sentence_latents


def _restrict(alignment: GeneAlignment, token_ids: np.ndarray) -> GeneAlignment:
    return alignment.restrict(token_ids)


def annotate_with_reference(
    pretrained: Pretrained, adata: AnnData, reference: AnnData, request: AnnotationRequest
) -> ReferenceAnnotation:
    """Return class probabilities of the query.

    They come from an MLP head fine-tuned on the latent mean together with the transformer over cells (gene
    embeddings frozen), or from a cosine kNN vote among the reference's latents.

    Each dataset is read as one sample cut into hash-planned sentences of the checkpoint's context; every shared
    gene is used (``n_top_genes``, ``batch_size`` and ``max_len`` do not apply).
    """
    categories = request.categories
    label_codes = pd.Categorical(request.labels, categories=categories).codes.astype(np.int64)
    n_classes = len(categories)
    layer, reference_layer, use_raw = request.layer, request.reference_layer, request.use_raw
    gene_key, reference_gene_key, min_genes = request.gene_key, request.reference_gene_key, request.min_genes
    seed, progress = request.seed, request.progress
    module = pretrained.module
    query_source = expression_source(adata, layer=layer, use_raw=use_raw)
    reference_source = expression_source(reference, layer=reference_layer)
    rules = request.gene_rules.as_kwargs()
    query_alignment = align_genes(query_source.var, pretrained.vocab, gene_key=gene_key, min_genes=min_genes, **rules)
    reference_alignment = align_genes(
        reference_source.var, pretrained.vocab, gene_key=reference_gene_key, min_genes=min_genes, **rules
    )
    alignments = {"alignment": query_alignment, "reference_alignment": reference_alignment}
    if request.shared_genes_only:
        shared = np.intersect1d(query_alignment.token_ids, reference_alignment.token_ids)
        if len(shared) < min_genes:
            raise ValueError(
                f"the query and the reference share {len(shared)} of the model's genes; at least {min_genes} are "
                "needed (check gene names, or lower min_genes)"
            )
        query_alignment = _restrict(query_alignment, shared)
        reference_alignment = _restrict(reference_alignment, shared)
    target = resolve_device(request.device)
    module.to(target)
    query_features = cell_features(module, query_source, query_alignment).features
    reference_features = cell_features(module, reference_source, reference_alignment).features
    context = module.config.context
    query_sentences = plan_sentences(np.asarray(adata.obs_names), context=context, seed=seed, min_sample_size=1)
    if request.method == "finetune":
        classifier = finetune_classifier(
            module,
            reference_features,
            label_codes,
            n_classes,
            max_epochs=request.max_epochs,
            lr=request.lr,
            seed=seed,
            device=target,
        )
        probabilities = classifier_probabilities(classifier, query_features, query_sentences, target)
        return ReferenceAnnotation(
            probabilities, query_alignment.n_matched, reference.n_obs, None, classifier, **alignments
        )

    def latent(features: np.ndarray, names) -> np.ndarray:
        sentences = plan_sentences(np.asarray(names), context=context, seed=seed, min_sample_size=1)
        return sentence_latents(module, features, sentences, coordinates=None, device=target, progress=progress)

    probabilities = knn_label_probabilities(
        latent(reference_features, reference.obs_names),
        label_codes,
        latent(query_features, adata.obs_names),
        n_classes,
        n_neighbors=request.n_neighbors,
        seed=seed,
    )
    return ReferenceAnnotation(probabilities, query_alignment.n_matched, reference.n_obs, None, **alignments)
