"""Streaming training data: an iterable dataset over row sources and the Lightning DataModule around it.

Memory stays bounded by one window (``buffer_blocks * block_size`` cells) plus the cells it carries into the next,
whatever the corpus size: rows are read block by block, encoded, and dropped once their batch is yielded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp
import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ._shards import RowSource
from ._stream_plan import Block, batches_per_slot, deal_blocks, epoch_blocks, iter_windows


class CellEncoder(Protocol):
    """Turns rows of a source into per-cell training items and items into a model's batch dict."""

    def prepare(self, sources: Sequence[RowSource]) -> None:
        """Validate the sources against the model (gene overlap, gene masks); called once per process."""

    def encode(self, source_index: int, rows: sp.csr_matrix, start: int) -> list[Any]:
        """Items for ``rows`` (rows ``start:start + n`` of source ``source_index``)."""

    def collate(self, items: Sequence[Any], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Collate ``items`` into a batch; every random choice draws from ``generator``."""

    def pad_id(self) -> int:
        """Token id of padding in ``batch['gene_ids']`` (tokens per second count the others)."""


def batch_seed(seed: int, epoch: int, slot: int, batch: int) -> int:
    """Seed of a batch's random choices (masks): a function of its place in the plan, not of the process."""
    return int(np.random.SeedSequence([seed, epoch, 2, slot, batch]).generate_state(1, np.uint64)[0] >> 1)


class StreamingCellDataset(IterableDataset):
    """Batches of cells streamed from row sources, each rank and worker reading a disjoint share.

    Parameters
    ----------
    sources
        Row sources (e.g. :class:`~scfm.data.H5adShard`), opened lazily in every process.
    encoder
        Family-specific :class:`CellEncoder`.
    batch_size
        Cells per batch.
    block_size
        Rows read at a time (the unit dealt to ranks and workers).
    buffer_blocks
        Blocks per shuffling window (the memory bound).
    bucketing
        Order each window's cells by length before cutting batches (less padding).
    max_len
        Longest token sequence; length estimates are clipped to it.
    seed, epoch
        The plan's randomness.
    rank, world_size
        This process's DDP rank and the number of ranks.
    num_workers
        DataLoader workers per rank (``0`` reads in the main process).
    skip_batches
        Batches of this epoch the rank already trained on (resuming): they are neither read nor yielded.
    """

    def __init__(
        self,
        sources: Sequence[RowSource],
        encoder: CellEncoder,
        *,
        batch_size: int,
        block_size: int = 512,
        buffer_blocks: int = 8,
        bucketing: bool = True,
        max_len: int = 1_000_000,
        seed: int = 0,
        epoch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        skip_batches: int = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        self.sources = list(sources)
        self.encoder = encoder
        self.batch_size, self.block_size, self.buffer_blocks = batch_size, block_size, buffer_blocks
        self.bucketing, self.max_len, self.seed, self.epoch = bucketing, max_len, seed, epoch
        self.rank, self.world_size, self.num_workers = rank, world_size, num_workers
        self.skip_batches = skip_batches
        self.n_slots = world_size * max(num_workers, 1)
        self.batches_per_slot = batches_per_slot(self.shares(), batch_size)
        if self.batches_per_slot == 0:
            n_cells = sum(source.n_obs for source in self.sources)
            raise ValueError(
                f"{n_cells} cells cannot fill one batch of {batch_size} for each of {self.n_slots} readers "
                f"({world_size} ranks x {max(num_workers, 1)} workers); lower batch_size, block_size or num_workers"
            )

    def shares(self) -> list[list[Block]]:
        """Every slot's blocks in this epoch (slot = ``rank * workers + worker``)."""
        blocks = epoch_blocks([s.n_obs for s in self.sources], self.block_size, self.seed, self.epoch)
        return deal_blocks(blocks, self.n_slots)

    def __len__(self) -> int:
        """Batches of the whole epoch on this rank, skipped ones included (Lightning counts on from the skip)."""
        return self.batches_per_slot * max(self.num_workers, 1)

    def _worker(self) -> tuple[int, int]:
        info = get_worker_info()
        if info is None:
            return 0, 1
        if info.num_workers != max(self.num_workers, 1):
            raise RuntimeError(
                f"the dataset was planned for {self.num_workers} workers but runs in {info.num_workers}; "
                "pass the same num_workers to the DataLoader"
            )
        return info.id, info.num_workers

    def __iter__(self):
        worker, n_workers = self._worker()
        slot = self.rank * n_workers + worker
        share = self.shares()[slot]
        skip = max(0, (self.skip_batches - worker + n_workers - 1) // n_workers)
        self.encoder.prepare(self.sources)
        items: dict[int, Any] = {}
        loaded: set[int] = set()
        produced = 0
        windows = iter_windows(
            share,
            lambda block: np.minimum(self.sources[block.source].row_nnz(block.start, block.stop), self.max_len),
            block_size=self.block_size,
            batch_size=self.batch_size,
            buffer_blocks=self.buffer_blocks,
            bucketing=self.bucketing,
            seed=self.seed,
            epoch=self.epoch,
            slot=slot,
        )
        for window in windows:
            if produced + len(window.batches) <= skip:
                produced += len(window.batches)
                for keys in window.batches:
                    for key in keys:
                        items.pop(int(key), None)
                continue
            start = max(skip - produced, 0)
            wanted = {int(k) for keys in window.batches[start:] for k in keys} | {int(k) for k in window.leftover}
            for keys in window.batches:
                if produced >= self.batches_per_slot:
                    return
                if produced < skip:
                    for key in keys:
                        items.pop(int(key), None)
                else:
                    self._load(share, keys, items, loaded, wanted)
                    yield self._collate(share, keys, [items.pop(int(k)) for k in keys], slot, produced)
                produced += 1
            if produced >= self.batches_per_slot:
                return

    def _load(self, share: list[Block], keys: np.ndarray, items: dict, loaded: set[int], wanted: set[int]) -> None:
        for position in np.unique(keys // self.block_size).tolist():
            if position in loaded:
                continue
            block = share[position]
            source = self.sources[block.source]
            rows = source.read_rows(block.start, block.stop)
            try:
                encoded = self.encoder.encode(block.source, rows, block.start)
            except ValueError as err:
                raise ValueError(f"rows {block.start}:{block.stop} of {source.name!r}: {err}") from err
            base = position * self.block_size
            for offset, item in enumerate(encoded):
                if base + offset in wanted:
                    items[base + offset] = item
            loaded.add(position)

    def _collate(self, share: list[Block], keys: np.ndarray, items: list, slot: int, number: int) -> dict:
        generator = torch.Generator().manual_seed(batch_seed(self.seed, self.epoch, slot, number))
        batch = self.encoder.collate(items, generator)
        blocks = [share[int(k) // self.block_size] for k in keys]
        batch["cell_source"] = torch.tensor([b.source for b in blocks], dtype=torch.long)
        batch["cell_row"] = torch.tensor(
            [b.start + int(k) % self.block_size for b, k in zip(blocks, keys, strict=True)], dtype=torch.long
        )
        return batch


class StreamingDataModule(LightningDataModule):
    """A :class:`StreamingCellDataset` per epoch and rank; its state is the position within the epoch.

    ``plan_settings`` are the :class:`StreamingCellDataset` settings (``batch_size``, ``block_size``,
    ``buffer_blocks``, ``bucketing``, ``max_len``, ``seed``); rank, world size and epoch come from the trainer.
    Use it with ``Trainer(reload_dataloaders_every_n_epochs=1)`` so that every epoch gets its own plan. The
    state saved in a checkpoint (epoch, batches done, plan settings) lets a resumed run skip exactly the batches
    already trained on; resuming with settings that change the plan is refused.
    """

    def __init__(
        self, sources: Sequence[RowSource], encoder: CellEncoder, *, num_workers: int = 0, **plan_settings: Any
    ) -> None:
        super().__init__()
        self.sources = list(sources)
        self.encoder = encoder
        self.settings = plan_settings
        StreamingCellDataset(self.sources, encoder, num_workers=num_workers, **plan_settings)  # fail early
        self.num_workers = num_workers
        self._resume: dict | None = None

    def _placement(self) -> tuple[int, int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1, 0
        return trainer.global_rank, trainer.world_size, trainer.current_epoch

    def dataset(self) -> StreamingCellDataset:
        rank, world_size, epoch = self._placement()
        skip = 0
        if self._resume is not None and self._resume["epoch"] == epoch:
            skip = self._resume["batches_done"]
        return StreamingCellDataset(
            self.sources,
            self.encoder,
            **self.settings,
            epoch=epoch,
            rank=rank,
            world_size=world_size,
            num_workers=self.num_workers,
            skip_batches=skip,
        )

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset(), batch_size=None, num_workers=self.num_workers)

    def plan_signature(self) -> dict:
        """Everything that fixes the plan: a checkpoint can only resume under the same signature."""
        _, world_size, _ = self._placement()
        return {
            **self.settings,
            "world_size": world_size,
            "num_workers": self.num_workers,
            "sources": [[source.name, source.n_obs] for source in self.sources],
        }

    def state_dict(self) -> dict:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return {}
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return {"epoch": trainer.current_epoch, "batches_done": int(done), "plan": self.plan_signature()}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        current = self.plan_signature()
        changed = {k: (state["plan"].get(k), v) for k, v in current.items() if state["plan"].get(k) != v}
        if changed:
            details = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
            raise ValueError(
                f"cannot resume: the checkpoint's data plan differs from this run ({details}); resume with the same "
                "data, batch and process settings, or start a new run"
            )
        self._resume = {"epoch": int(state["epoch"]), "batches_done": int(state["batches_done"])}
