"""Generic map-style training data: length-bucketed batch sampling and a seeded train/validation split."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, Sampler


class BucketBatchSampler(Sampler[list[int]]):
    """Random batches of cells with similar token counts, to avoid padding waste in training.

    Each epoch shuffles the cells (torch's global RNG), sorts windows of ``window`` batches by length,
    cuts them into batches and shuffles the batch order. With ``groups`` (one integer per cell), every batch holds
    cells of one group only (e.g. one dataset); the groups' batches are then shuffled together.
    """

    def __init__(
        self,
        lengths: np.ndarray,
        batch_size: int,
        window: int = 50,
        drop_last: bool = False,
        groups: np.ndarray | None = None,
    ) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.window = window
        self.drop_last = drop_last
        self.groups = np.zeros(len(self.lengths), dtype=np.int64) if groups is None else np.asarray(groups)
        if self.groups.shape != self.lengths.shape:
            raise ValueError(f"groups has {self.groups.size} entries for {self.lengths.size} cells")

    def __iter__(self):
        order = torch.randperm(len(self.lengths)).numpy()
        order = order[np.argsort(self.groups[order], kind="stable")]  # grouped, shuffled within each group
        span = self.batch_size * self.window
        batches = []
        for group in np.unique(self.groups):
            members = order[self.groups[order] == group]
            for start in range(0, len(members), span):
                chunk = members[start : start + span]
                chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
                for b in range(0, len(chunk), self.batch_size):
                    batch = chunk[b : b + self.batch_size]
                    if len(batch) == self.batch_size or not self.drop_last:
                        batches.append(batch.tolist())
        for i in torch.randperm(len(batches)).tolist():
            yield batches[i]

    def __len__(self) -> int:
        sizes = np.bincount(np.unique(self.groups, return_inverse=True)[1])
        if self.drop_last:
            return int((sizes // self.batch_size).sum())
        return int((-(-sizes // self.batch_size)).sum())


def split_cells(n_obs: int, validation_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(train, validation)`` row positions: a seeded random ``validation_size`` share is held out."""
    if not 0.0 <= validation_size < 1.0:
        raise ValueError(f"validation_size must be in [0, 1), got {validation_size}")
    permutation = np.random.default_rng(seed).permutation(n_obs)
    n_val = round(validation_size * n_obs)
    return np.sort(permutation[n_val:]), np.sort(permutation[:n_val])


class CellDataModule(LightningDataModule):
    """Train/validation split of a family's map-style training dataset (the ``data_splitter`` of scvi's TrainRunner).

    ``make_dataset(rows)`` builds the dataset of the given cells; ``collator`` turns its items into a batch.
    """

    def __init__(
        self,
        make_dataset,
        n_obs: int,
        collator: Callable,
        *,
        batch_size: int = 32,
        validation_size: float = 0.0,
        seed: int = 0,
        num_workers: int = 0,
        lengths: np.ndarray | None = None,
        groups: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.train_idx, self.val_idx = split_cells(n_obs, validation_size, seed)
        self.test_idx = np.array([], dtype=np.int64)
        self.n_train, self.n_val = len(self.train_idx), len(self.val_idx)
        self._make_dataset = make_dataset
        self.collator = collator
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.lengths = lengths
        if groups is not None and lengths is None:
            raise ValueError("groups (one minibatch per group) need lengths (the length-bucketed sampler)")
        self.groups = groups

    def train_dataloader(self) -> DataLoader:
        if self.lengths is not None:
            sampler = BucketBatchSampler(
                self.lengths[self.train_idx],
                self.batch_size,
                drop_last=self.n_train > self.batch_size,
                groups=None if self.groups is None else self.groups[self.train_idx],
            )
            return DataLoader(
                self._make_dataset(self.train_idx),
                batch_sampler=sampler,
                collate_fn=self.collator,
                num_workers=self.num_workers,
            )
        return DataLoader(
            self._make_dataset(self.train_idx),
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=self.n_train > self.batch_size,
            collate_fn=self.collator,
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> DataLoader | list:
        if self.n_val == 0:
            return []
        return DataLoader(
            self._make_dataset(self.val_idx),
            batch_size=self.batch_size,
            shuffle=False,
            collate_fn=self.collator,
            num_workers=self.num_workers,
        )
