"""``tl.annotate(method="probe")``: a logistic regression on the frozen cell embedding and the reference's genes."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from scfm.data import expression_source, highly_variable_subset, log_normalised
from scfm.genes import align_genes
from scfm.models import AnnotationRequest, Pretrained
from scfm.models.base import ReferenceAnnotation

from ._embed import compute_embeddings

PROBE_C = 1.0  # inverse L2 strength, scikit-learn's default and that of the logistic-regression baseline
PROBE_MAX_ITER = 3000
EMBEDDING_FACTORS = (0.0, 0.5, 1.0, 2.0)  # weights of the embedding block tried, relative to equal variance
CV_FOLDS = 5
CV_REPEATS = 3  # the folds are drawn this many times (seeds seed, seed + 1, ...) for the standard error of the rule
CV_MAX_CELLS = 5000  # the weight is chosen on at most this many reference cells (stratified draw)
PROBE_TOP_GENES = 2000  # the reference's most variable genes read by default, as many as the baseline regression


@dataclass
class ProbeAnnotation:
    """Class probabilities of the query, and how the probe's features were made (for provenance)."""

    annotation: ReferenceAnnotation
    embedding_dim: int
    embedding_weight: float
    cross_validated_f1: dict[str, float]
    cross_validated_f1_se: dict[str, float]


def annotate_by_probe(
    pretrained: Pretrained, query: AnnData, reference: AnnData, request: AnnotationRequest
) -> ProbeAnnotation:
    """Fit a multinomial logistic regression on the reference and return the query's class probabilities.

    Features of a cell: its log-normalised values of the reference's ``n_top_genes`` most variable genes that both
    datasets share (scaled to unit variance over the reference), beside its frozen cell embedding (standardised over
    the reference). The embedding block is weighted by ``factor * sqrt(n_genes / embedding_dim)``: at factor 1 the
    two blocks carry the same total variance. The factor is chosen among :data:`EMBEDDING_FACTORS` on the reference
    alone (the query is never looked at), by the one-standard-error rule: macro-F1 is measured on each held-out fold
    of :data:`CV_REPEATS` stratified :data:`CV_FOLDS`-fold splits, and the smallest factor whose mean is within one
    standard error of the best mean wins. Factor 0 is the regression on genes alone, so an embedding whose gain on
    the reference's own folds is within their noise is left out. The reference cannot reveal a batch effect that
    only the query has: where the embedding carries batch and the query's batches differ from the reference's, the
    embedding block can cost accuracy.
    """
    genes_ref, genes_query, alignments = _shared_log_genes(pretrained, query, reference, request)
    genes_ref = highly_variable_subset(genes_ref, request.n_top_genes)
    genes_query = genes_query[:, genes_ref.var_names].copy()
    embedding_ref = _embedding(pretrained, reference, request, reference=True)
    embedding_query = _embedding(pretrained, query, request, reference=False)
    order = np.argsort(np.asarray(reference.obs_names, dtype=str), kind="stable")  # folds and fit ignore cell order
    genes_matrix, embedding_ref = sp.csr_matrix(genes_ref.X)[order], embedding_ref[order]
    labels = np.asarray(request.labels, dtype=str)[order]

    gene_scale = _column_std(genes_matrix)
    mean, std = embedding_ref.mean(0), embedding_ref.std(0)
    std[std == 0] = 1.0
    balance = float(np.sqrt(genes_ref.n_vars / embedding_ref.shape[1]))

    def features(genes: sp.csr_matrix, embedding: np.ndarray, weight: float) -> sp.csr_matrix:
        # genes are scaled, not centred, to stay sparse: the unpenalised intercept absorbs the centring
        scaled = sp.csr_matrix(genes @ sp.diags(1.0 / gene_scale))
        return sp.hstack([scaled, sp.csr_matrix(weight * (embedding - mean) / std)], format="csr")

    fold_scores = {
        factor: _fold_f1(features(genes_matrix, embedding_ref, factor * balance), labels, request.seed)
        for factor in EMBEDDING_FACTORS
    }
    factor = _one_standard_error_choice(fold_scores)
    weight = factor * balance
    classifier = _classifier(request.seed).fit(features(genes_matrix, embedding_ref, weight), labels)
    fitted = classifier.predict_proba(features(genes_query.X, embedding_query, weight))
    probabilities = np.zeros((query.n_obs, len(request.categories)), dtype=np.float64)
    position = {label: i for i, label in enumerate(request.categories)}
    for column, label in enumerate(classifier.classes_):
        probabilities[:, position[str(label)]] = fitted[:, column]
    annotation = ReferenceAnnotation(
        probabilities, genes_ref.n_vars, reference.n_obs, request.n_top_genes, None, **alignments
    )
    means = {str(f): float(np.mean(fold_scores[f])) for f in EMBEDDING_FACTORS}
    errors = {str(f): _standard_error(fold_scores[f]) for f in EMBEDDING_FACTORS}
    return ProbeAnnotation(annotation, embedding_ref.shape[1], weight, means, errors)


