"""Gene-network evaluation: baselines (co-expression, GENIE3-style trees, random) and scores against ground truth.

Every network is a dense ``(n_genes, n_genes)`` score matrix over the same genes, ``scores[r, t]`` the evidence
that gene ``r`` regulates gene ``t`` (symmetric methods score both directions alike). Scores are compared only on
a shared universe of candidate edges, so every method is ranked on the same pairs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy import stats
from sklearn.ensemble import RandomForestRegressor
from sklearn.metrics import average_precision_score

# -- baselines ---------------------------------------------------------------------------------------------------------


def _dense(matrix) -> np.ndarray:
    return np.asarray(matrix.toarray() if sp.issparse(matrix) else matrix, dtype=np.float64)


def pearson_scores(x) -> np.ndarray:
    """Absolute Pearson correlation between genes (columns of cells x genes ``x``), zero diagonal and constant genes."""
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.nan_to_num(np.corrcoef(_dense(x), rowvar=False), nan=0.0)
    np.fill_diagonal(r, 0.0)
    return np.abs(r)


def spearman_scores(x) -> np.ndarray:
    """Absolute Spearman correlation between genes (Pearson of the within-gene ranks, ties averaged)."""
    return pearson_scores(stats.rankdata(_dense(x), axis=0))


def genie3_scores(
    x,
    regulators: Sequence[int],
    *,
    n_estimators: int = 50,
    max_cells: int | None = 1000,
    min_samples_leaf: int = 5,
    seed: int = 0,
) -> np.ndarray:
    """GENIE3-style importances: one random forest per target gene on the regulators' expression.

    Each target is standardised; a forest (``max_features="sqrt"``, as GENIE3's default K) predicts it from the
    ``regulators`` (the target itself excluded) and the impurity importances fill ``scores[regulator, target]``.
    Non-regulator rows are zero. ``max_cells`` cells (a seeded sample) bound the run time.
    """
    x = _dense(x)
    rng = np.random.default_rng(seed)
    if max_cells is not None and x.shape[0] > max_cells:
        x = x[np.sort(rng.choice(x.shape[0], max_cells, replace=False))]
    std = x.std(0)
    x = (x - x.mean(0)) / np.where(std > 0, std, 1.0)
    regulators = np.asarray(regulators, dtype=np.int64)
    n_genes = x.shape[1]
    scores = np.zeros((n_genes, n_genes))
    for target in range(n_genes):
        if std[target] == 0:
            continue
        inputs = regulators[regulators != target]
        forest = RandomForestRegressor(
            n_estimators=n_estimators,
            max_features="sqrt",
            min_samples_leaf=min_samples_leaf,
            random_state=seed + target,
            n_jobs=1,
        )
        forest.fit(x[:, inputs], x[:, target])
        scores[inputs, target] = forest.feature_importances_
    return scores


def random_scores(n_genes: int, seed: int = 0) -> np.ndarray:
    """Uniform random scores (the chance baseline), zero diagonal."""
    scores = np.random.default_rng(seed).random((n_genes, n_genes))
    np.fill_diagonal(scores, 0.0)
    return scores


# -- scoring -----------------------------------------------------------------------------------------------------------


@dataclass
class EdgeScore:
    """Early precision ratio and AUPRC ratio of one ranking against one truth (``nan`` when undefined)."""

    epr: float
    auprc_ratio: float
    n_positive: int
    n_candidates: int


def score_ranking(scores: np.ndarray, truth: np.ndarray, k: int | None = None, seed: int = 0) -> EdgeScore:
    """Score a ranking of candidate edges.

    ``scores`` and ``truth`` (bool) are 1-d over the same candidates. The early precision ratio is the precision of
    the ``k`` best-scored candidates (default: as many as there are positives) divided by the positive rate; the
    AUPRC ratio is the average precision divided by the positive rate. Both are 1 in expectation for a random
    ranking. Ties are broken by a seeded random order, so a network that leaves most pairs at zero is not favoured.
    """
    scores = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(truth, dtype=bool)
    n_positive, n = int(truth.sum()), truth.size
    if n_positive == 0 or n_positive == n:
        return EdgeScore(float("nan"), float("nan"), n_positive, n)
    rate = n_positive / n
    k = n_positive if k is None else min(k, n)
    tiebreak = np.random.default_rng(seed).random(n)
    order = np.lexsort((tiebreak, -scores))
    precision = truth[order[:k]].mean()
    jitter = scores + 1e-12 * (np.abs(scores).max() + 1.0) * tiebreak
    return EdgeScore(float(precision / rate), float(average_precision_score(truth, jitter) / rate), n_positive, n)


def score_regulator_edges(
    scores: np.ndarray, regulators: Sequence[int], true_edges: Iterable[tuple[int, int]], seed: int = 0
) -> EdgeScore:
    """Score a network on the candidate edges ``regulator -> any other gene`` against ``true_edges``.

    ``regulators`` index the genes with at least one true target; every other gene is a candidate target.
    """
    regulators = np.asarray(regulators, dtype=np.int64)
    n_genes = scores.shape[0]
    truth = np.zeros((n_genes, n_genes), dtype=bool)
    for source, target in true_edges:
        truth[source, target] = True
    candidate = np.zeros((n_genes, n_genes), dtype=bool)
    candidate[regulators] = True
    np.fill_diagonal(candidate, False)
    return score_ranking(scores[candidate], truth[candidate], seed=seed)


def score_neighbourhoods(scores: np.ndarray, targets: dict[int, np.ndarray], seed: int = 0) -> dict[str, float]:
    """Mean EPR and AUPRC ratio of each gene's row ranking (``scores[g]``) against its true targets ``targets[g]``.

    The gene itself is excluded from its own ranking. Genes whose target set is empty are skipped.
    """
    eprs, ratios = [], []
    n_genes = scores.shape[0]
    for gene, hits in targets.items():
        keep = np.arange(n_genes) != gene
        truth = np.zeros(n_genes, dtype=bool)
        truth[hits] = True
        result = score_ranking(scores[gene][keep], truth[keep], seed=seed + gene)
        if np.isfinite(result.epr):
            eprs.append(result.epr)
            ratios.append(result.auprc_ratio)
    return {
        "epr": float(np.mean(eprs)) if eprs else float("nan"),
        "auprc_ratio": float(np.mean(ratios)) if ratios else float("nan"),
        "n": len(eprs),
    }


# -- perturbation truth ------------------------------------------------------------------------------------------------


def de_pvalues(perturbed, control) -> np.ndarray:
    """Two-sided Mann-Whitney U p-values per gene (columns), perturbed vs control cells; 1 for constant genes."""
    a, b = _dense(perturbed), _dense(control)
    with np.errstate(all="ignore"):
        p = stats.mannwhitneyu(a, b, axis=0, alternative="two-sided").pvalue
    return np.nan_to_num(p, nan=1.0)


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values."""
    p = np.asarray(p, dtype=np.float64)
    order = np.argsort(p)
    ranked = p[order] * p.size / np.arange(1, p.size + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty_like(p)
    out[order] = np.minimum(adjusted, 1.0)
    return out


# -- gene programs -----------------------------------------------------------------------------------------------------


def coannotation_rate(members: Sequence[np.ndarray], annotation: sp.csr_matrix) -> float:
    """Fraction of gene pairs inside the same program that share at least one annotation (genes x terms, binary)."""
    shared = pairs = 0
    for genes in members:
        if genes.size < 2:
            continue
        sub = annotation[genes]
        overlap = (sub @ sub.T).toarray() > 0
        upper = np.triu_indices(genes.size, k=1)
        shared += int(overlap[upper].sum())
        pairs += upper[0].size
    return shared / pairs if pairs else float("nan")


def program_enrichment(
    members: Sequence[np.ndarray], annotation: sp.csr_matrix, pool: np.ndarray, n_draws: int = 100, seed: int = 0
) -> dict[str, float]:
    """Co-annotation rate of programs and of size-matched random gene sets drawn from ``pool``.

    Returns the programs' rate, the mean random rate, their ratio and the fraction of draws at least as high
    (an empirical p-value).
    """
    observed = coannotation_rate(members, annotation)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_draws):
        shuffled = rng.permutation(pool)
        sizes = np.cumsum([0, *[genes.size for genes in members]])
        draws.append(coannotation_rate([shuffled[sizes[i] : sizes[i + 1]] for i in range(len(members))], annotation))
    draws = np.asarray(draws)
    return {
        "observed": observed,
        "random": float(draws.mean()),
        "ratio": float(observed / draws.mean()) if draws.mean() > 0 else float("nan"),
        "p": float((1 + (draws >= observed).sum()) / (1 + n_draws)),
    }
