"""Streaming data: the epoch plan, row sources over .h5ad shards, the iterable dataset and its resumable position."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from torch.utils.data import DataLoader

from scfm.data import (
    Block,
    H5adShard,
    StreamingCellDataset,
    batches_per_slot,
    deal_blocks,
    epoch_blocks,
    expand_shard_paths,
    iter_windows,
)
from scfm.genes import GeneVocab
from scfm.models.scgpt import BinningConfig, MaskedValueCollator, SCGPTCellEncoder

GENES = [f"G{i}" for i in range(60)]
UNMEASURED = GENES[50:]  # dataset "b" of every shard did not measure these
# Workers forked from a fresh forkserver, not from this test process: by now the process holds the threads of
# earlier tests (JAX, TileDB, torch), and a fork from it can deadlock in the child.
CLEAN_WORKERS = multiprocessing.get_context("forkserver")
CLEAN_WORKERS.set_forkserver_preload(["scfm.data"])  # imported once by the server, not by every worker
WORKER_TIMEOUT_S = 120  # a stuck worker is an error, not a hung test run


def write_shard(path: Path, n_cells: int, seed: int, *, gene_order: list[str] | None = None) -> ad.AnnData:
    """Counts with a wide spread of depths; datasets ``a`` and ``b``; ``b`` measured no gene of UNMEASURED."""
    rng = np.random.default_rng(seed)
    genes = gene_order or GENES
    depth = np.exp(rng.uniform(np.log(0.05), np.log(3.0), size=n_cells))
    counts = rng.poisson(depth[:, None] * rng.gamma(0.8, 1.0, size=len(genes))[None, :]).astype(np.float32)
    dataset = np.where(np.arange(n_cells) % 3 == 0, "b", "a")
    unmeasured = np.isin(genes, UNMEASURED)
    counts[np.ix_(dataset == "b", unmeasured)] = 0
    counts[counts.sum(1) == 0, 0] = 1
    var = pd.DataFrame({"measured_in:a": True, "measured_in:b": ~unmeasured}, index=genes)
    obs = pd.DataFrame({"dataset": pd.Categorical(dataset)}, index=[f"{path.stem}_{i}" for i in range(n_cells)])
    adata = ad.AnnData(sp.csr_matrix(counts), obs=obs, var=var)
    adata.write_h5ad(path)
    return adata


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("shards")
    paths = [root / f"shard{i}.h5ad" for i in range(3)]
    write_shard(paths[0], 150, 0)
    write_shard(paths[1], 120, 1)
    write_shard(paths[2], 90, 2, gene_order=GENES[::-1])
    return paths


def encoder(n_zero_queries: int = 64) -> SCGPTCellEncoder:
    vocab = GeneVocab(GENES)
    collator = MaskedValueCollator(pad_id=vocab.pad_id, pad_value=-2.0, mask_value=-1.0, n_zero_queries=n_zero_queries)
    return SCGPTCellEncoder(vocab, binning=BinningConfig(n_bins=11, max_len=24), collator=collator, min_genes=10)


def cells_of(batches) -> list[tuple[int, int]]:
    return [(int(s), int(r)) for b in batches for s, r in zip(b["cell_source"], b["cell_row"], strict=True)]


class CountingShard(H5adShard):
    """An H5adShard that records the row ranges it reads."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.reads: list[tuple[int, int]] = []

    def read_rows(self, start: int, stop: int) -> sp.csr_matrix:
        self.reads.append((start, stop))
        return super().read_rows(start, stop)


# -- the plan ------------------------------------------------------------------------------------------------------
def test_epoch_blocks_cover_every_row_once_and_change_with_the_epoch():
    n_obs = [1000, 10, 333]
    blocks = epoch_blocks(n_obs, 64, seed=3, epoch=0)
    for source, n in enumerate(n_obs):
        rows = np.concatenate([np.arange(b.start, b.stop) for b in blocks if b.source == source])
        assert np.array_equal(np.sort(rows), np.arange(n))
    assert blocks == epoch_blocks(n_obs, 64, seed=3, epoch=0)
    assert blocks != epoch_blocks(n_obs, 64, seed=3, epoch=1)


