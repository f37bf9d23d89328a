"""Perturbation-prediction baselines and metrics (the simple predictors published models are measured against).

Every quantity is on one scale: ``log1p`` of counts scaled to 10,000 per cell (library size over all genes), averaged
over the cells of a perturbation (pseudobulk). A *change* is a perturbation's mean minus the control mean.

Baselines (Ahlmann-Eltze et al. 2025): no change; the mean change of the training perturbations; additive (sum of
the single-gene changes) for combinations; a linear model ``Y ~ b + G W P^T`` with gene embeddings ``G`` from a
PCA of the training changes and perturbation embeddings ``P`` = the rows of ``G`` of the perturbed genes; the same
linear model on a foundation model's gene embeddings; and a noise ceiling (two halves of the cells of a
perturbation, and of the controls, against each other).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

TARGET_SUM = 1e4


@dataclass
class ScreenSummary:
    """Pseudobulk means of a perturbation screen on the readout ``genes``.

    Attributes
    ----------
    genes
        Readout gene names (columns of every matrix).
    control_mean
        Mean log-normalised expression of the control cells.
    means
        Perturbation name -> mean of its cells.
    de
        Perturbation name -> positions of its top differentially expressed genes (largest ``|Welch t|`` vs control).
    halves
        Perturbation name -> ``(change of half A, change of half B)``, halves of its cells against halves of the
        controls, for the noise ceiling.
    n_cells
        Perturbation name -> number of cells.
    """

    genes: list[str]
    control_mean: np.ndarray
    means: dict[str, np.ndarray]
    de: dict[str, np.ndarray]
    halves: dict[str, tuple[np.ndarray, np.ndarray]]
    n_cells: dict[str, int] = field(default_factory=dict)

    def change(self, perturbation: str) -> np.ndarray:
        """Observed change of ``perturbation`` (its mean minus the control mean)."""
        return self.means[perturbation] - self.control_mean


def _log_normalised(adata: AnnData, layer: str | None, columns: np.ndarray) -> np.ndarray:
    matrix = adata.X if layer is None else adata.layers[layer]
    matrix = sp.csr_matrix(matrix, dtype=np.float64)
    totals = np.asarray(matrix.sum(axis=1)).ravel()
    scale = np.divide(TARGET_SUM, totals, out=np.zeros_like(totals), where=totals > 0)
    return np.log1p(matrix[:, columns].toarray() * scale[:, None])


def _welch_t(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    var = a.var(0, ddof=1) / max(len(a), 1) + b.var(0, ddof=1) / max(len(b), 1)
    return (a.mean(0) - b.mean(0)) / np.sqrt(np.maximum(var, 1e-12))


def summarise_screen(
    adata: AnnData,
    perturbation_key: str,
    control: str,
    *,
    genes: list[str] | None = None,
    layer: str | None = None,
    n_de: int = 20,
    min_cells: int = 4,
    seed: int = 0,
) -> ScreenSummary:
    """Pseudobulk means, top DE genes and split halves of every perturbation of a screen with raw counts.

    Parameters
    ----------
    genes
        Readout genes (``var_names``); ``None`` uses all. The library size always sums over every gene.
    n_de
        Top differentially expressed genes per perturbation.
    min_cells
        A perturbation needs this many cells (two halves of at least two cells).

    Raises
    ------
    KeyError, ValueError
        Missing column or control label, unknown genes, too few cells of a perturbation or of the controls.
    """
    if perturbation_key not in adata.obs:
        raise KeyError(f"perturbation_key={perturbation_key!r} is not a column of adata.obs")
    labels = adata.obs[perturbation_key].astype(str).to_numpy()
    if not (labels == control).any():
        raise ValueError(f"no cell of adata.obs[{perturbation_key!r}] is labelled {control!r}")
    names = list(adata.var_names) if genes is None else list(genes)
    index = pd.Index(adata.var_names).get_indexer(names)
    if (index < 0).any():
        raise ValueError(f"genes not in adata.var_names: {[g for g, i in zip(names, index, strict=True) if i < 0][:5]}")
    if n_de < 1 or n_de > len(names):
        raise ValueError(f"n_de must be between 1 and the number of genes ({len(names)}), got {n_de}")
    values = _log_normalised(adata, layer, index)
    rng = np.random.default_rng(seed)
    controls = values[labels == control]
    if len(controls) < min_cells:
        raise ValueError(f"{len(controls)} control cells; the summary needs at least {min_cells}")
    order = rng.permutation(len(controls))
    control_halves = controls[order[: len(order) // 2]].mean(0), controls[order[len(order) // 2 :]].mean(0)
    means, de, halves, n_cells = {}, {}, {}, {}
    for name in sorted(set(labels) - {control}):
        cells = values[labels == name]
        if len(cells) < min_cells:
            raise ValueError(
                f"perturbation {name!r} has {len(cells)} cells; scoring it needs at least {min_cells} (two halves "
                "for the noise ceiling): drop it"
            )
        means[name] = cells.mean(0)
        t = np.nan_to_num(_welch_t(cells, controls))
        de[name] = np.argsort(-np.abs(t), kind="stable")[:n_de]
        split = rng.permutation(len(cells))
        a, b = cells[split[: len(split) // 2]].mean(0), cells[split[len(split) // 2 :]].mean(0)
        halves[name] = (a - control_halves[0], b - control_halves[1])
        n_cells[name] = len(cells)
    return ScreenSummary(names, controls.mean(0), means, de, halves, n_cells)


def _ridge_linear_model(
    y: np.ndarray, g: np.ndarray, p_train: np.ndarray, p_test: np.ndarray, ridge: float
) -> np.ndarray:
    """Ahlmann-Eltze's linear model: ``Y - b = G W P^T`` with ridge-regularised ``W``; returns ``G W P_test^T``."""
    k_g, k_p = g.shape[1], p_train.shape[1]
    left = np.linalg.solve(g.T @ g + ridge * np.eye(k_g), g.T)  # (k_g, genes)
    right = np.linalg.solve(p_train.T @ p_train + ridge * np.eye(k_p), p_train.T)  # (k_p, train)
    w = left @ y @ right.T  # (k_g, k_p)
    return g @ w @ p_test.T


