"""Gene-scaled ranking input of pretraining recipes (``data.gene_scaling: corpus_median``, pretrain_default.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "pretrain_default.py"


def _script():
    spec = importlib.util.spec_from_file_location("pretrain_default_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_medians_are_over_nonzero_normalised_values_and_scaling_divides_by_them():
    script = _script()
    counts = np.array([[2.0, 0.0, 8.0], [1.0, 3.0, 6.0], [5.0, 0.0, 5.0]], dtype=np.float32)
    corpus = ad.AnnData(sp.csr_matrix(counts), var=pd.DataFrame(index=["A", "B", "C"]))
    normalised = counts / counts.sum(1, keepdims=True) * 1e4
    expected = np.array([np.median(normalised[:, 0]), normalised[1, 1], np.median(normalised[:, 2])])
    medians = script.gene_nonzero_medians(corpus)
    np.testing.assert_allclose(medians.to_numpy(), expected, rtol=1e-5)
    assert list(medians.index) == ["A", "B", "C"]

    scaled = script.scale_by_gene_median(corpus)
    np.testing.assert_allclose(scaled.X.toarray(), normalised / expected, rtol=1e-5)
    assert scaled.uns["gene_nonzero_median"] == medians.to_dict()


def test_a_gene_never_expressed_keeps_scale_one():
    script = _script()
    corpus = ad.AnnData(sp.csr_matrix(np.array([[1.0, 0.0], [3.0, 0.0]], dtype=np.float32)))
    assert script.gene_nonzero_medians(corpus).iloc[1] == 1.0


def _write_part(path: Path) -> None:
    counts = sp.csr_matrix(np.arange(1, 13, dtype=np.float32).reshape(6, 2))
    obs = pd.DataFrame(
        {
            "dataset": ["a", "a", "a", "b", "b", "c"],
            "tissue": "t",
            "technology": "x",
            "sample": ["s1", "s2", "s2", "s2", "s1", "s1"],
        },
        index=[f"cell{i}" for i in range(6)],
    )
    var = pd.DataFrame(index=["G1", "G2"])
    for name in ("a", "b", "c"):
        var[f"measured_in:{name}"] = True
    ad.AnnData(counts, obs=obs, var=var).write_h5ad(path)


def test_exclude_cells_drops_only_the_named_values_of_the_named_dataset(tmp_path):
    script = _script()
    path = tmp_path / "corpus.h5ad"
    _write_part(path)
    rules = [{"dataset": "a", "column": "sample", "values": ["s2"]}]
    corpus, _ = script.load_corpus([str(path)], ["c"], min_cells=1, exclude_cells=rules)
    assert list(corpus.obs_names) == ["cell0", "cell3", "cell4"]  # a/s2 and dataset c dropped; b/s2 kept
    np.testing.assert_array_equal(corpus[:, ["G1", "G2"]].X.toarray()[0], [1.0, 2.0])
    everything, _ = script.load_corpus([str(path)], [], min_cells=1)
    assert everything.n_obs == 6
