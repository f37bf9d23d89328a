"""``scfm.tl.associate`` on synthetic bulk data with planted (or no) survival and binary signal; no model needed."""

from __future__ import annotations

import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

pytest.importorskip("lifelines")

from lifelines import CoxPHFitter
from lifelines.utils import concordance_index
from sklearn.decomposition import PCA
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

import scfm

N = 300
D = 16


def make_bulk(seed: int = 0, signal: bool = True, n: int = N) -> ad.AnnData:
    """Samples x genes counts independent of everything, and 16-d low-rank features in ``obsm["X_emb"]``.

    With ``signal``, the hazard is ``exp(1.5 * feature 0)`` (standardised) and ``obs["flag"]`` depends on
    feature 1; without, survival and flag are independent of the features. Exponential event times, independent
    exponential censoring (~30%).
    """
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 4))
    features = latent @ rng.normal(size=(4, D)) + 0.3 * rng.normal(size=(n, D))
    z = (features - features.mean(0)) / features.std(0)
    log_hazard = 1.5 * z[:, 0] if signal else np.zeros(n)
    event_time = rng.exponential(1.0 / np.exp(log_hazard))
    censor_time = rng.exponential(1.0 / (0.45 if signal else 0.43), size=n)
    flag = (z[:, 1] + 0.5 * rng.normal(size=n) > 0.3) if signal else rng.random(n) < 0.4
    counts = rng.poisson(rng.gamma(2.0, 20.0, size=200), size=(n, 200)).astype(np.float32)
    adata = ad.AnnData(
        sp.csr_matrix(counts),
        obs=pd.DataFrame(
            {
                "time": np.minimum(event_time, censor_time),
                "event": (event_time <= censor_time).astype(int),
                "flag": flag,
            },
            index=[f"s{i}" for i in range(n)],
        ),
        var=pd.DataFrame(index=[f"g{j}" for j in range(200)]),
    )
    adata.obsm["X_emb"] = features.astype(np.float32)
    return adata


@pytest.fixture(scope="module")
def planted() -> tuple[ad.AnnData, pd.DataFrame]:
    adata = make_bulk()
    table = scfm.tl.associate(adata, "X_emb", duration_key="time", event_key="event", binary_keys=["flag"])
    return adata, table


def _row(table: pd.DataFrame, outcome: str, feature_set: str) -> pd.Series:
    rows = table[(table["outcome"] == outcome) & (table["feature_set"] == feature_set)]
    assert len(rows) == 1
    return rows.iloc[0]


def test_planted_survival_signal(planted):
    adata, table = planted
    assert list(table.columns) == ["outcome", "metric", "feature_set", "mean", "std", "n_samples", "n_events"]
    assert 0.2 < 1 - adata.obs["event"].mean() < 0.4  # ~30% censored
    features = _row(table, "survival", "features")
    expression = _row(table, "survival", "expression_pca")
    assert features["metric"] == "c_index"
    assert features["mean"] > 0.65
    assert abs(expression["mean"] - 0.5) < 0.1
    assert features["n_samples"] == N and features["n_events"] == adata.obs["event"].sum()


def test_fold_scores_match_an_independent_recomputation(planted):
    """The per-fold C-indices are those of the advertised pipeline, and the table holds their mean and std."""
    adata, table = planted
    x = adata.obsm["X_emb"].astype(np.float64)
    t = adata.obs["time"].to_numpy()
    e = adata.obs["event"].to_numpy()
    expected = []
    for train, test in StratifiedKFold(5, shuffle=True, random_state=0).split(x, e):
        scaler = StandardScaler().fit(x[train])
        pca = PCA(10, random_state=0).fit(scaler.transform(x[train]))
        cols = [f"c{i}" for i in range(10)]
        frame = pd.DataFrame(pca.transform(scaler.transform(x[train])), columns=cols).assign(t=t[train], e=e[train])
        cox = CoxPHFitter(penalizer=0.1).fit(frame, duration_col="t", event_col="e")
        risk = cox.predict_partial_hazard(pd.DataFrame(pca.transform(scaler.transform(x[test])), columns=cols))
        expected.append(concordance_index(t[test], -risk.to_numpy(), e[test]))
    folds = pd.DataFrame(adata.uns["scfm"]["scfm_associate"]["folds"])
    got = folds[(folds["outcome"] == "survival") & (folds["feature_set"] == "features")]["score"].to_numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert np.std(expected) > 0.005  # the folds differ, so the mean check below is not trivial
    row = _row(table, "survival", "features")
    assert row["mean"] == pytest.approx(np.mean(expected), abs=1e-6)
    assert row["std"] == pytest.approx(np.std(expected), abs=1e-6)


