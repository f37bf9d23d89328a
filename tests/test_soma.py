"""SomaExperimentSource: a TileDB-SOMA experiment (CELLxGENE Census layout) as a streaming row source."""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

soma = pytest.importorskip("tiledbsoma")
import pyarrow as pa  # noqa: E402
import tiledbsoma.io  # noqa: E402

from scfm.data import H5adShard, SomaExperimentSource, StreamingCellDataset, measured_masks  # noqa: E402
from scfm.data import _soma as soma_module  # noqa: E402
from scfm.genes import GeneVocab  # noqa: E402
from scfm.models.scgpt import BinningConfig, MaskedValueCollator, SCGPTCellEncoder  # noqa: E402

N_OBS, N_VARS = 300, 120
DATASETS = ("d1", "d2", "d3")
D2_MEASURED = 100  # d2 measured genes 0..99 only
D3_UNMEASURED = slice(50, 70)


def measured_table() -> dict[str, np.ndarray]:
    d3 = np.ones(N_VARS, dtype=bool)
    d3[D3_UNMEASURED] = False
    return {"d1": np.ones(N_VARS, dtype=bool), "d2": np.arange(N_VARS) < D2_MEASURED, "d3": d3}


def make_adata(*, nnz_column: bool = False, seed: int = 0) -> ad.AnnData:
    """Integer counts (CSR); datasets in runs of joinids (d1 twice), unmeasured genes zero in their dataset."""
    rng = np.random.default_rng(seed)
    dataset = np.array(["d1"] * 100 + ["d2"] * 100 + ["d1"] * 50 + ["d3"] * 50)
    depth = rng.uniform(0.05, 1.5, size=N_OBS)
    counts = rng.poisson(depth[:, None] * rng.gamma(0.5, 1.0, size=N_VARS)[None, :]).astype(np.float32)
    for name, mask in measured_table().items():
        counts[np.ix_(dataset == name, ~mask)] = 0
    matrix = sp.csr_matrix(counts)
    obs = pd.DataFrame(
        {"dataset_id": pd.Categorical(dataset), "quality": rng.uniform(size=N_OBS)},
        index=[f"cell{i}" for i in range(N_OBS)],
    )
    if nnz_column:
        obs["nnz"] = np.diff(matrix.indptr).astype(np.int64)
    var = pd.DataFrame(
        {"feature_name": [f"G{i}" for i in range(N_VARS)]}, index=[f"ENSG{i:05d}" for i in range(N_VARS)]
    )
    for name, mask in measured_table().items():
        var[f"measured_in:{name}"] = mask
    return ad.AnnData(matrix, obs=obs, var=var)


def write_experiment(uri: Path, adata: ad.AnnData) -> str:
    tiledbsoma.io.from_anndata(str(uri), adata, measurement_name="RNA", X_layer_name="raw")
    return str(uri)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("soma")
    adata = make_adata()
    with_nnz = make_adata(nnz_column=True)
    h5ad = root / "cells.h5ad"
    adata.write_h5ad(h5ad)
    return {
        "adata": adata,
        "uri": write_experiment(root / "plain", adata),
        "nnz_uri": write_experiment(root / "with_nnz", with_nnz),
        "h5ad": str(h5ad),
        "root": root,
    }


def dense(matrix: sp.spmatrix) -> np.ndarray:
    return np.asarray(matrix.todense())


def check_rows(source: SomaExperimentSource, adata: ad.AnnData, ranges: list[tuple[int, int]]) -> None:
    expected = adata.X.tocsr()
    for start, stop in ranges:
        rows = source.read_rows(start, stop)
        assert isinstance(rows, sp.csr_matrix)
        assert rows.dtype == np.float32 and rows.shape == (stop - start, N_VARS)
        np.testing.assert_array_equal(dense(rows), dense(expected[start:stop]))
        np.testing.assert_array_equal(source.row_nnz(start, stop), np.diff(expected[start:stop].indptr))
        assert source.row_nnz(start, stop).dtype == np.int64
        datasets = source.datasets(start, stop)
        assert datasets.dtype == object
        np.testing.assert_array_equal(datasets, adata.obs["dataset_id"].astype(str).to_numpy()[start:stop])


def test_reads_rows_like_the_anndata(corpus):
    adata = corpus["adata"]
    source = SomaExperimentSource(corpus["uri"])
    assert source.n_obs == N_OBS and source.name == "plain"
    assert list(source.var.index) == list(adata.var["feature_name"])
    for name, mask in measured_table().items():
        np.testing.assert_array_equal(source.var[f"measured_in:{name}"].to_numpy(), mask)
    assert source.dataset_names() == list(DATASETS)
    check_rows(source, adata, [(0, N_OBS), (17, 93), (95, 105), (299, 300), (0, 1)])
    assert source.read_rows(5, 5).shape == (0, N_VARS)
    with pytest.raises(IndexError):
        source.read_rows(290, 301)
    masks = measured_masks(source.var, source.dataset_names())
    np.testing.assert_array_equal(masks["d2"], measured_table()["d2"])
    source.close()


