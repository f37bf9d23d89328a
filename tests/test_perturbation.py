"""Perturbation prediction (scGPT perturb-GEP): planted effects, combinations, save/load, baselines, bad input."""

from __future__ import annotations

import anndata as ad
import matplotlib
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import one_thread

import scfm
from scfm.bench import (
    ScreenSummary,
    perturbation_baselines,
    perturbation_benchmark,
    perturbation_metrics,
    summarise_screen,
)
from scfm.models.base import parse_perturbation

matplotlib.use("Agg")

N_GENES = 60
TARGETS = 12
CELLS = 20
CONTROLS = 100
PROGRAMME = slice(40, 50)  # genes every perturbation up-regulates
FAST = {
    "max_epochs": 4,
    "batch_size": 16,
    "lr": 1e-3,
    "cells_per_perturbation": None,
    "control_cells": None,
    "n_control_cells": 40,
    "min_genes": 20,
    "device": "cpu",
    "seed": 0,
}


def make_screen(seed: int = 0, combos: tuple[str, ...] = ()) -> ad.AnnData:
    """Counts of a planted screen: a perturbation knocks out its own (measured) gene(s) and triples a shared programme.

    The first ``TARGETS`` genes are the targets (well expressed in controls); ``combos`` ("A+B") knock out both genes.
    """
    genes = scfm.models.load_pretrained("scgpt").vocab.genes[100 : 100 + N_GENES]
    rng = np.random.default_rng(seed)
    base = rng.uniform(1.0, 4.0, size=N_GENES)
    base[:TARGETS] = 12.0
    labels = ["ctrl"] * CONTROLS
    for target in genes[:TARGETS]:
        labels += [target] * CELLS
    for combo in combos:
        labels += [combo] * CELLS
    means = np.tile(base, (len(labels), 1))
    for i, label in enumerate(labels):
        if label == "ctrl":
            continue
        means[i, PROGRAMME] *= 3.0
        for gene in label.split("+"):
            means[i, genes.index(gene)] = 0.1
    depth = rng.uniform(0.7, 1.3, size=(len(labels), 1))
    counts = rng.poisson(means * depth).astype(np.float32)
    obs = pd.DataFrame({"perturbation": labels}, index=[f"cell{i}" for i in range(len(labels))])
    adata = ad.AnnData(sp.csr_matrix(counts), obs=obs)
    adata.var_names = genes
    return adata


@pytest.fixture(scope="module")
def screen() -> ad.AnnData:
    return make_screen()


@pytest.fixture(scope="module")
def fitted(screen):
    """Fine-tuned on the first 9 targets; the last 3 are held out."""
    genes = list(screen.var_names)
    train, test = genes[:9], genes[9:TARGETS]
    cells = screen[screen.obs["perturbation"].isin([*train, "ctrl"])].copy()
    with one_thread():
        prediction, model = scfm.tl.predict_perturbation(
            cells, test, perturbation_key="perturbation", control="ctrl", return_model=True, **FAST
        )
    return cells, train, test, prediction, model


def test_parse_perturbation():
    assert parse_perturbation("STAT1") == ("STAT1",)
    assert parse_perturbation("IRF1+STAT1") == parse_perturbation("STAT1+IRF1") == ("IRF1", "STAT1")
    for bad in ("STAT1+", "+STAT1", "STAT1++IRF1", "STAT1 IRF1", "STAT1,IRF1", ""):
        with pytest.raises(ValueError, match="cannot read perturbation"):
            parse_perturbation(bad)
    with pytest.raises(ValueError, match="twice"):
        parse_perturbation("STAT1+STAT1")
    with pytest.raises(TypeError):
        parse_perturbation(3)


def test_held_out_perturbations_beat_the_training_mean(screen, fitted):
    _, train, test, prediction, _ = fitted
    assert list(prediction.obs_names) == test
    assert not prediction.obs["seen_in_training"].any()
    assert prediction.layers["change"].shape == (3, N_GENES)
    summary = summarise_screen(screen, "perturbation", "ctrl", genes=list(prediction.var_names), n_de=10)
    baselines = perturbation_baselines(summary, train, test)
    scfm_change = pd.DataFrame(prediction.layers["change"], index=test, columns=prediction.var_names)
    table = perturbation_benchmark(summary, {"scfm": scfm_change, **baselines}, train, test)
    means = table.groupby("method")[["mse_de", "pearson_de_centred", "sign_de"]].mean()
    # the held-out gene is knocked out: only a model that reads the flag on that gene can predict it
    assert means.loc["scfm", "mse_de"] < 0.5 * means.loc["training mean", "mse_de"]
    assert means.loc["scfm", "pearson_de_centred"] > 0.6
    assert means.loc["training mean", "pearson_de_centred"] == 0.0
    for i, gene in enumerate(test):
        own = list(prediction.var_names).index(gene)
        assert prediction.layers["change"][i, own] < -1.0
        assert prediction.layers["change"][i, PROGRAMME].mean() > 0.3
    record = prediction.uns["scfm"]["predict_perturbation"]
    assert record["finetune_perturbations_trained"] == 9 and record["finetune_seconds_per_epoch"] > 0