def test_planted_binary_signal(planted):
    adata, table = planted
    features = _row(table, "flag", "features")
    assert features["metric"] == "roc_auc"
    assert features["mean"] > 0.75
    assert abs(_row(table, "flag", "expression_pca")["mean"] - 0.5) < 0.12
    assert features["n_events"] == adata.obs["flag"].sum()


def test_no_signal():
    adata = make_bulk(seed=1, signal=False)
    table = scfm.tl.associate(adata, "X_emb", duration_key="time", event_key="event", binary_keys="flag")
    assert abs(_row(table, "survival", "features")["mean"] - 0.5) < 0.08
    assert abs(_row(table, "flag", "features")["mean"] - 0.5) < 0.1


def test_clinical_covariates():
    rng = np.random.default_rng(2)
    adata = make_bulk(seed=2, signal=False)
    stage = rng.integers(0, 3, size=N)
    event_time = rng.exponential(1.0 / np.exp(1.2 * stage))
    censor_time = rng.exponential(2.0, size=N)
    adata.obs["time"] = np.minimum(event_time, censor_time)
    adata.obs["event"] = event_time <= censor_time  # bool events
    labels = np.array(["I", "II", "III"], dtype=object)[stage]
    labels[:10] = None  # missing category: its own level
    adata.obs["stage"] = pd.Categorical(labels)
    adata.obs["age"] = rng.normal(60, 10, size=N)
    adata.obs.iloc[:7, adata.obs.columns.get_loc("age")] = np.nan  # samples dropped from every survival row
    table = scfm.tl.associate(
        adata, "X_emb", duration_key="time", event_key="event", covariate_keys=["stage", "age"], n_components=5
    )
    survival = table[table["outcome"] == "survival"]
    assert list(survival["feature_set"]) == ["features", "expression_pca", "clinical", "features+clinical"]
    assert (survival["n_samples"] == N - 7).all()
    assert survival["n_events"].nunique() == 1
    assert _row(table, "survival", "clinical")["mean"] > 0.6
    assert _row(table, "survival", "features+clinical")["mean"] > 0.6
    assert adata.uns["scfm"]["scfm_associate"]["params"]["n_missing_covariates"] == 7


def test_deterministic_and_writes_only_uns(tmp_path):
    adata = make_bulk(seed=3, n=120)
    before = adata.copy()
    first = scfm.tl.associate(adata, "X_emb", duration_key="time", event_key="event", binary_keys=["flag"])
    second = scfm.tl.associate(adata, "X_emb", duration_key="time", event_key="event", binary_keys=["flag"])
    pd.testing.assert_frame_equal(first, second)
    assert list(adata.uns) == ["scfm"] and list(adata.uns["scfm"]) == ["scfm_associate"]
    assert "layer" not in adata.uns["scfm"]["scfm_associate"]["params"]  # None (not given) is left out
    pd.testing.assert_frame_equal(adata.obs, before.obs)
    assert (adata.X != before.X).nnz == 0
    np.testing.assert_array_equal(adata.obsm["X_emb"], before.obsm["X_emb"])

    adata.write_h5ad(tmp_path / "bulk.h5ad")
    back = ad.read_h5ad(tmp_path / "bulk.h5ad").uns["scfm"]["scfm_associate"]
    pd.testing.assert_frame_equal(pd.DataFrame(back["results"])[first.columns], first, check_dtype=False)
    params = back["params"]
    assert params["features_key"] == "X_emb" and params["n_splits"] == 5 and params["expression_log1p"]
    assert list(params["binary_keys"]) == ["flag"] and params["n_missing_binary"]["flag"] == 0


def test_missing_binary_values_are_dropped_and_counted():
    adata = make_bulk(seed=4, n=120)
    flag = np.where(adata.obs["flag"], "Yes", "no").astype(object)
    flag[:5] = np.nan
    flag[5:8] = "nan"
    adata.obs["flag"] = flag
    table = scfm.tl.associate(adata, "X_emb", binary_keys=["flag"])
    assert set(table["outcome"]) == {"flag"}
    assert (table["n_samples"] == 112).all()
    assert adata.uns["scfm"]["scfm_associate"]["params"]["n_missing_binary"] == {"flag": 8}