@pytest.mark.parametrize(
    "value_filter",
    ["dataset_id == 'd1'", "dataset_id != 'd2'", "quality > 0.5", "dataset_id == 'd3' and quality < 0.7"],
)
def test_obs_value_filter_selects_rows_in_joinid_order(corpus, value_filter):
    adata = corpus["adata"]
    selected = adata.obs.eval(value_filter).to_numpy()
    subset = adata[selected].copy()
    source = SomaExperimentSource(corpus["uri"], obs_value_filter=value_filter)
    assert source.n_obs == int(selected.sum())
    assert source.dataset_names() == sorted(set(subset.obs["dataset_id"].astype(str)))
    n = source.n_obs
    check_rows(source, subset, [(0, n), (0, min(7, n)), (n // 3, n - 2), (n - 1, n)])


def test_row_nnz_from_the_obs_column_or_one_counting_pass(corpus, monkeypatch):
    expected = np.diff(corpus["adata"].X.tocsr().indptr)

    def no_pass(self):
        raise AssertionError("counted X although obs has an nnz column")

    with monkeypatch.context() as patch:
        patch.setattr(SomaExperimentSource, "_count_nnz", no_pass)
        source = SomaExperimentSource(corpus["nnz_uri"])
        np.testing.assert_array_equal(source.row_nnz(0, N_OBS), expected)
        np.testing.assert_array_equal(source.row_nnz(40, 60), expected[40:60])

    monkeypatch.setattr(soma_module, "_COUNT_ROWS", 7)  # several reads, one ending inside a run break
    counted = SomaExperimentSource(corpus["nnz_uri"], nnz_key=None)
    np.testing.assert_array_equal(counted.row_nnz(0, N_OBS), expected)
    filtered = SomaExperimentSource(corpus["uri"], obs_value_filter="quality > 0.3")
    keep = corpus["adata"].obs["quality"].to_numpy() > 0.3
    np.testing.assert_array_equal(filtered.row_nnz(0, filtered.n_obs), expected[keep])


def test_pickled_source_reopens_and_reads(corpus):
    adata = corpus["adata"]
    source = SomaExperimentSource(corpus["uri"], obs_value_filter="dataset_id != 'd2'")
    first = source.read_rows(90, 130)
    clone = pickle.loads(pickle.dumps(source))
    assert clone._experiment is None
    np.testing.assert_array_equal(dense(clone.read_rows(90, 130)), dense(first))
    np.testing.assert_array_equal(clone.datasets(0, clone.n_obs), source.datasets(0, source.n_obs))
    clone._pid = -2  # as after a fork: the handle belongs to another process
    np.testing.assert_array_equal(dense(clone.read_rows(90, 130)), dense(first))
    source.close()
    np.testing.assert_array_equal(dense(source.read_rows(0, 3)), dense(adata.X[:3]))


def test_no_dataset_column_means_one_dataset(corpus):
    source = SomaExperimentSource(corpus["uri"], dataset_key="batch", name="corpus")
    assert source.dataset_names() == ["corpus"]
    assert list(source.datasets(3, 6)) == ["corpus"] * 3


def stream(source, encoder) -> list[dict]:
    dataset = StreamingCellDataset([source], encoder, batch_size=16, block_size=32, buffer_blocks=2, seed=3)
    return list(dataset)


def make_encoder(vocab: GeneVocab, *, gene_key: str | None = None) -> SCGPTCellEncoder:
    collator = MaskedValueCollator(pad_id=vocab.pad_id, pad_value=-2.0, mask_value=-1.0, n_zero_queries=8)
    binning = BinningConfig(n_bins=11, max_len=24, seed=0)
    return SCGPTCellEncoder(vocab, binning=binning, collator=collator, gene_key=gene_key, min_genes=20)


def test_streams_the_same_batches_as_an_h5ad_shard(corpus):
    adata = corpus["adata"]
    genes = [f"G{i}" for i in range(110)] + ["NOT_IN_DATA"]  # G110..G119 are outside the vocabulary
    vocab = GeneVocab(genes)
    source = SomaExperimentSource(corpus["uri"])
    batches = stream(source, make_encoder(vocab))
    shard = H5adShard(corpus["h5ad"], dataset_key="dataset_id")
    reference = stream(shard, make_encoder(vocab, gene_key="feature_name"))
    assert len(batches) == len(reference) > 0
    for batch, expected in zip(batches, reference, strict=True):
        for key in ("gene_ids", "values", "target_values", "masked", "query_gene_ids", "query_values", "cell_row"):
            assert torch.equal(batch[key], expected[key]), key

    counts = adata.X.tocsr()
    dataset = adata.obs["dataset_id"].astype(str).to_numpy()
    measured = {
        name: {vocab[g] for g, m in zip(adata.var["feature_name"], mask, strict=True) if m and g in genes}
        for name, mask in measured_table().items()
    }
    seen: set[int] = set()
    zero_targets = {name: 0 for name in DATASETS}
    for batch in batches:
        for i, row in enumerate(batch["cell_row"].tolist()):
            assert row not in seen
            seen.add(row)
            expressed = {vocab[f"G{j}"] for j in counts[row].indices if j < 110}
            ids = batch["gene_ids"][i]
            tokens = set(ids[ids != vocab.pad_id].tolist()[1:])
            assert tokens <= expressed and len(tokens) == min(len(expressed), 23)
            query_ids, query_values = batch["query_gene_ids"][i], batch["query_values"][i]
            zeros = set(query_ids[(query_values == 0) & (query_ids != vocab.pad_id)].tolist())
            assert zeros <= measured[dataset[row]]
            assert not zeros & expressed  # genes left out by max_len subsampling are still expressed
            zero_targets[dataset[row]] += len(zeros)
    assert len(seen) == len(batches) * 16 and len(seen) > N_OBS // 2
    assert all(count > 0 for count in zero_targets.values())


# Run in a fresh interpreter: by the time this test runs, the test process holds the threads of earlier tests (JAX,
# torch), and forking it can deadlock for reasons that have nothing to do with the SOMA source.
FORKED_WORKERS = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[2])
    from torch.utils.data import DataLoader
    from scfm.data import SomaExperimentSource, StreamingCellDataset
    from scfm.genes import GeneVocab
    from test_soma import N_VARS, make_encoder

    source = SomaExperimentSource(sys.argv[1])
    before = source.read_rows(0, 8).toarray()  # the parent holds open handles that the workers inherit
    vocab = GeneVocab([f"G{i}" for i in range(N_VARS)])
    dataset = StreamingCellDataset(
        [source], make_encoder(vocab), batch_size=16, block_size=32, buffer_blocks=2, num_workers=2
    )
    loader = DataLoader(dataset, batch_size=None, num_workers=2, multiprocessing_context="fork", timeout=60)
    rows = [row for batch in loader for row in batch["cell_row"].tolist()]
    after = source.read_rows(0, 8).toarray()
    print(json.dumps({"rows": rows, "batches": len(dataset), "before": before.tolist(), "after": after.tolist()}))
    """
)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_forked_dataloader_workers_reopen_the_experiment(corpus):
    done = subprocess.run(
        [sys.executable, "-c", FORKED_WORKERS, corpus["uri"], str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    rows = result["rows"]
    assert len(rows) == len(set(rows)) == result["batches"] * 16
    np.testing.assert_array_equal(result["before"], dense(corpus["adata"].X[:8]))
    np.testing.assert_array_equal(result["after"], result["before"])


def write_census(root: Path, adata: ad.AnnData) -> str:
    """A local tree shaped like CELLxGENE Census: census_info/datasets and census_data/<organism> with presence."""
    table = pd.DataFrame({"soma_joinid": np.arange(4, dtype=np.int64), "dataset_id": ["d3", "other", "d1", "d2"]})
    with soma.Collection.create(str(root)) as census:
        info = census.add_new_collection("census_info")
        schema = pa.schema([("soma_joinid", pa.int64()), ("dataset_id", pa.large_string())])
        datasets = info.add_new_dataframe(
            "datasets", schema=schema, index_column_names=["soma_joinid"], domain=[(0, 3)]
        )
        datasets.write(pa.Table.from_pandas(table, schema=schema, preserve_index=False))
        data = census.add_new_collection("census_data")
        uri = write_experiment(root / "census_data" / "homo_sapiens", adata)
        with soma.Experiment.open(uri) as experiment:
            data.set("homo_sapiens", experiment, use_relative_uri=True)
    rows = {name: int(np.flatnonzero(table["dataset_id"] == name)[0]) for name in [*DATASETS, "other"]}
    dim0, dim1 = [], []
    for name, mask in measured_table().items():
        dim1.append(np.flatnonzero(mask))
        dim0.append(np.full(int(mask.sum()), rows[name]))
    dim1.append(np.arange(10))  # a dataset the cells do not come from
    dim0.append(np.full(10, rows["other"]))
    with soma.Experiment.open(uri, "w") as experiment:
        presence = experiment.ms["RNA"].add_new_sparse_ndarray(
            soma_module.PRESENCE_MATRIX, type=pa.uint8(), shape=(len(table), N_VARS)
        )
        values = np.concatenate(dim0)
        presence.write(
            pa.Table.from_pydict(
                {
                    "soma_dim_0": pa.array(values, type=pa.int64()),
                    "soma_dim_1": pa.array(np.concatenate(dim1), type=pa.int64()),
                    "soma_data": pa.array(np.ones(len(values)), type=pa.uint8()),
                }
            )
        )
    return uri


def test_census_presence_matrix_gives_the_gene_masks(corpus, tmp_path):
    adata = make_adata(nnz_column=True)
    for name in DATASETS:  # stale var columns: the presence matrix replaces them
        adata.var[f"measured_in:{name}"] = True
    uri = write_census(tmp_path / "census", adata)
    source = SomaExperimentSource(uri)
    assert source.name == "homo_sapiens"
    columns = sorted(c for c in source.var.columns if c.startswith("measured_in:"))
    assert columns == [f"measured_in:{name}" for name in DATASETS]
    masks = measured_masks(source.var, source.dataset_names())
    for name, mask in measured_table().items():
        np.testing.assert_array_equal(masks[name], mask)

    only_d2 = SomaExperimentSource(uri, obs_value_filter="dataset_id == 'd2'")
    assert [c for c in only_d2.var.columns if c.startswith("measured_in:")] == ["measured_in:d2"]
    explicit = SomaExperimentSource(uri, datasets_uri=str(tmp_path / "census" / "census_info" / "datasets"))
    np.testing.assert_array_equal(explicit.var["measured_in:d3"], measured_table()["d3"])

    with pytest.raises(FileNotFoundError, match="datasets_uri"):
        SomaExperimentSource(uri, datasets_uri=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="census_data"):
        SomaExperimentSource(tmp_path / "census")


def test_clear_errors(corpus, tmp_path):
    uri = corpus["uri"]
    with pytest.raises(FileNotFoundError, match="no TileDB-SOMA experiment"):
        SomaExperimentSource(tmp_path / "missing")
    with pytest.raises(ValueError, match="not a SOMA Experiment"):
        SomaExperimentSource(f"{uri}/obs")
    with pytest.raises(KeyError, match=r"no measurement 'ATAC'.*\['RNA'\]"):
        SomaExperimentSource(uri, measurement="ATAC")
    with pytest.raises(KeyError, match=r"no X layer 'counts'.*\['raw'\]"):
        SomaExperimentSource(uri, layer="counts")
    with pytest.raises(ValueError, match="selects no cells"):
        SomaExperimentSource(uri, obs_value_filter="dataset_id == 'd9'")
    with pytest.raises(ValueError, match="obs_value_filter"):
        SomaExperimentSource(uri, obs_value_filter="tissue == 'lung'")
    with pytest.raises(KeyError, match=r"no column 'gene_symbols'.*feature_name"):
        SomaExperimentSource(uri, var_gene_column="gene_symbols")


def test_missing_tiledbsoma_is_an_import_error_only_when_used(corpus, monkeypatch):
    monkeypatch.setitem(sys.modules, "tiledbsoma", None)
    spec = importlib.util.spec_from_file_location("scfm.data._soma_without_tiledbsoma", soma_module.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # importing the module does not need tiledbsoma
    with pytest.raises(ImportError, match=r"pip install 'scfm-models\[soma\]'"):
        module.SomaExperimentSource(corpus["uri"])


def test_pretrain_reads_a_soma_experiment_next_to_h5ad_shards(corpus, tmp_path):
    from scfm.train import pretrain

    recipe = {
        "output": str(tmp_path / "run"),
        "data": {
            "shards": [corpus["h5ad"]],
            "dataset_key": "dataset_id",
            "soma": {"uri": corpus["uri"], "var_gene_column": "feature_name", "name": "soma_cells"},
            "gene_key": "feature_name",
            "batch_size": 16,
            "block_size": 32,
            "min_genes": 10,
        },
        "model": {"max_len": 24, "architecture": {"d_model": 16, "n_heads": 2, "n_layers": 1, "d_hidden": 32}},
        "trainer": {"max_steps": 6, "accelerator": "cpu", "devices": 1, "progress_bar": False},
        "trace_cells": True,
    }
    result = pretrain(recipe)
    assert result.global_step == 6
    traced = pd.read_csv(tmp_path / "run" / "trace" / "rank0.csv")
    assert set(traced["source"]) == {"cells", "soma_cells"} and not traced.duplicated(["source", "row"]).any()
    assert (result.export / "model.safetensors").is_file()