def test_combinations_flag_every_gene(fitted):
    cells, _, test, _, model = fitted
    combo = f"{test[0]}+{test[1]}"
    prediction = scfm.tl.predict_perturbation(
        cells, [combo, test[0]], model=model, perturbation_key="perturbation", control="ctrl", n_control_cells=40
    )
    assert list(prediction.obs["n_genes"]) == [2, 1]
    genes = list(prediction.var_names)
    change = prediction.layers["change"]
    assert change[0, genes.index(test[0])] < -1.0 and change[0, genes.index(test[1])] < -1.0
    assert change[1, genes.index(test[1])] > change[0, genes.index(test[1])] + 0.5


def test_combinations_in_training_labels_and_additive_baseline():
    genes = make_screen().var_names
    combo = f"{genes[0]}+{genes[1]}"
    screen = make_screen(combos=(combo,))
    summary = summarise_screen(screen, "perturbation", "ctrl", n_de=5)
    assert combo in summary.means
    train = [genes[0], genes[1], genes[2]]
    baselines = perturbation_baselines(summary, train, [combo, genes[3]])
    additive = baselines["additive"]
    np.testing.assert_allclose(additive.loc[combo], summary.change(genes[0]) + summary.change(genes[1]))
    assert additive.loc[genes[3]].isna().all()
    with one_thread():
        prediction = scfm.tl.predict_perturbation(
            screen, [genes[3]], perturbation_key="perturbation", control="ctrl", **{**FAST, "max_epochs": 1}
        )
    record = prediction.uns["scfm"]["predict_perturbation"]
    assert record["finetune_perturbations_trained"] == TARGETS + 1


def test_save_and_load_give_the_same_predictions(fitted, tmp_path):
    cells, _, test, prediction, model = fitted
    path = model.save(tmp_path / "pert")
    assert (path / "perturbation.json").is_file()
    again = scfm.tl.predict_perturbation(
        cells, test, model=str(path), perturbation_key="perturbation", control="ctrl", n_control_cells=40
    )
    np.testing.assert_allclose(again.X, prediction.X, rtol=1e-5, atol=1e-5)
    loaded = scfm.models.scgpt.SCGPTPerturbation.load(path)
    assert loaded.perturbations == model.perturbations
    # the saved base weights are an ordinary scGPT checkpoint
    assert scfm.models.load_pretrained(path).family == "scgpt"
    (path / "perturbation.safetensors").write_bytes(b"broken")
    with pytest.raises(scfm.models.CheckpointError, match="perturbation"):
        scfm.models.scgpt.SCGPTPerturbation.load(path)


def test_prediction_is_deterministic(fitted):
    cells, _, test, prediction, model = fitted
    again = scfm.tl.predict_perturbation(
        cells, test, model=model, perturbation_key="perturbation", control="ctrl", n_control_cells=40
    )
    np.testing.assert_array_equal(again.X, prediction.X)


def test_metrics():
    observed = np.array([2.0, -1.0, 0.5, 0.0])
    de = np.array([0, 1, 2])
    reference = np.array([0.5, 0.5, 0.5, 0.5])
    perfect = perturbation_metrics(observed, observed, de, reference)
    assert perfect["pearson_de"] == pytest.approx(1.0) and perfect["mse_de"] == 0 and perfect["sign_de"] == 1
    mean_only = perturbation_metrics(reference, observed, de, reference)
    assert mean_only["pearson_de_centred"] == 0.0 and mean_only["pearson_de"] == 0.0
    flipped = perturbation_metrics(-observed, observed, de, reference)
    assert flipped["sign_de"] == 0 and flipped["pearson_de"] == pytest.approx(-1.0)


def test_linear_baseline_recovers_a_planted_linear_structure():
    """Changes bilinear in (readout-gene, perturbed-gene) embeddings are predicted for unseen targets."""
    readout = [f"G{i}" for i in range(30)]
    targets = [f"T{i}" for i in range(10)]
    g = np.zeros((30, 2))
    g[:10, 0], g[10:20, 1] = 1.0, 1.0
    p = np.array([[1.0, 0.0] if i % 2 == 0 else [0.0, 1.0] for i in range(10)]) * np.linspace(1, 2, 10)[:, None]
    changes = g @ np.array([[2.0, 0.0], [0.0, -1.0]]) @ p.T  # genes x targets
    control = np.full(30, 1.0)
    means = {t: control + changes[:, i] for i, t in enumerate(targets)}
    de = {t: np.argsort(-np.abs(changes[:, i]))[:10] for i, t in enumerate(targets)}
    halves = {t: (changes[:, i], changes[:, i]) for i, t in enumerate(targets)}
    summary = ScreenSummary(readout, control, means, de, halves)
    embedding = pd.DataFrame(np.vstack([g, p]), index=readout + targets)
    train, test = targets[:8], targets[8:]
    frames = perturbation_baselines(summary, train, test, gene_embeddings=embedding, ridge=1e-6)
    table = perturbation_benchmark(summary, frames, train, test).groupby("method")["pearson_all_centred"].mean()
    assert table["linear (model gene embeddings)"] > 0.9
    assert table["training mean"] == 0.0
    assert frames["linear (model gene embeddings)"].attrs["fallback"] == 0
    # the PCA embedding has rows for readout genes only: unmeasured targets fall back to the training mean
    assert frames["linear (PCA)"].attrs["fallback"] == 2
    np.testing.assert_allclose(frames["linear (PCA)"].to_numpy(), frames["training mean"].to_numpy())