def _set_obs(key: str, make):
    """A change that replaces ``adata.obs[key]`` by ``make(adata)``."""

    def change(adata: ad.AnnData) -> None:
        adata.obs[key] = make(adata)

    return change


def _nan_feature(adata: ad.AnnData) -> None:
    adata.obsm["X_emb"][0, 0] = np.nan


def _unchanged(adata: ad.AnnData, columns: list[str]) -> None:
    assert list(adata.obs.columns) == columns
    assert list(adata.uns) == []


@pytest.mark.parametrize(
    ("change", "kwargs", "error", "match"),
    [
        (None, {"duration_key": "os", "event_key": "event"}, KeyError, r"duration_key='os'.*columns: \['time'"),
        (None, {"duration_key": "time"}, ValueError, "event_key is not"),
        (None, {}, ValueError, "nothing to test"),
        (None, {"binary_keys": ["flag"], "covariate_keys": ["time"]}, ValueError, "survival analysis only"),
        (None, {"binary_keys": ["flag"], "n_splits": 1}, ValueError, "n_splits must be"),
        (None, {"binary_keys": ["flag"], "n_components": 0}, ValueError, "n_components must be"),
        (
            _set_obs("time", lambda a: pd.Categorical(a.obs["time"].round(2).astype(str))),
            {"duration_key": "time", "event_key": "event"},
            ValueError,
            r"dtype category.*pd\.to_numeric",
        ),
        (
            _set_obs("time", lambda a: a.obs["time"] - 1.0),
            {"duration_key": "time", "event_key": "event"},
            ValueError,
            "negative durations",
        ),
        (
            _set_obs("event", lambda a: a.obs["event"] * 2),
            {"duration_key": "time", "event_key": "event"},
            ValueError,
            r"values \[2\.0\] besides 0/1",
        ),
        (
            _set_obs("event", lambda a: np.where(a.obs["event"] == 1, "dead", "alive")),
            {"duration_key": "time", "event_key": "event"},
            ValueError,
            "events must be 0/1 or bool",
        ),
        (
            _set_obs("flag", lambda a: np.where(a.obs["flag"], "mutant", "wt")),
            {"binary_keys": ["flag"]},
            ValueError,
            "pass a boolean column",
        ),
        (
            _set_obs("time", lambda a: np.where(np.arange(a.n_obs) < 105, np.nan, a.obs["time"])),
            {"duration_key": "time", "event_key": "event"},
            ValueError,
            "at least 20 samples",
        ),
        (_nan_feature, {"binary_keys": ["flag"]}, ValueError, "NaN"),
    ],
)
def test_bad_input_leaves_adata_unchanged(change, kwargs, error, match):
    adata = make_bulk(seed=5, n=120)
    if change is not None:
        change(adata)
    columns = list(adata.obs.columns)
    with pytest.raises(error, match=match):
        scfm.tl.associate(adata, "X_emb", **kwargs)
    _unchanged(adata, columns)


def test_missing_obsm_key_lists_keys_and_hints_bulk_features():
    adata = make_bulk(seed=6, n=60)
    with pytest.raises(KeyError, match=r"X_scfm_bulk.*\['X_emb'\]|\['X_emb'\].*X_scfm_bulk"):
        scfm.tl.associate(adata, "X_scfm_bulk", duration_key="time", event_key="event")
    _unchanged(adata, ["time", "event", "flag"])


def test_too_few_in_minority_class():
    adata = make_bulk(seed=7, n=60)
    adata.obs["flag"] = np.arange(60) < 3
    with pytest.raises(ValueError, match="only 3 samples in its smaller class"):
        scfm.tl.associate(adata, "X_emb", binary_keys=["flag"])
    _unchanged(adata, ["time", "event", "flag"])


def test_missing_lifelines_says_how_to_install(monkeypatch):
    adata = make_bulk(seed=8, n=60)
    monkeypatch.setitem(sys.modules, "lifelines", None)
    with pytest.raises(ImportError, match=r"pip install 'scfm-models\[eval\]'"):
        scfm.tl.associate(adata, "X_emb", duration_key="time", event_key="event")
    _unchanged(adata, ["time", "event", "flag"])
    table = scfm.tl.associate(adata, "X_emb", binary_keys=["flag"])  # binary outcomes need no lifelines
    assert set(table["outcome"]) == {"flag"}