def _shared_log_genes(pretrained: Pretrained, query: AnnData, reference: AnnData, request: AnnotationRequest):
    """Log-normalised copies of both datasets over the genes they share, and the alignments of their names."""
    genes_query, query_alignment = _log_genes(
        query, pretrained, request, layer=request.layer, use_raw=request.use_raw, gene_key=request.gene_key
    )
    genes_ref, reference_alignment = _log_genes(
        reference,
        pretrained,
        request,
        layer=request.reference_layer,
        use_raw=False,
        gene_key=request.reference_gene_key,
    )
    shared = genes_ref.var_names.intersection(genes_query.var_names, sort=False)
    if len(shared) < request.min_genes:
        raise ValueError(
            f"the query and the reference share {len(shared)} genes; at least {request.min_genes} are needed (check "
            "gene names, gene_key and reference_gene_key, or lower min_genes)"
        )
    alignments = {"alignment": query_alignment, "reference_alignment": reference_alignment}
    return genes_ref[:, shared].copy(), genes_query[:, shared].copy(), alignments


def _log_genes(adata: AnnData, pretrained: Pretrained, request: AnnotationRequest, *, layer, use_raw, gene_key):
    """Log-normalised values of every gene of ``adata``, named by vocabulary token where the gene has one.

    A gene outside the vocabulary keeps the name it was read by, so the two datasets share such genes by name, and
    genes the model knows under different names (a symbol here, an Ensembl id there) are shared through the token.
    """
    source = expression_source(adata, layer=layer, use_raw=use_raw)
    if source.is_backed:
        raise ValueError("method='probe' needs the matrix in memory; load the AnnData without backed mode")
    alignment = align_genes(
        source.var,
        pretrained.vocab,
        gene_key=gene_key,
        min_genes=request.min_genes,
        on_duplicate="first",
        **request.gene_rules.as_kwargs(),
    )
    read_as = alignment.names if alignment.names is not None else np.asarray(source.var_names, dtype=object)
    names = [token or str(name) for token, name in zip(alignment.tokens, read_as, strict=True)]
    first = ~pd.Index(names).duplicated()  # one column per name (duplicated names: the first)
    logged = log_normalised(adata, layer=layer, use_raw=use_raw)
    matrix = sp.csr_matrix(logged.X, dtype=np.float32)[:, np.flatnonzero(first)]
    kept = AnnData(matrix, var=pd.DataFrame(index=pd.Index(names)[first].astype(str)))
    kept.obs_names = adata.obs_names.astype(str)
    return kept, alignment


def _embedding(pretrained: Pretrained, adata: AnnData, request: AnnotationRequest, *, reference: bool) -> np.ndarray:
    computed = compute_embeddings(
        adata,
        pretrained,
        layer=request.reference_layer if reference else request.layer,
        use_raw=False if reference else request.use_raw,
        gene_key=request.reference_gene_key if reference else request.gene_key,
        batch_size=request.batch_size,
        device=request.device,
        options={"max_len": request.max_len},
        min_genes=request.min_genes,
        on_duplicate="first",
        gene_rules=request.gene_rules,
        progress=request.progress,
    )
    return np.asarray(computed.result.embeddings, dtype=np.float64)


def _classifier(seed: int):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=PROBE_C, max_iter=PROBE_MAX_ITER, random_state=seed)


def _fold_f1(features: sp.csr_matrix, labels: np.ndarray, seed: int) -> np.ndarray:
    """Macro-F1 on each held-out fold of :data:`CV_REPEATS` stratified splits of the reference (seeded)."""
    from sklearn.metrics import f1_score
    from sklearn.model_selection import StratifiedKFold

    rows = _stratified_rows(labels, CV_MAX_CELLS, seed)
    features, labels = features[rows], labels[rows]
    smallest = int(np.unique(labels, return_counts=True)[1].min())
    n_splits = min(CV_FOLDS, max(smallest, 2))
    scores = []
    with warnings.catch_warnings():  # a class smaller than the folds is only absent from some of them
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        for repeat in range(CV_REPEATS):
            folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed + repeat)
            for train, test in folds.split(features, labels):
                predicted = _classifier(seed).fit(features[train], labels[train]).predict(features[test])
                scores.append(f1_score(labels[test], predicted, average="macro"))
    return np.asarray(scores)


def _standard_error(scores: np.ndarray) -> float:
    return float(np.std(scores, ddof=1) / np.sqrt(len(scores))) if len(scores) > 1 else 0.0


def _one_standard_error_choice(fold_scores: dict[float, np.ndarray]) -> float:
    """Return the smallest factor whose mean fold score is within one standard error of the best factor's mean."""
    means = {factor: float(np.mean(scores)) for factor, scores in fold_scores.items()}
    best = max(sorted(means), key=lambda factor: means[factor])
    threshold = means[best] - _standard_error(fold_scores[best])
    return min(factor for factor in means if means[factor] >= threshold)


def _stratified_rows(labels: np.ndarray, max_rows: int, seed: int) -> np.ndarray:
    """All rows, or ``max_rows`` of them drawn per label in proportion (every label keeps at least one)."""
    if len(labels) <= max_rows:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        take = max(1, round(len(members) * max_rows / len(labels)))
        keep.append(rng.choice(members, size=min(take, len(members)), replace=False))
    return np.sort(np.concatenate(keep))


def _column_std(matrix: sp.csr_matrix) -> np.ndarray:
    """Per-column standard deviation of a sparse matrix (1 where a column is constant)."""
    mean = np.asarray(matrix.mean(0)).ravel()
    square = np.asarray(matrix.multiply(matrix).mean(0)).ravel()
    std = np.sqrt(np.maximum(square - mean**2, 0.0))
    std[std == 0] = 1.0
    return std
