"""Map-style dataset and collator for masked-value (GEP/GEPC) training of scGPT-family models."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch.utils.data import Dataset

from ._tokenizer import BinningConfig, CellTokens, tokenize_csr


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


def pad_cells(
    cells: Sequence[CellTokens], *, pad_id: int, pad_value: float, min_length: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack cells into ``(batch, max(longest, min_length))`` id and value tensors, padding shorter cells."""
    length = max(max(len(cell.gene_ids) for cell in cells), min_length)
    gene_ids = np.full((len(cells), length), pad_id, dtype=np.int64)
    values = np.full((len(cells), length), pad_value, dtype=np.float32)
    for row, cell in enumerate(cells):
        gene_ids[row, : len(cell.gene_ids)] = cell.gene_ids
        values[row, : len(cell.values)] = cell.values
    return torch.from_numpy(gene_ids), torch.from_numpy(values)
