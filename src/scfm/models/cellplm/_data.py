"""Cells-as-tokens "sentences": which cells a CellPLM-style model reads together.

A sentence holds cells of one sample. Without coordinates, a sample's cells are ordered by a seeded hash of
their names and cut into equal chunks of at most ``context`` cells, so the grouping depends on the set of
cells and the seed but not on their order in the AnnData or on any batch size. With coordinates, a sample is
split recursively at the median of its longer axis (a k-d tree) into spatially compact neighbourhoods.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, Sampler

from scfm.data._datamodule import split_cells


def _hash_order(names: np.ndarray, seed: int) -> np.ndarray:
    key = f"scfm-cells{seed:06d}"[-16:].rjust(16, "0")
    hashes = pd.util.hash_array(np.asarray(names, dtype=object), hash_key=key, categorize=False)
    return np.lexsort((np.arange(len(names)), hashes))


def _split_evenly(order: np.ndarray, context: int) -> list[np.ndarray]:
    n_chunks = -(-len(order) // context)
    return [np.sort(chunk) for chunk in np.array_split(order, n_chunks)]


def _spatial_split(cells: np.ndarray, coordinates: np.ndarray, rank: np.ndarray, context: int) -> list[np.ndarray]:
    """k-d partition of ``cells`` into leaves of at most ``context`` cells, sizes as equal as possible."""
    n_leaves = -(-len(cells) // context)
    if n_leaves <= 1:
        return [np.sort(cells)]
    points = coordinates[cells]
    axis = int(np.argmax(points.max(0) - points.min(0)))
    order = cells[np.lexsort((rank[cells], points[:, axis]))]
    left_leaves = n_leaves // 2
    n_left = round(len(cells) * left_leaves / n_leaves)
    return _spatial_split(order[:n_left], coordinates, rank, context) + _spatial_split(
        order[n_left:], coordinates, rank, context
    )


def sample_codes(
    samples: Sequence | np.ndarray | None, n: int, min_sample_size: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Integer sample code per cell (in order of first appearance) and cells per sample.

    Raises
    ------
    ValueError
        A missing sample label, or a sample smaller than ``min_sample_size`` (named, with the fix).
    """
    labels = np.zeros(n, dtype=np.int64) if samples is None else pd.factorize(np.asarray(samples))[0]
    if (labels < 0).any():
        raise ValueError(f"{int((labels < 0).sum())} cells have a missing sample label; fill or drop them first")
    counts = np.bincount(labels, minlength=labels.max() + 1 if n else 0)
    small = np.flatnonzero(counts < min_sample_size)
    if small.size:
        uniques = pd.unique(np.asarray(samples)) if samples is not None else np.array(["all cells"])
        examples = [str(u) for u in uniques[small][:5]]
        raise ValueError(
            f"{small.size} samples have fewer than {min_sample_size} cells (e.g. {examples}); "
            "a CellPLM sentence needs other cells of the same sample as context: merge small samples, drop them, "
            "or pass sample_key=None to treat all cells as one sample"
        )
    return labels, counts


def plan_sentences(
    obs_names: Sequence[str] | np.ndarray,
    *,
    context: int,
    samples: Sequence | np.ndarray | None = None,
    coordinates: np.ndarray | None = None,
    seed: int = 0,
    min_sample_size: int = 2,
) -> list[np.ndarray]:
    """Group cells into sentences (arrays of row positions, each ascending).

    Parameters
    ----------
    obs_names
        Cell names; with ``seed`` they fix the grouping of non-spatial samples.
    context
        Most cells per sentence.
    samples
        Sample label per cell (``None``: one sample). Sentences never mix samples.
    coordinates
        ``(n, 2)`` coordinates: group by spatial neighbourhood instead of by hash. A sample whose coordinates
        are all NaN is grouped by hash (a non-spatial sample beside spatial ones).
    seed
        Seed of the hash grouping.
    min_sample_size
        Samples with fewer cells are an error (a lone cell has no tissue context).

    Returns
    -------
    Sentences in sample order (samples as first seen), covering every cell exactly once.

    Raises
    ------
    ValueError
        ``context < 1``, or a sample smaller than ``min_sample_size`` (the message names it and the fix).
    """
    if context < 1:
        raise ValueError(f"context must be >= 1 cell, got {context}")
    names = np.asarray(obs_names)
    n = len(names)
    labels, counts = sample_codes(samples, n, min_sample_size)
    rank = np.empty(n, dtype=np.int64)
    rank[_hash_order(names, seed)] = np.arange(n)
    sentences: list[np.ndarray] = []
    for label in range(len(counts)):
        cells = np.flatnonzero(labels == label)
        if _has_positions(coordinates, cells):
            sentences.extend(_spatial_split(cells, np.asarray(coordinates, dtype=np.float64), rank, context))
        else:
            sentences.extend(_split_evenly(cells[np.argsort(rank[cells])], context))
    return sentences