def test_deal_blocks_gives_disjoint_balanced_shares():
    blocks = epoch_blocks([1000, 10, 333], 64, seed=0, epoch=0)
    shares = deal_blocks(blocks, 6)
    dealt = [b for share in shares for b in share]
    assert sorted(dealt, key=lambda b: (b.source, b.start)) == sorted(blocks, key=lambda b: (b.source, b.start))
    sizes = [sum(b.size for b in share) for share in shares]
    assert max(sizes) - min(sizes) <= 64
    assert batches_per_slot(shares, 16) == min(sizes) // 16


def test_windows_use_each_cell_once_carry_the_remainder_and_bucket_by_length():
    share = [Block(0, s, s + 50) for s in range(0, 500, 50)]
    lengths = np.random.default_rng(0).integers(1, 200, size=500)

    def row_lengths(block):
        return lengths[block.start : block.stop]

    def run(bucketing):
        return list(
            iter_windows(
                share,
                row_lengths,
                block_size=50,
                batch_size=16,
                buffer_blocks=3,
                bucketing=bucketing,
                seed=0,
                epoch=0,
                slot=0,
            )
        )

    bucketed, shuffled = run(True), run(False)
    for windows in (bucketed, shuffled):
        keys = np.concatenate([k for w in windows for k in w.batches])
        assert len(keys) == len(set(keys.tolist())) == (500 // 16) * 16
        assert all(len(w.leftover) < 16 for w in windows)

    def padding(windows):
        rows = [lengths[k // 50 * 50 + k % 50] for w in windows for k in w.batches]
        return sum(r.max() * len(r) - r.sum() for r in rows) / sum(r.sum() for r in rows)

    assert padding(bucketed) < 0.5 * padding(shuffled)
    assert [k.tolist() for w in run(True) for k in w.batches] == [k.tolist() for w in bucketed for k in w.batches]


# -- sources ---------------------------------------------------------------------------------------------------------
def test_h5ad_shard_reads_row_ranges_and_datasets(shards):
    adata = ad.read_h5ad(shards[0])
    shard = H5adShard(str(shards[0]))
    assert shard.n_obs == 150
    assert (shard.read_rows(17, 63) != adata.X[17:63]).nnz == 0
    assert np.array_equal(shard.row_nnz(0, 150), np.diff(adata.X.indptr))
    assert list(shard.datasets(0, 6)) == list(adata.obs["dataset"].astype(str)[:6])
    assert shard.dataset_names() == ["a", "b"]
    assert list(shard.var.index) == GENES


def test_h5ad_shard_errors(tmp_path, shards):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        H5adShard(str(tmp_path / "missing.h5ad"))
    dense = ad.read_h5ad(shards[0])
    dense.X = dense.X.toarray()
    dense.write_h5ad(tmp_path / "dense.h5ad")
    with pytest.raises(ValueError, match="CSR"):
        H5adShard(str(tmp_path / "dense.h5ad"))
    with pytest.raises(FileNotFoundError, match="no shard file matches"):
        expand_shard_paths([str(tmp_path / "nothing_*.h5ad")])
    assert expand_shard_paths([str(shards[0].parent / "shard*.h5ad")]) == [str(p) for p in shards]


# -- the dataset -----------------------------------------------------------------------------------------------------
def test_ranks_and_workers_read_disjoint_cells(shards):
    sources = [H5adShard(str(p)) for p in shards]
    seen = []
    for rank in range(2):
        dataset = StreamingCellDataset(
            sources, encoder(), batch_size=8, block_size=32, buffer_blocks=2, rank=rank, world_size=2, num_workers=2
        )
        loader = DataLoader(
            dataset, batch_size=None, num_workers=2, multiprocessing_context=CLEAN_WORKERS, timeout=WORKER_TIMEOUT_S
        )
        batches = list(loader)
        assert len(batches) == len(dataset)
        seen.append(cells_of(batches))
    assert not set(seen[0]) & set(seen[1])
    everything = seen[0] + seen[1]
    assert len(everything) == len(set(everything))
    assert len(everything) >= 360 - 4 * 32 - 4 * 8  # at most one block and one batch per reader left out


def test_batches_are_deterministic(shards):
    sources = [H5adShard(str(p)) for p in shards]

    def run():
        dataset = StreamingCellDataset(sources, encoder(), batch_size=8, block_size=32, buffer_blocks=2, seed=5)
        return list(dataset)

    first, second = run(), run()
    for a, b in zip(first, second, strict=True):
        for key in a:
            assert torch.equal(a[key], b[key])


def test_zero_targets_skip_genes_the_dataset_did_not_measure(shards):
    sources = [H5adShard(str(p)) for p in shards]
    vocab = GeneVocab(GENES)
    unmeasured_ids = {vocab[g] for g in UNMEASURED}
    datasets = {i: np.asarray(s.datasets(0, s.n_obs)) for i, s in enumerate(sources)}
    matrices = [s.read_rows(0, s.n_obs) for s in sources]
    checked = truncated = 0
    for batch in StreamingCellDataset(sources, encoder(), batch_size=8, block_size=32):
        for row, (source, cell) in enumerate(zip(batch["cell_source"], batch["cell_row"], strict=True)):
            zero_ids = set(batch["query_gene_ids"][row][batch["query_values"][row] == 0].tolist()) - {vocab.pad_id}
            counts = matrices[int(source)][int(cell)]
            expressed = {vocab[sources[int(source)].var.index[j]] for j in counts.indices[counts.data > 0]}
            assert not zero_ids & expressed  # also for cells cut to max_len: their unsampled genes are not zeros
            truncated += len(expressed) > 23
            if datasets[int(source)][int(cell)] == "b":
                assert not zero_ids & unmeasured_ids
                checked += 1
            else:
                assert zero_ids  # dataset a measured every gene, so unexpressed genes are zero targets
    assert checked > 50 and truncated > 50


def test_skipping_batches_reads_nothing_twice_and_continues_exactly(shards):
    settings = {"batch_size": 8, "block_size": 16, "buffer_blocks": 2, "seed": 1}
    full = list(StreamingCellDataset([H5adShard(str(p)) for p in shards], encoder(), **settings))
    sources = [CountingShard(str(p)) for p in shards]
    resumed = list(StreamingCellDataset(sources, encoder(), skip_batches=13, **settings))
    assert len(resumed) == len(full) - 13
    for a, b in zip(full[13:], resumed, strict=True):
        for key in a:
            assert torch.equal(a[key], b[key])
    reads = [(i, r) for i, s in enumerate(sources) for r in s.reads]
    assert len(reads) == len(set(reads))
    trained = set(cells_of(resumed))
    for source, (start, stop) in reads:  # a block is read only for cells still to train on
        assert any((source, row) in trained for row in range(start, stop))
    assert sum(stop - start for _, (start, stop) in reads) < sum(s.n_obs for s in sources)


def test_dataset_errors(shards):
    sources = [H5adShard(str(p)) for p in shards]
    with pytest.raises(ValueError, match="cannot fill one batch"):
        StreamingCellDataset(sources, encoder(), batch_size=200, block_size=32, world_size=2)
    with pytest.raises(ValueError, match="outside world_size"):
        StreamingCellDataset(sources, encoder(), batch_size=8, rank=2, world_size=2)
    few = SCGPTCellEncoder(
        GeneVocab([*GENES[:5], "X1"]),
        binning=BinningConfig(n_bins=11, max_len=24),
        collator=MaskedValueCollator(pad_id=0, pad_value=-2.0, mask_value=-1.0),
        min_genes=10,
    )
    with pytest.raises(ValueError, match="shard0"):
        few.prepare(sources)


def test_memory_holds_one_window_plus_the_carried_cells(shards):
    sources = [CountingShard(str(p)) for p in shards]
    settings = {"batch_size": 8, "block_size": 16, "buffer_blocks": 2}
    bound = settings["buffer_blocks"] * settings["block_size"] + settings["batch_size"]
    yielded = 0
    for batch in StreamingCellDataset(sources, encoder(), **settings):
        yielded += len(batch["cell_row"])
        read = sum(stop - start for s in sources for start, stop in s.reads)
        assert read - yielded <= bound
    assert yielded > 300


def test_windows_mix_shards():
    blocks = epoch_blocks([1000, 1000, 1000], 50, seed=0, epoch=0)
    first_window = {block.source for block in deal_blocks(blocks, 2)[0][:8]}
    assert len(first_window) >= 2