def perturbation_baselines(
    summary: ScreenSummary,
    train: list[str],
    test: list[str],
    *,
    gene_embeddings: pd.DataFrame | None = None,
    n_components: int = 10,
    ridge: float = 0.1,
) -> dict[str, pd.DataFrame]:
    """Predicted changes of the ``test`` perturbations by each baseline, fitted on the ``train`` perturbations.

    Parameters
    ----------
    summary
        From :func:`summarise_screen`.
    train, test
        Perturbation names (``"GENE"`` or ``"A+B"``); ``test`` ones need not be in ``summary`` (e.g. unmeasured
        combinations).
    gene_embeddings
        Optional gene x dimension table (e.g. ``adata.varm`` written by :func:`scfm.tl.gene_embeddings`, indexed by
        gene name) covering the readout genes and the perturbed genes: adds ``"linear (model gene embeddings)"``.
    n_components
        Principal components of the training changes that make the PCA gene embedding.
    ridge
        Ridge penalty of the linear models (0.1 as in Ahlmann-Eltze et al.).

    Returns
    -------
    Baseline name -> DataFrame (test perturbations x readout genes) of predicted changes. ``"additive"`` has NaN
    rows for single-gene perturbations and for combinations with an untrained single; the linear models predict
    the training mean for a perturbed gene without an embedding (counted in ``frame.attrs["fallback"]``).
    """
    if not train:
        raise ValueError("the baselines need at least one training perturbation")
    genes = summary.genes
    y = np.stack([summary.change(p) for p in train], axis=1)  # genes x train
    b = y.mean(1)
    out = {
        "no change": np.zeros((len(test), len(genes))),
        "training mean": np.tile(b, (len(test), 1)),
    }
    additive = np.full((len(test), len(genes)), np.nan)
    for i, name in enumerate(test):
        parts = name.split("+")
        if len(parts) > 1 and all(p in train for p in parts):
            additive[i] = sum(summary.change(p) for p in parts)
    out["additive"] = additive
    k = max(1, min(n_components, len(train) - 1, len(genes)))
    u, s, _ = np.linalg.svd(y - b[:, None], full_matrices=False)
    pca = pd.DataFrame(u[:, :k] * s[:k], index=genes)
    frames = {name: pd.DataFrame(values, index=test, columns=genes) for name, values in out.items()}
    frames["linear (PCA)"] = _linear(y, b, pca, pca, train, test, ridge)
    if gene_embeddings is not None:
        readout = gene_embeddings.reindex(genes)
        frames["linear (model gene embeddings)"] = _linear(y, b, readout, gene_embeddings, train, test, ridge)
    return frames


