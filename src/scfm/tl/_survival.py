"""Cross-validated models behind :func:`scfm.tl.associate`: Cox regression (C-index) and logistic regression (ROC AUC).

Every feature set goes through the same pipeline inside each fold, fitted on the training fold only:
standardise -> PCA to ``n_components`` -> model. Fixed design columns (clinical covariates) skip the PCA; their
numeric columns are standardised on the training fold. All feature sets share the same folds.

The Cox model is lifelines' ``CoxPHFitter``. lifelines is pure Python (pandas, scipy, autograd, formulaic), so it
installs on any platform and does not pin scikit-learn to a narrow range; scikit-survival ships compiled
extensions and each release pins scikit-learn, which conflicts with the scanpy/scib-metrics stack.
lifelines is imported lazily: it is only needed for survival, and it lives in the ``eval`` extra.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

LIFELINES_HINT = "install it with `pip install 'scfm-models[eval]'` or `pip install lifelines`"


@dataclass(frozen=True)
class FeatureSet:
    """A named feature set: a block reduced by standardise -> PCA in each fold, fixed columns, or both.

    ``scale`` marks the ``fixed`` columns (numeric covariates) that are standardised on the training fold;
    the others (one-hot indicators) are used as they are.
    """

    name: str
    reduce: np.ndarray | None = None
    fixed: np.ndarray | None = None
    scale: np.ndarray | None = None


def import_lifelines():
    """``(CoxPHFitter, concordance_index, ConvergenceError)``, or an ``ImportError`` that says how to install."""
    try:
        from lifelines import CoxPHFitter
        from lifelines.exceptions import ConvergenceError
        from lifelines.utils import concordance_index
    except ImportError as err:
        raise ImportError(f"survival analysis needs lifelines; {LIFELINES_HINT}") from err
    return CoxPHFitter, concordance_index, ConvergenceError


def stratified_folds(labels: np.ndarray, n_splits: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shuffled stratified K-fold ``(train, test)`` index pairs, deterministic for a given seed."""
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros((len(labels), 1)), labels))


def fold_design(
    feature_set: FeatureSet, train: np.ndarray, test: np.ndarray, n_components: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Training and test design matrices of one feature set, with every transform fitted on ``train`` only."""
    parts_train, parts_test = [], []
    if feature_set.reduce is not None:
        scaler = StandardScaler().fit(feature_set.reduce[train])
        a = scaler.transform(feature_set.reduce[train])
        b = scaler.transform(feature_set.reduce[test])
        k = min(n_components, a.shape[1], a.shape[0] - 1)
        pca = PCA(n_components=k, random_state=seed).fit(a)
        # Rank-deficient blocks give components without variance; they carry nothing and upset the models.
        keep = pca.explained_variance_ > 1e-10 * max(float(pca.explained_variance_.max()), 1e-300)
        parts_train.append(pca.transform(a)[:, keep])
        parts_test.append(pca.transform(b)[:, keep])
    if feature_set.fixed is not None:
        a = np.array(feature_set.fixed[train], dtype=np.float64)
        b = np.array(feature_set.fixed[test], dtype=np.float64)
        scale = feature_set.scale if feature_set.scale is not None else np.zeros(a.shape[1], dtype=bool)
        if scale.any():
            mean = a[:, scale].mean(axis=0)
            std = a[:, scale].std(axis=0)
            std[std == 0] = 1.0
            a[:, scale] = (a[:, scale] - mean) / std
            b[:, scale] = (b[:, scale] - mean) / std
        varies = a.std(axis=0) > 0  # e.g. a rare category absent from this training fold
        parts_train.append(a[:, varies])
        parts_test.append(b[:, varies])
    return np.hstack(parts_train), np.hstack(parts_test)


def cv_concordance(
    feature_sets: Sequence[FeatureSet],
    durations: np.ndarray,
    events: np.ndarray,
    *,
    n_components: int,
    n_splits: int,
    penalizer: float,
    seed: int,
) -> dict[str, list[float]]:
    """Held-out Harrell's C-index of a penalised Cox model per fold and feature set (folds stratified on event)."""
    cox_fitter, concordance_index, convergence_error = import_lifelines()
    events = np.asarray(events, dtype=int)
    scores: dict[str, list[float]] = {fs.name: [] for fs in feature_sets}
    for train, test in stratified_folds(events, n_splits, seed):
        for fs in feature_sets:
            x_train, x_test = fold_design(fs, train, test, n_components, seed)
            if x_train.shape[1] == 0:
                risk = np.zeros(len(test))  # nothing varies: no ranking, C-index 0.5
            else:
                columns = [f"x{i}" for i in range(x_train.shape[1])]
                frame = pd.DataFrame(x_train, columns=columns)
                frame["duration"] = durations[train]
                frame["event"] = events[train]
                try:
                    model = cox_fitter(penalizer=penalizer).fit(frame, duration_col="duration", event_col="event")
                except convergence_error as err:
                    raise RuntimeError(
                        f"the Cox model on feature set {fs.name!r} did not converge; increase penalizer "
                        f"(now {penalizer}) or lower n_components"
                    ) from err
                risk = model.predict_partial_hazard(pd.DataFrame(x_test, columns=columns)).to_numpy()
            # A higher hazard means a shorter survival, so the risk is negated to score concordance with time.
            scores[fs.name].append(float(concordance_index(durations[test], -risk, events[test])))
    return scores


def cv_roc_auc(
    feature_sets: Sequence[FeatureSet], labels: np.ndarray, *, n_components: int, n_splits: int, seed: int
) -> dict[str, list[float]]:
    """Held-out ROC AUC of an L2 logistic regression per fold, for each feature set (folds stratified on label)."""
    labels = np.asarray(labels, dtype=int)
    scores: dict[str, list[float]] = {fs.name: [] for fs in feature_sets}
    for train, test in stratified_folds(labels, n_splits, seed):
        for fs in feature_sets:
            x_train, x_test = fold_design(fs, train, test, n_components, seed)
            if x_train.shape[1] == 0:
                prob = np.zeros(len(test))
            else:
                model = LogisticRegression(max_iter=1000).fit(x_train, labels[train])
                prob = model.predict_proba(x_test)[:, 1]
            scores[fs.name].append(float(roc_auc_score(labels[test], prob)))
    return scores
