"""``scfm.tl.associate``: whether per-sample features carry survival or mutation information, beside expression PCA.

The Cox model comes from lifelines rather than scikit-survival: lifelines is pure Python (pandas, scipy, autograd,
formulaic), so it installs on any platform and does not pin scikit-learn to a narrow range, while
scikit-survival ships compiled extensions and each release pins scikit-learn, which conflicts with the
scanpy/scib-metrics stack. It is imported lazily (``eval`` extra). Model fitting lives in
:mod:`scfm.tl._survival` (cross-validated Cox and logistic models); this module validates the input and writes
the results.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from pandas.api.types import is_bool_dtype, is_numeric_dtype

from scfm._validation import checked_arguments

from ._provenance import check_result_key, write_provenance
from ._survival import FeatureSet, cv_concordance, cv_roc_auc, import_lifelines

MIN_SURVIVAL_SAMPLES = 20
COLUMNS = ["outcome", "metric", "feature_set", "mean", "std", "n_samples", "n_events"]
_TRUE = {"1", "true", "yes"}
_FALSE = {"0", "false", "no"}


@checked_arguments
def associate(
    adata: AnnData,
    features_key: str,
    *,
    duration_key: str | None = None,
    event_key: str | None = None,
    binary_keys: Sequence[str] = (),
    covariate_keys: Sequence[str] = (),
    layer: str | None = None,
    n_components: int = 10,
    n_splits: int = 5,
    penalizer: float = 0.1,
    seed: int = 0,
    key_added: str = "scfm_associate",
) -> pd.DataFrame:
    """Cross-validated association of per-sample features with survival and binary covariates, beside expression PCA.

    Each feature set goes through the same pipeline inside every fold, fitted on the training fold only:
    standardise -> PCA to ``n_components`` (at most the number of columns and training samples - 1) -> model.
    A 128-d embedding and thousands of genes are thus compared at the same model size. All feature sets of an
    outcome share the same folds and the same samples.

    - Survival (``duration_key`` and ``event_key``): penalised Cox regression (lifelines ``CoxPHFitter``),
      K-fold stratified on the event, Harrell's C-index on each held-out fold.
    - Each of ``binary_keys``: L2 logistic regression (``max_iter=1000``), K-fold stratified on the label,
      ROC AUC on each held-out fold.

    Feature sets: ``"features"`` (``obsm[features_key]``) and ``"expression_pca"`` (the baseline: ``adata.X`` or
    ``layer``, with ``log1p`` first when it looks like counts, i.e. non-negative integers with max > 50). With
    ``covariate_keys``, survival also gets ``"clinical"`` (covariates alone) and ``"features+clinical"`` (the
    fold-PCA of the features next to the clinical design). The expression matrix is densified: this is meant for
    bulk data (hundreds of samples), not for cells.

    Parameters
    ----------
    adata
        Samples x genes. Only ``uns["scfm"][key_added]`` is written; on error nothing is.
    features_key
        Key of ``adata.obsm`` with an n_obs x d finite float matrix (e.g. ``"X_scfm_bulk"`` from
        ``scfm.tl.bulk_features``).
    duration_key, event_key
        ``adata.obs`` columns with the survival (or follow-up) time, numeric and non-negative, and the event
        indicator (0/1 or bool; 1 = event, 0 = censored). Give both or neither. Samples with either missing are
        left out of the survival analysis (counted in ``params``).
    binary_keys
        ``adata.obs`` columns with a binary covariate each (e.g. a mutation flag): exactly two distinct values,
        ``{0, 1}``, ``{False, True}``, ``{"No", "Yes"}``, ``{"false", "true"}`` or ``{"0", "1"}`` (case-insensitive);
        the positive class is 1/True/Yes. Missing values (NaN or the string ``"nan"``) are left out for that key.
    covariate_keys
        ``adata.obs`` clinical covariates for the survival analysis. Numeric columns are standardised (on the
        training fold); other columns are one-hot encoded with the first level (sorted) dropped, missing values
        forming a level ``"missing"``. Samples with a missing numeric covariate are left out of every survival
        feature set.
    layer
        ``adata.layers`` key of the expression matrix for the baseline; ``None`` uses ``adata.X``.
    n_components
        PCA components per feature set (the same for all).
    n_splits
        Number of cross-validation folds.
    penalizer
        L2 penalty of the Cox model (lifelines' ``penalizer``).
    seed
        Seed of the fold shuffling and of the PCA solver.
    key_added
        Key of the results in ``adata.uns["scfm"]``, where every scfm tool records what it did.

    Returns
    -------
    One row per outcome and feature set, with columns ``outcome`` (``"survival"`` or the binary key), ``metric``
    (``"c_index"`` or ``"roc_auc"``), ``feature_set``, ``mean`` and ``std`` (population std) over the folds,
    ``n_samples`` and ``n_events`` (events for survival, positives for a binary key). The same table is written to
    ``adata.uns["scfm"][key_added]["results"]`` as a dict of column lists (``pd.DataFrame(...)`` rebuilds it), the
    score of each fold to ``["folds"]``, the arguments and sample counts to ``["params"]`` (arguments not given,
    ``None``, are left out) and the scfm version to ``["scfm_version"]``, all h5ad-writable.
    """
    check_result_key(adata, key_added)
    binary_keys = [binary_keys] if isinstance(binary_keys, str) else list(binary_keys)
    covariate_keys = [covariate_keys] if isinstance(covariate_keys, str) else list(covariate_keys)
    survival = _check_arguments(duration_key, event_key, binary_keys, n_components, n_splits, penalizer)
    if covariate_keys and not survival:
        raise ValueError("covariate_keys are used by the survival analysis only; pass duration_key and event_key")
    if survival:
        import_lifelines()
    features = _features(adata, features_key)
    expression, log1p = _expression(adata, layer)
    params = {
        "features_key": features_key,
        "duration_key": duration_key,
        "event_key": event_key,
        "binary_keys": binary_keys,
        "covariate_keys": covariate_keys,
        "layer": layer,
        "n_components": int(n_components),
        "n_splits": int(n_splits),
        "penalizer": float(penalizer),
        "seed": int(seed),
        "expression_log1p": log1p,
        "n_missing_survival": None,
        "n_missing_covariates": None,
    }
    tasks = []
    if survival:
        durations, events, missing = _survival(adata.obs, duration_key, event_key)
        design, scale, rows = _clinical(adata.obs, covariate_keys, ~missing)
        params["n_missing_survival"] = int(missing.sum())
        params["n_missing_covariates"] = int((~missing).sum() - rows.sum())
        n, n_events = int(rows.sum()), int(events[rows].sum())
        if n < MIN_SURVIVAL_SAMPLES or n_events < n_splits:
            raise ValueError(
                f"survival needs at least {MIN_SURVIVAL_SAMPLES} samples and n_splits={n_splits} events after "
                f"dropping samples with missing duration/event ({params['n_missing_survival']}) or numeric "
                f"covariates ({params['n_missing_covariates']}); {n} samples with {n_events} events remain"
            )
        sets = [FeatureSet("features", reduce=features[rows]), FeatureSet("expression_pca", reduce=expression[rows])]
        if covariate_keys:
            sets.append(FeatureSet("clinical", fixed=design, scale=scale))
            sets.append(FeatureSet("features+clinical", reduce=features[rows], fixed=design, scale=scale))
        tasks.append(("survival", "c_index", sets, (durations[rows], events[rows]), n, n_events))
    params["n_missing_binary"] = {}
    for key in binary_keys:
        labels, missing = _binary(adata.obs, key, n_splits)
        params["n_missing_binary"][key] = int(missing.sum())
        sets = [
            FeatureSet("features", reduce=features[~missing]),
            FeatureSet("expression_pca", reduce=expression[~missing]),
        ]
        tasks.append((key, "roc_auc", sets, labels[~missing], int((~missing).sum()), int(labels[~missing].sum())))

    records, folds = [], {"outcome": [], "feature_set": [], "fold": [], "score": []}
    for outcome, metric, sets, target, n, n_events in tasks:
        common = {"n_components": n_components, "n_splits": n_splits, "seed": seed}
        if metric == "c_index":
            scores = cv_concordance(sets, *target, penalizer=penalizer, **common)
        else:
            scores = cv_roc_auc(sets, target, **common)
        for name, fold_scores in scores.items():
            values = np.asarray(fold_scores)
            records.append([outcome, metric, name, float(values.mean()), float(values.std()), n, n_events])
            for i, value in enumerate(fold_scores):
                folds["outcome"].append(outcome)
                folds["feature_set"].append(name)
                folds["fold"].append(i)
                folds["score"].append(float(value))
    table = pd.DataFrame(records, columns=COLUMNS)
    results = {col: [_plain(v) for v in table[col]] for col in COLUMNS}
    write_provenance(adata, key_added, {"results": results, "folds": folds, "params": params})
    return table


def _plain(value):
    """Convert a numpy scalar to the Python scalar (h5ad- and JSON-friendly)."""
    return value.item() if isinstance(value, np.generic) else value


def _check_arguments(duration_key, event_key, binary_keys, n_components, n_splits, penalizer) -> bool:
    if (duration_key is None) != (event_key is None):
        given, other = ("duration_key", "event_key") if event_key is None else ("event_key", "duration_key")
        raise ValueError(f"{given} is given but {other} is not; survival needs both (or pass neither)")
    survival = duration_key is not None
    if not survival and not binary_keys:
        raise ValueError("nothing to test: pass duration_key and event_key (survival) and/or binary_keys")
    if not isinstance(n_components, numbers.Integral) or n_components < 1:
        raise ValueError(f"n_components must be an integer >= 1, got {n_components!r}")
    if not isinstance(n_splits, numbers.Integral) or n_splits < 2:
        raise ValueError(f"n_splits must be an integer >= 2, got {n_splits!r}")
    if not penalizer >= 0:
        raise ValueError(f"penalizer must be >= 0, got {penalizer!r}")
    return survival


def _features(adata: AnnData, key: str) -> np.ndarray:
    if key not in adata.obsm:
        raise KeyError(
            f"features_key={key!r} is not in adata.obsm (keys: {list(adata.obsm.keys())}); "
            "scfm.tl.bulk_features writes per-sample features to adata.obsm['X_scfm_bulk']"
        )
    value = adata.obsm[key]
    value = value.toarray() if sp.issparse(value) else value.to_numpy() if isinstance(value, pd.DataFrame) else value
    value = np.asarray(value)
    if value.ndim != 2 or value.shape[0] != adata.n_obs:
        raise ValueError(f"adata.obsm[{key!r}] has shape {value.shape}; expected (n_obs={adata.n_obs}, d)")
    if not is_numeric_dtype(value.dtype) or value.dtype == bool:
        raise ValueError(f"adata.obsm[{key!r}] has dtype {value.dtype}; expected floats")
    value = value.astype(np.float64)
    if not np.isfinite(value).all():
        bad = int((~np.isfinite(value)).any(axis=1).sum())
        raise ValueError(
            f"adata.obsm[{key!r}] has NaN or infinite values in {bad} samples; recompute the features or subset "
            "adata to samples with finite features"
        )
    return value


def _expression(adata: AnnData, layer: str | None) -> tuple[np.ndarray, bool]:
    """Return the dense expression matrix for the PCA baseline (log1p of counts) and whether log1p was applied."""
    if layer is not None and layer not in adata.layers:
        raise KeyError(f"layer={layer!r} is not in adata.layers (layers: {list(adata.layers.keys())})")
    where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    if adata.isbacked and layer is None:
        raise ValueError("the expression baseline needs adata.X in memory; load it with adata.to_memory()")
    matrix = adata.X if layer is None else adata.layers[layer]
    if matrix is None:
        raise ValueError(f"{where} is empty; the expression PCA baseline needs a matrix (pass layer=...)")
    matrix = matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)
    if not is_numeric_dtype(matrix.dtype):
        raise ValueError(f"{where} has dtype {matrix.dtype}; expected numbers")
    matrix = matrix.astype(np.float64)
    if not np.isfinite(matrix).all():
        raise ValueError(f"{where} has NaN or infinite values; the expression baseline needs finite values")
    counts = matrix.size > 0 and matrix.min() >= 0 and matrix.max() > 50 and bool(np.all(matrix == np.round(matrix)))
    return (np.log1p(matrix) if counts else matrix), bool(counts)


def _obs_column(obs: pd.DataFrame, key: str, argument: str) -> pd.Series:
    if key not in obs.columns:
        raise KeyError(f"{argument}={key!r} is not a column of adata.obs (columns: {list(obs.columns)})")
    return obs[key]


def _survival(obs: pd.DataFrame, duration_key: str, event_key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Durations, events (0/1 floats) and the mask of samples with either missing."""
    duration = _obs_column(obs, duration_key, "duration_key")
    event = _obs_column(obs, event_key, "event_key")
    for key, column in ((duration_key, duration), (event_key, event)):
        numeric = is_numeric_dtype(column.dtype) and (key == event_key or not is_bool_dtype(column.dtype))
        if not numeric:
            kind = "durations must be numbers" if key == duration_key else "events must be 0/1 or bool"
            raise ValueError(
                f"adata.obs[{key!r}] has dtype {column.dtype}; {kind} (a categorical of numbers is not numeric): "
                f"convert it with adata.obs[{key!r}] = pd.to_numeric(adata.obs[{key!r}], errors='coerce')"
            )
    durations = duration.to_numpy(dtype=np.float64, na_value=np.nan)
    events = event.to_numpy(dtype=np.float64, na_value=np.nan)
    missing = np.isnan(durations) | np.isnan(events)
    if np.isinf(durations[~missing]).any():
        raise ValueError(f"adata.obs[{duration_key!r}] has infinite durations; use finite follow-up times")
    if (durations[~missing] < 0).any():
        n_bad = int((durations[~missing] < 0).sum())
        raise ValueError(f"adata.obs[{duration_key!r}] has {n_bad} negative durations; durations must be >= 0")
    bad = sorted(set(np.unique(events[~missing]).tolist()) - {0.0, 1.0})
    if bad:
        raise ValueError(
            f"adata.obs[{event_key!r}] has values {bad[:5]} besides 0/1; events must be 0/1 or bool "
            "(1 = event observed, 0 = censored)"
        )
    return durations, events, missing


def _clinical(obs: pd.DataFrame, keys: list[str], keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the clinical design, which of its columns to standardise, and the mask of samples used.

    The design covers the samples used (numeric columns, then one-hot with drop-first); the mask is ``keep`` without
    the samples that have a missing numeric covariate.
    """
    columns = [_obs_column(obs, key, "covariate_keys") for key in keys]
    numeric = [is_numeric_dtype(c.dtype) and not is_bool_dtype(c.dtype) for c in columns]
    rows = keep.copy()
    for column, is_number in zip(columns, numeric, strict=True):
        if is_number:
            rows &= np.isfinite(column.to_numpy(dtype=np.float64, na_value=np.nan))
    blocks, scale = [np.zeros((int(rows.sum()), 0))], []
    for column, is_number in zip(columns, numeric, strict=True):
        if is_number:
            blocks.append(column.to_numpy(dtype=np.float64, na_value=np.nan)[rows][:, None])
            scale.append(True)
        else:
            levels = column[rows].astype(object).where(column[rows].notna(), "missing").astype(str)
            dummies = pd.get_dummies(levels, drop_first=True, dtype=np.float64).to_numpy()
            blocks.append(dummies)
            scale.extend([False] * dummies.shape[1])
    if keys and not scale:
        raise ValueError(f"covariate_keys={keys} carry no information (each column has a single value)")
    return np.hstack(blocks), np.asarray(scale, dtype=bool), rows


def _truth(value) -> bool | None:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, numbers.Number):
        return {0: False, 1: True}.get(value)
    text = str(value).strip().lower()
    return True if text in _TRUE else False if text in _FALSE else None


def _binary(obs: pd.DataFrame, key: str, n_splits: int) -> tuple[np.ndarray, np.ndarray]:
    """0/1 labels (1 = positive class) and the mask of missing values of one binary covariate."""
    column = _obs_column(obs, key, "binary_keys")
    missing = (column.isna() | (column.astype(str).str.strip().str.lower() == "nan")).to_numpy()
    present = column[~missing].astype(object)
    distinct = list(pd.unique(present))
    truth = {v: _truth(v) for v in distinct}
    if len(distinct) != 2 or set(truth.values()) != {False, True}:
        raise ValueError(
            f"adata.obs[{key!r}] has values {distinct[:10]}; a binary covariate needs exactly two values, "
            "{0, 1}, {False, True} or {'No', 'Yes'}: pass a boolean column, e.g. "
            f"adata.obs[{key!r}] = adata.obs[{key!r}] == 'mutant'"
        )
    labels = np.zeros(len(column), dtype=np.int64)
    labels[~missing] = [truth[v] for v in present]
    minority = min(int(labels[~missing].sum()), int((labels[~missing] == 0).sum()))
    if minority < n_splits:
        raise ValueError(
            f"adata.obs[{key!r}] has only {minority} samples in its smaller class; n_splits={n_splits} folds need "
            "at least one per fold (lower n_splits or drop this key)"
        )
    return labels, missing
