"""The CellPLM branch of ``scfm.tl.annotate``: stage-one features, fine-tuned classifier or kNN on the latent."""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from scfm.data import expression_source, plan_sentences
from scfm.genes import GeneAlignment, align_genes
from scfm.models._device import resolve_device
from scfm.models.cellplm import (
    CellPLMClassifier,
    PretrainedCellPLM,
    cell_features,
    classifier_probabilities,
    finetune_classifier,
    sentence_latents,
)


def _restrict(alignment: GeneAlignment, token_ids: np.ndarray) -> GeneAlignment:
    keep = np.isin(alignment.token_ids, token_ids)
    return GeneAlignment(
        alignment.var_index[keep],
        alignment.token_ids[keep],
        alignment.n_vars,
        alignment.source,
        alignment.id_type,
        alignment.n_casefold,
        alignment.unmatched_examples,
    )


def cellplm_annotation(
    pretrained: PretrainedCellPLM,
    adata: AnnData,
    reference: AnnData,
    label_codes: np.ndarray,
    n_classes: int,
    *,
    method: str,
    layer: str | None,
    reference_layer: str | None,
    use_raw: bool,
    gene_key: str | None,
    reference_gene_key: str | None,
    shared_genes_only: bool,
    min_genes: int,
    max_epochs: int,
    lr: float,
    n_neighbors: int,
    seed: int,
    device: str,
    progress: bool,
) -> tuple[np.ndarray, int, CellPLMClassifier | None]:
    """Class probabilities ``(n_query, n_classes)``, the number of genes used, and the fine-tuned classifier.

    Each dataset is read as one sample cut into hash-planned sentences of the checkpoint's context.
    """
    module = pretrained.module
    query_source = expression_source(adata, layer=layer, use_raw=use_raw)
    reference_source = expression_source(reference, layer=reference_layer)
    query_alignment = align_genes(query_source.var, pretrained.vocab, gene_key=gene_key, min_genes=min_genes)
    reference_alignment = align_genes(
        reference_source.var, pretrained.vocab, gene_key=reference_gene_key, min_genes=min_genes
    )
    if shared_genes_only:
        shared = np.intersect1d(query_alignment.token_ids, reference_alignment.token_ids)
        if len(shared) < min_genes:
            raise ValueError(
                f"the query and the reference share {len(shared)} of the model's genes; at least {min_genes} are "
                "needed (check gene names, or lower min_genes)"
            )
        query_alignment = _restrict(query_alignment, shared)
        reference_alignment = _restrict(reference_alignment, shared)
    target = resolve_device(device)
    module.to(target)
    query_features = cell_features(module, query_source, query_alignment).features
    reference_features = cell_features(module, reference_source, reference_alignment).features
    context = module.config.context
    query_sentences = plan_sentences(np.asarray(adata.obs_names), context=context, seed=seed, min_sample_size=1)
    if method == "finetune":
        classifier = finetune_classifier(
            module, reference_features, label_codes, n_classes, max_epochs=max_epochs, lr=lr, seed=seed, device=target
        )
        probabilities = classifier_probabilities(classifier, query_features, query_sentences, target)
        return probabilities, query_alignment.n_matched, classifier
    from sklearn.neighbors import KNeighborsClassifier

    def latent(features: np.ndarray, names) -> np.ndarray:
        sentences = plan_sentences(np.asarray(names), context=context, seed=seed, min_sample_size=1)
        return sentence_latents(module, features, sentences, coordinates=None, device=target, progress=progress)

    knn = KNeighborsClassifier(n_neighbors=min(n_neighbors, reference.n_obs), metric="cosine")
    knn.fit(latent(reference_features, reference.obs_names), label_codes)
    probabilities = np.zeros((adata.n_obs, n_classes), dtype=np.float32)
    probabilities[:, knn.classes_] = knn.predict_proba(latent(query_features, adata.obs_names))
    return probabilities, query_alignment.n_matched, None