def _linear(y, b, readout: pd.DataFrame, perturbed: pd.DataFrame, train, test, ridge) -> pd.DataFrame:
    """Fit on the training perturbations whose genes all have embeddings; combinations add the genes' vectors."""
    genes = list(readout.index)
    g = np.nan_to_num(readout.to_numpy(dtype=np.float64))  # genes without an embedding: zero rows
    known = {name for name in perturbed.index if not np.isnan(perturbed.loc[name].to_numpy(dtype=float)).any()}

    def vector(name: str) -> np.ndarray | None:
        parts = name.split("+")
        if not all(p in known for p in parts):
            return None
        return sum(perturbed.loc[p].to_numpy(dtype=np.float64) for p in parts)

    usable = [(i, vector(p)) for i, p in enumerate(train)]
    usable = [(i, v) for i, v in usable if v is not None]
    prediction = np.tile(b, (len(test), 1))
    fallback = 0
    if len(usable) >= 2:
        cols = [i for i, _ in usable]
        p_train = np.stack([v for _, v in usable])
        test_vectors = [vector(p) for p in test]
        rows = [i for i, v in enumerate(test_vectors) if v is not None]
        if rows:
            p_test = np.stack([test_vectors[i] for i in rows])
            fitted = _ridge_linear_model(y[:, cols] - b[:, None], g, p_train, p_test, ridge)
            prediction[rows] = b[None, :] + fitted.T
        fallback = len(test) - len(rows)
    else:
        fallback = len(test)
    frame = pd.DataFrame(prediction, index=test, columns=list(genes))
    frame.attrs["fallback"] = fallback
    return frame


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; 0 when either side is constant (up to rounding, e.g. a baseline minus itself)."""
    a, b = a - a.mean(), b - b.mean()
    norm_a, norm_b = np.sqrt((a * a).sum()), np.sqrt((b * b).sum())
    if norm_a <= 1e-9 * np.sqrt(len(a)) or norm_b <= 1e-9 * np.sqrt(len(b)):
        return 0.0
    return float((a * b).sum() / (norm_a * norm_b))


def perturbation_metrics(
    predicted: np.ndarray, observed: np.ndarray, de: np.ndarray, reference: np.ndarray
) -> dict[str, float]:
    """Score one predicted change against the observed one.

    Parameters
    ----------
    predicted, observed
        Changes from the control mean, one value per readout gene.
    de
        Positions of the top differentially expressed genes.
    reference
        The mean observed change of the training perturbations: the centred metrics subtract it from both
        sides, so a shift shared by all perturbations earns nothing (the training-mean baseline scores 0).

    Returns
    -------
    ``pearson_all``, ``pearson_de`` (top DE genes), ``mse_de``, ``sign_de`` (fraction of top DE genes with the
    observed sign), ``pearson_all_centred``, ``pearson_de_centred``. A constant prediction has Pearson 0.
    """
    predicted, observed = np.asarray(predicted, float), np.asarray(observed, float)
    centred_p, centred_o = predicted - reference, observed - reference
    return {
        "pearson_all": _pearson(predicted, observed),
        "pearson_de": _pearson(predicted[de], observed[de]),
        "mse_de": float(np.mean((predicted[de] - observed[de]) ** 2)),
        "sign_de": float(np.mean(np.sign(predicted[de]) == np.sign(observed[de]))),
        "pearson_all_centred": _pearson(centred_p, centred_o),
        "pearson_de_centred": _pearson(centred_p[de], centred_o[de]),
    }


def perturbation_benchmark(
    summary: ScreenSummary, predictions: dict[str, pd.DataFrame], train: list[str], test: list[str]
) -> pd.DataFrame:
    """Tidy table (method, perturbation, metrics) of every method's predicted changes plus the noise ceiling.

    ``predictions`` maps a method to a DataFrame of predicted changes (perturbations x ``summary.genes``); rows
    that are all NaN (a baseline that does not apply) are left out. Test perturbations must be in ``summary``.
    """
    missing = [p for p in test if p not in summary.means]
    if missing:
        raise ValueError(f"test perturbations without observed cells: {missing}")
    reference = np.mean([summary.change(p) for p in train], axis=0)
    rows = []
    for method, frame in predictions.items():
        frame = frame.reindex(columns=summary.genes)
        for name in test:
            if name not in frame.index:
                continue
            values = frame.loc[name].to_numpy(dtype=float)
            if np.isnan(values).all():
                continue
            if np.isnan(values).any():
                raise ValueError(f"{method} predicts NaN for some genes of {name!r}")
            scores = perturbation_metrics(values, summary.change(name), summary.de[name], reference)
            rows.append({"method": method, "perturbation": name, **scores})
    for name in test:
        a, b = summary.halves[name]
        scores = perturbation_metrics(a, b, summary.de[name], reference)
        rows.append({"method": "noise ceiling", "perturbation": name, **scores})
    return pd.DataFrame(rows)