def test_plot(screen, fitted):
    _, _, test, prediction, _ = fitted
    fig = scfm.pl.perturbation(prediction, screen, test[0], perturbation_key="perturbation", control="ctrl")
    assert len(fig.axes) == 1
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert test[0] in labels and len(labels) == 20
    with pytest.raises(KeyError, match="not a row"):
        scfm.pl.perturbation(prediction, screen, "NOPE", perturbation_key="perturbation", control="ctrl")


# -- bad input: clear errors, the AnnData untouched ------------------------------------------------------------------
def _snapshot(adata):
    return adata.obs.copy(), dict(adata.uns), adata.X.copy()


def _unchanged(adata, snapshot):
    obs, uns, x = snapshot
    pd.testing.assert_frame_equal(adata.obs, obs)
    assert dict(adata.uns) == uns
    assert (adata.X != x).nnz == 0


@pytest.mark.parametrize(
    ("change", "kwargs", "error", "match"),
    [
        (None, {"perturbation_key": "guide"}, KeyError, "perturbation_key='guide' is not a column"),
        (None, {"control": "NT"}, ValueError, "control label 'NT'"),
        ("no_controls", {}, ValueError, "control label 'ctrl'"),
        (
            None,
            {"perturbations": ["NOTAGENE1"]},
            ValueError,
            "NOTAGENE1 \\(not in the data either\\).*not in the model's vocabulary",
        ),
        (None, {"perturbations": ["A+"]}, ValueError, "cannot read perturbation"),
        (None, {"perturbations": ["A, B"]}, ValueError, "cannot read perturbation"),
        (None, {"min_cells": 50}, ValueError, "fewer than min_cells=50"),
        ("log", {}, ValueError, "raw counts"),
        ("bad_label", {}, ValueError, "not a perturbation"),
    ],
)
def test_bad_input(screen, change, kwargs, error, match):
    adata = screen.copy()
    if change == "no_controls":
        adata = adata[adata.obs["perturbation"] != "ctrl"].copy()
    elif change == "log":
        adata.X = adata.X.copy()
        adata.X.data = np.log1p(adata.X.data)
    elif change == "bad_label":
        adata.obs["perturbation"] = adata.obs["perturbation"].astype(str)
        adata.obs.iloc[-1, 0] = "two genes"
    arguments = {"perturbation_key": "perturbation", "control": "ctrl", **FAST, "max_epochs": 1}
    perturbations = kwargs.pop("perturbations", [str(adata.var_names[0])])
    arguments.update(kwargs)
    snapshot = _snapshot(adata)
    with pytest.raises(error, match=match):
        scfm.tl.predict_perturbation(adata, perturbations, **arguments)
    _unchanged(adata, snapshot)


def test_too_few_cells_to_score(screen):
    small = screen[screen.obs["perturbation"].isin(["ctrl", screen.var_names[0]])][:103].copy()
    with pytest.raises(ValueError, match="at least 4"):
        summarise_screen(small, "perturbation", "ctrl")


def test_setup_anndata_registers_the_perturbation_column(screen):
    adata = screen.copy()
    before = set(adata.obs.columns)
    with pytest.raises(KeyError, match="perturbation_key='guide'"):
        scfm.models.SCGPT.setup_anndata(adata, perturbation_key="guide", control="ctrl")
    with pytest.raises(ValueError, match="control label 'NT'"):
        scfm.models.SCGPT.setup_anndata(adata, perturbation_key="perturbation", control="NT")
    with pytest.raises(ValueError, match="needs control="):
        scfm.models.SCGPT.setup_anndata(adata, perturbation_key="perturbation")
    assert set(adata.obs.columns) == before
    model = scfm.models.SCGPT.from_pretrained(
        "default", adata, min_genes=20, perturbation_key="perturbation", control="ctrl"
    )
    assert model.adata_manager.registry["setup_args"]["perturbation_key"] == "perturbation"
    with one_thread():
        finetuned = model.finetune_perturbation(
            max_epochs=1, batch_size=16, lr=1e-3, cells_per_perturbation=5, control_cells=20, device="cpu"
        )
    assert len(finetuned.perturbations) == TARGETS
    prediction = scfm.tl.predict_perturbation(
        adata, [str(adata.var_names[0])], model=finetuned, perturbation_key="perturbation", control="ctrl"
    )
    assert prediction.obs["seen_in_training"].all()
    plain = scfm.models.SCGPT.from_pretrained("default", screen.copy(), min_genes=20)
    with pytest.raises(ValueError, match="no perturbation column"):
        plain.finetune_perturbation()
