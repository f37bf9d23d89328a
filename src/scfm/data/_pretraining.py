"""Map-style dataset and collator for masked-value (GEP/GEPC) training of scGPT-family models."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset, Sampler

from scfm.tokenize import BinningConfig, CellTokens, tokenize_csr

from ._collate import pad_cells


@dataclass
class TrainingCell:
    """One tokenised cell plus the measured genes it does not express (GEPC zero targets)."""

    tokens: CellTokens
    zero_gene_ids: np.ndarray
    batch_index: int
    label: int = -1


def unexpressed_measured_ids(
    block: sp.csr_matrix, column_token_ids: np.ndarray, measured_ids: Sequence[np.ndarray]
) -> list[np.ndarray]:
    """Per row: the measured vocabulary ids the cell does not express (GEPC zero targets).

    Expression is read from the row itself, so a gene left out of the cell's tokens by ``max_len`` subsampling is
    still expressed and never a zero target.
    """
    out = []
    for row, measured in enumerate(measured_ids):
        start, stop = block.indptr[row], block.indptr[row + 1]
        ids = column_token_ids[block.indices[start:stop][block.data[start:stop] > 0]]
        out.append(np.setdiff1d(measured, ids[ids >= 0]))
    return out


class TokenizedCellDataset(Dataset):
    """Cells of an in-memory CSR matrix, tokenised on access.

    Parameters
    ----------
    matrix
        CSR matrix, rows = cells, columns = the AnnData's genes.
    column_token_ids
        Vocabulary id per column, ``-1`` for genes outside the vocabulary.
    cls_id, config
        Tokeniser settings (see :func:`scfm.tokenize.tokenize_csr`).
    rows
        The rows (cells) this dataset serves.
    measured_groups, measured_token_ids
        ``measured_groups[row]`` indexes ``measured_token_ids``: the vocabulary ids measured for that cell's
        dataset. A gene outside that set is unobserved, never a zero target. ``None``: every matched gene is
        measured for every cell.
    batch_indices
        Optional integer batch per row (for batch embeddings, the batch discriminator, batch norm).
    labels
        Optional integer label per row for a classification objective (``-1``: unlabelled).
    """

    def __init__(
        self,
        matrix: sp.csr_matrix,
        column_token_ids: np.ndarray,
        *,
        cls_id: int,
        config: BinningConfig,
        rows: np.ndarray,
        measured_groups: np.ndarray | None = None,
        measured_token_ids: Sequence[np.ndarray] | None = None,
        batch_indices: np.ndarray | None = None,
        labels: np.ndarray | None = None,
    ) -> None:
        self.matrix = matrix
        self.column_token_ids = column_token_ids
        self.cls_id = cls_id
        self.config = config
        self.rows = np.asarray(rows, dtype=np.int64)
        if measured_groups is None:
            matched = np.unique(column_token_ids[column_token_ids >= 0])
            self.measured_groups = np.zeros(matrix.shape[0], dtype=np.int64)
            self.measured_token_ids = [matched]
        else:
            self.measured_groups = np.asarray(measured_groups, dtype=np.int64)
            self.measured_token_ids = [np.unique(ids) for ids in measured_token_ids]
        self.batch_indices = batch_indices
        self.labels = labels

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item: int) -> TrainingCell:
        row = int(self.rows[item])
        cell = self.matrix[row]
        tokens = tokenize_csr(cell, self.column_token_ids, cls_id=self.cls_id, config=self.config)[0]
        measured = self.measured_token_ids[self.measured_groups[row]]
        zero_ids = unexpressed_measured_ids(cell, self.column_token_ids, [measured])[0]
        batch = int(self.batch_indices[row]) if self.batch_indices is not None else 0
        label = int(self.labels[row]) if self.labels is not None else -1
        return TrainingCell(tokens, zero_ids, batch, label)


class MaskedValueCollator:
    """Pads cells and draws the training masks (torch's global RNG, so ``seed_everything`` fixes them).

    ``mode="masked"``: a fraction ``mask_ratio`` of each cell's gene tokens get ``mask_value`` as input and
    their bins as GEP targets (``mask_ratio=0``: nothing is masked, for classification-only fine-tuning).
    ``mode="generative"``: the same tokens become "unknown" under scGPT's
    generative attention mask. GEPC queries are the cell's gene tokens plus up to ``n_zero_queries``
    measured-but-unexpressed genes (target 0). ``pad_to_length`` pads every batch to at least that many tokens
    (static shapes; the reference implementation's padding to the full context, kept as a benchmark baseline).
    """

    def __init__(
        self,
        *,
        pad_id: int,
        pad_value: float,
        mask_value: float,
        mask_ratio: float = 0.4,
        mode: str = "masked",
        n_zero_queries: int = 128,
        pad_to_length: int = 0,
    ) -> None:
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        if mode not in ("masked", "generative"):
            raise ValueError(f"mode must be 'masked' or 'generative', got {mode!r}")
        self.pad_id = pad_id
        self.pad_value = pad_value
        self.mask_value = mask_value
        self.mask_ratio = mask_ratio
        self.mode = mode
        self.n_zero_queries = n_zero_queries
        self.pad_to_length = pad_to_length

    def _queries(
        self, cells: Sequence[TrainingCell], generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        query_ids, query_values = [], []
        for cell in cells:
            n_zero = min(self.n_zero_queries, len(cell.zero_gene_ids), max(len(cell.tokens.gene_ids) - 1, 1))
            pick = torch.randperm(len(cell.zero_gene_ids), generator=generator)[:n_zero].numpy()
            ids = np.concatenate([cell.tokens.gene_ids[1:], cell.zero_gene_ids[np.sort(pick)]])
            values = np.concatenate([cell.tokens.values[1:], np.zeros(n_zero, dtype=np.float32)])
            query_ids.append(ids)
            query_values.append(values)
        width = max(max(len(ids) for ids in query_ids), 1)
        ids_out = torch.full((len(cells), width), self.pad_id, dtype=torch.long)
        values_out = torch.zeros((len(cells), width), dtype=torch.float32)
        for row, (ids, values) in enumerate(zip(query_ids, query_values, strict=True)):
            ids_out[row, : len(ids)] = torch.from_numpy(ids)
            values_out[row, : len(values)] = torch.from_numpy(values)
        return ids_out, values_out

    def __call__(
        self, cells: Sequence[TrainingCell], generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Pad ``cells`` and draw the masks from ``generator`` (``None``: torch's global generator)."""
        gene_ids, targets = pad_cells(
            [cell.tokens for cell in cells], pad_id=self.pad_id, pad_value=self.pad_value, min_length=self.pad_to_length
        )
        is_gene = gene_ids != self.pad_id
        is_gene[:, 0] = False
        masked = (torch.rand(gene_ids.shape, generator=generator) < self.mask_ratio) & is_gene
        values = targets.clone()
        values[masked] = self.mask_value
        query_ids, query_values = self._queries(cells, generator)
        batch = {
            "gene_ids": gene_ids,
            "values": values,
            "target_values": targets,
            "masked": masked,
            "query_gene_ids": query_ids,
            "query_values": query_values,
            "batch_index": torch.tensor([cell.batch_index for cell in cells], dtype=torch.long),
            "labels": torch.tensor([cell.label for cell in cells], dtype=torch.long),
        }
        if self.mode == "generative":
            batch["known"] = ~masked
        return batch


class BucketBatchSampler(Sampler[list[int]]):
    """Random batches of cells with similar token counts, to avoid padding waste in training.

    Each epoch shuffles the cells (torch's global RNG), sorts windows of ``window`` batches by length,
    cuts them into batches and shuffles the batch order.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, window: int = 50, drop_last: bool = False) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.window = window
        self.drop_last = drop_last

    def __iter__(self):
        order = torch.randperm(len(self.lengths)).numpy()
        span = self.batch_size * self.window
        batches = []
        for start in range(0, len(order), span):
            chunk = order[start : start + span]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            for b in range(0, len(chunk), self.batch_size):
                batch = chunk[b : b + self.batch_size]
                if len(batch) == self.batch_size or not self.drop_last:
                    batches.append(batch.tolist())
        for i in torch.randperm(len(batches)).tolist():
            yield batches[i]

    def __len__(self) -> int:
        if self.drop_last:
            return len(self.lengths) // self.batch_size
        return -(-len(self.lengths) // self.batch_size)


def split_cells(n_obs: int, validation_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(train, validation)`` row positions: a seeded random ``validation_size`` share is held out."""
    if not 0.0 <= validation_size < 1.0:
        raise ValueError(f"validation_size must be in [0, 1), got {validation_size}")
    permutation = np.random.default_rng(seed).permutation(n_obs)
    n_val = round(validation_size * n_obs)
    return np.sort(permutation[n_val:]), np.sort(permutation[:n_val])


class CellDataModule(LightningDataModule):
    """Train/validation split of a :class:`TokenizedCellDataset` (the ``data_splitter`` of scvi's TrainRunner)."""

    def __init__(
        self,
        make_dataset,
        n_obs: int,
        collator: MaskedValueCollator,
        *,
        batch_size: int = 32,
        validation_size: float = 0.0,
        seed: int = 0,
        num_workers: int = 0,
        lengths: np.ndarray | None = None,
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

    def train_dataloader(self) -> DataLoader:
        if self.lengths is not None:
            sampler = BucketBatchSampler(
                self.lengths[self.train_idx], self.batch_size, drop_last=self.n_train > self.batch_size
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
