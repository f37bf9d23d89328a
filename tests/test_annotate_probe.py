"""``scfm.tl.annotate(method="probe")``: a logistic regression on the frozen embedding and the reference's genes."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import assert_unchanged, snapshot

import scfm

QUIET = {"progress": False, "device": "cpu"}


@pytest.fixture
def reference_and_query(batched_adata):
    # every other cell: both halves hold both batches and all three planted types
    return batched_adata[::2].copy(), batched_adata[1::2].copy()


def _accuracy(query: ad.AnnData, key: str = "scfm_cell_type") -> float:
    return float((query.obs[key].astype(str) == query.obs["cell_type"].astype(str)).mean())


def test_probe_is_the_default_with_a_reference_and_recovers_planted_types(tiny_checkpoint, reference_and_query):
    reference, query = reference_and_query
    ref_before = snapshot(reference)
    scfm.tl.annotate(query, reference, "cell_type", model=tiny_checkpoint, **QUIET)
    assert _accuracy(query) > 0.9  # chance: 1/3
    record = query.uns["scfm"]["scfm_cell_type"]
    assert record["method"] == "probe" and record["max_epochs"] == 0
    assert record["n_top_genes"] == 2000 and record["genes_used"] == query.n_vars  # "auto": 2,000, capped by the data
    assert record["embedding_dim"] == 32
    factor = record["embedding_weight"] / np.sqrt(query.n_vars / 32)  # chosen by cross-validation on the reference
    assert min(abs(factor - f) for f in (0.0, 0.5, 1.0, 2.0)) < 1e-9
    assert set(record["cross_validated_f1"]) == set(record["cross_validated_f1_se"]) == {"0.0", "0.5", "1.0", "2.0"}
    top = query.obsm["scfm_cell_type_top"]
    np.testing.assert_allclose(top["probability_1"], query.obs["scfm_cell_type_confidence"], rtol=1e-6)
    assert_unchanged(reference, ref_before)


def test_probe_reads_genes_outside_the_vocabulary(tiny_checkpoint, reference_and_query):
    # the vocabulary's genes are shuffled across cells (no signal left in them or in the embedding); the types live
    # only in 30 genes the model does not know, which the probe's gene block must read
    rng = np.random.default_rng(0)
    halves = []
    for half in reference_and_query:
        known = sp.csr_matrix(half.X)[rng.permutation(half.n_obs)]
        codes = half.obs["cell_type"].cat.codes.to_numpy()
        markers = np.zeros((half.n_obs, 30), dtype=np.float32)
        for type_code in range(3):
            rows = codes == type_code
            markers[np.ix_(rows, np.arange(10 * type_code, 10 * type_code + 10))] = rng.poisson(20, (rows.sum(), 10))
        out = ad.AnnData(
            sp.hstack([known, sp.csr_matrix(markers)], format="csr"),
            obs=half.obs[["cell_type"]].copy(),
            var=pd.DataFrame(index=[*half.var_names, *[f"NOTAGENE{i}" for i in range(30)]]),
        )
        halves.append(out)
    reference, query = halves
    scfm.tl.annotate(query, reference, "cell_type", model=tiny_checkpoint, **QUIET)
    assert _accuracy(query) > 0.95
    assert query.uns["scfm"]["scfm_cell_type"]["genes_used"] == reference.n_vars  # 300 known + 30 unknown
    # the embedding alone (k-nearest reference cells) cannot tell the types apart without those genes
    scfm.tl.annotate(query, reference, "cell_type", model=tiny_checkpoint, method="knn", key_added="knn", **QUIET)
    assert _accuracy(query, "knn") < 0.6


def test_probe_does_not_depend_on_batch_size_or_cell_order(tiny_checkpoint, reference_and_query):
    reference, query = reference_and_query
    first, second = query.copy(), query[::-1].copy()
    scfm.tl.annotate(first, reference, "cell_type", model=tiny_checkpoint, batch_size=64, **QUIET)
    scfm.tl.annotate(second, reference[::-1].copy(), "cell_type", model=tiny_checkpoint, batch_size=7, **QUIET)
    a = first.obsm["scfm_cell_type_top"]
    b = second.obsm["scfm_cell_type_top"].loc[a.index]
    assert (a["label_1"] == b["label_1"]).all()
    np.testing.assert_allclose(a["probability_1"], b["probability_1"], atol=1e-5)


def test_probe_n_top_genes(tiny_checkpoint, reference_and_query):
    reference, query = reference_and_query
    scfm.tl.annotate(query, reference, "cell_type", model=tiny_checkpoint, n_top_genes=50, **QUIET)
    assert query.uns["scfm"]["scfm_cell_type"]["genes_used"] == 50
    before = snapshot(query)
    for bad in ("many", 0, 2.5):
        with pytest.raises((ValueError, TypeError), match=r"n_top_genes must be an integer >= 1 or 'auto'"):
            scfm.tl.annotate(query, reference, "cell_type", model=tiny_checkpoint, n_top_genes=bad, **QUIET)
    assert_unchanged(query, before)


def test_probe_bad_input_leaves_the_query_unchanged(tiny_checkpoint, reference_and_query):
    reference, query = reference_and_query
    before = snapshot(query)
    with pytest.raises(ValueError, match="return_model=True needs method='finetune'"):
        scfm.tl.annotate(query, reference, "cell_type", model=tiny_checkpoint, return_model=True, **QUIET)
    with pytest.raises(ValueError, match="share 0 genes"):
        scfm.tl.annotate(
            query[:, :150].copy(), reference[:, 150:].copy(), "cell_type", model=tiny_checkpoint, min_genes=10, **QUIET
        )
    assert_unchanged(query, before)


def test_probe_warns_about_fine_tuning_settings_it_ignores(tiny_checkpoint, reference_and_query):
    reference, query = reference_and_query
    with pytest.warns(UserWarning, match=r"max_epochs, gene_linear only apply to method='finetune'"):
        scfm.tl.annotate(query, reference, "cell_type", model=tiny_checkpoint, max_epochs=5, gene_linear=False, **QUIET)
    assert query.uns["scfm"]["scfm_cell_type"]["method"] == "probe"


def test_the_weight_is_the_smallest_within_one_standard_error_of_the_best():
    from scfm.tl._annotate_probe import _one_standard_error_choice

    noisy_gain = {0.0: np.array([0.70, 0.66, 0.74]), 0.5: np.array([0.72, 0.68, 0.76]), 1.0: np.array([0.69] * 3)}
    assert _one_standard_error_choice(noisy_gain) == 0.0  # +0.02 against a standard error of 0.023
    clear_gain = {0.0: np.array([0.66, 0.67, 0.68]), 0.5: np.array([0.77, 0.78, 0.79]), 1.0: np.array([0.80] * 3)}
    assert _one_standard_error_choice(clear_gain) == 1.0  # 0.5 lies 0.02 below the best, outside its error of 0
    tie = {0.0: np.array([0.8, 0.8]), 0.5: np.array([0.8, 0.8])}
    assert _one_standard_error_choice(tie) == 0.0