def _has_positions(coordinates: np.ndarray | None, cells: np.ndarray) -> bool:
    return coordinates is not None and bool(np.isfinite(coordinates[cells]).all())


class SentenceBatchSampler(Sampler[list[int]]):
    """Each epoch, cut the cells of each sample into random sentences of at most ``context`` cells.

    Non-spatial samples (no coordinates, or all NaN) are shuffled with torch's global RNG (seed it for
    reproducible runs), so the sentences differ from epoch to epoch; spatial samples keep their k-d
    neighbourhoods. Sentences come in random order.
    ``cells`` are positions into the full matrix; yielded batches are lists of such positions.
    """

    def __init__(
        self,
        cells: np.ndarray,
        *,
        context: int,
        samples: np.ndarray | None = None,
        coordinates: np.ndarray | None = None,
    ) -> None:
        self.cells = np.asarray(cells, dtype=np.int64)
        self.context = context
        labels = np.zeros(len(self.cells), dtype=np.int64) if samples is None else pd.factorize(samples[self.cells])[0]
        self.groups = [self.cells[labels == label] for label in range(labels.max() + 1 if len(labels) else 0)]
        rank = np.zeros(int(self.cells.max()) + 1 if len(self.cells) else 0, dtype=np.int64)
        self.spatial = [
            s
            for group in self.groups
            if _has_positions(coordinates, group)
            for s in _spatial_split(group, np.asarray(coordinates, float), rank, context)
        ]
        self.shuffled = [group for group in self.groups if not _has_positions(coordinates, group)]

    def __iter__(self):
        sentences = list(self.spatial)
        for group in self.shuffled:
            order = group[torch.randperm(len(group)).numpy()]
            sentences.extend(_split_evenly(order, self.context))
        for i in torch.randperm(len(sentences)).tolist():
            yield sentences[i].tolist()

    def __len__(self) -> int:
        return len(self.spatial) + int(sum(-(-len(group) // self.context) for group in self.shuffled))


class SentenceCollator:
    """Rows of one sentence -> dense ``counts`` and ``measured`` over the vocabulary genes, plus coordinates.

    Parameters
    ----------
    counts
        CSR ``(n_cells, n_genes)``: counts with columns in vocabulary gene order.
    measured_groups, measured_masks
        ``measured_masks[measured_groups[row]]`` is the boolean gene mask of that cell's dataset.
    coordinates
        ``(n_cells, 2)`` or ``None``.
    """

    def __init__(
        self,
        counts: sp.csr_matrix,
        measured_groups: np.ndarray,
        measured_masks: np.ndarray,
        coordinates: np.ndarray | None = None,
    ) -> None:
        self.counts = counts
        self.measured_groups = np.asarray(measured_groups, dtype=np.int64)
        self.measured_masks = torch.as_tensor(np.asarray(measured_masks, dtype=bool))
        self.coordinates = coordinates

    def __call__(self, rows: list[int]) -> dict[str, torch.Tensor]:
        rows = np.asarray(rows, dtype=np.int64)
        positions = torch.zeros(0, 2)
        if _has_positions(self.coordinates, rows):
            positions = torch.as_tensor(self.coordinates[rows], dtype=torch.float32)
        return {
            "counts": torch.as_tensor(self.counts[rows].toarray(), dtype=torch.float32),
            "measured": self.measured_masks[torch.as_tensor(self.measured_groups[rows])],
            "coordinates": positions,
        }


class SentenceDataModule(LightningDataModule):
    """Train/validation split by cell; each split is cut into sentences (the ``data_splitter`` of TrainRunner)."""

    def __init__(
        self,
        collator: SentenceCollator,
        n_obs: int,
        *,
        context: int,
        samples: np.ndarray | None = None,
        coordinates: np.ndarray | None = None,
        validation_size: float = 0.0,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.train_idx, self.val_idx = split_cells(n_obs, validation_size, seed)
        self.test_idx = np.array([], dtype=np.int64)
        self.n_train, self.n_val = len(self.train_idx), len(self.val_idx)
        self.collator = collator
        self.context, self.samples, self.coordinates = context, samples, coordinates
        self.num_workers = num_workers

    def _loader(self, cells: np.ndarray) -> DataLoader:
        sampler = SentenceBatchSampler(cells, context=self.context, samples=self.samples, coordinates=self.coordinates)
        return DataLoader(
            range(int(cells.max()) + 1 if len(cells) else 0),
            batch_sampler=sampler,
            collate_fn=self.collator,
            num_workers=self.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_idx)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_idx) if self.n_val else []
