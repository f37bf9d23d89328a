"""Two augmented views per cell for the contrastive objective of scGPT-family training.

A view is the cell's raw counts thinned binomially (each UMI kept with a probability drawn per view), then
tokenised as usual, so the two views differ in depth, in which genes are detected and in which genes the context
keeps. The model learns an embedding that the sampling noise of sequencing does not move, while other cells of the
minibatch stay apart (:func:`scfm.nn._losses.paired_view_contrastive`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from ._data import MaskedValueCollator, TokenizedCellDataset, TrainingCell, pad_cells, unexpressed_measured_ids
from ._tokenizer import CellTokens, tokenize_csr

VIEW_GENE_IDS = "view_gene_ids"
VIEW_VALUES = "view_values"


def thin_counts(row: sp.csr_matrix, keep_fraction: float, rng: np.random.Generator) -> sp.csr_matrix:
    """Keep each count of a one-row CSR matrix with probability ``keep_fraction`` (binomial thinning).

    Values must be non-negative integers (raw counts); genes thinned to zero are dropped from the row.
    """
    counts = np.rint(row.data).astype(np.int64)
    kept = rng.binomial(counts, keep_fraction).astype(np.float32)
    nonzero = kept > 0
    indptr = np.array([0, int(nonzero.sum())], dtype=row.indptr.dtype)
    return sp.csr_matrix((kept[nonzero], row.indices[nonzero], indptr), shape=row.shape)


@dataclass
class TwoViewCell(TrainingCell):
    """A training cell (its first view, with GEP/GEPC targets) plus a second view of the same cell."""

    view: CellTokens | None = None


class TwoViewCellDataset(TokenizedCellDataset):
    """:class:`TokenizedCellDataset` whose items carry two binomially thinned views of each cell.

    Each view keeps every count with a probability drawn uniformly from ``[min_keep, 1]`` (numpy's global RNG,
    seeded by ``seed_everything`` in training). The first view is also the GEP/GEPC input; its zero targets are
    read from the unthinned cell, so a gene thinned away is never a zero target.
    """

    def __init__(self, *args, min_keep: float = 0.5, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not 0.0 < min_keep <= 1.0:
            raise ValueError(f"min_keep must be in (0, 1], got {min_keep}")
        self.min_keep = min_keep

    def _view(self, cell: sp.csr_matrix, rng: np.random.Generator) -> CellTokens:
        thinned = thin_counts(cell, rng.uniform(self.min_keep, 1.0), rng)
        return tokenize_csr(thinned, self.column_token_ids, cls_id=self.cls_id, config=self.config)[0]

    def __getitem__(self, item: int) -> TwoViewCell:
        row = int(self.rows[item])
        cell = self.matrix[row]
        rng = np.random.default_rng(np.random.randint(0, 2**31 - 1))  # noqa: NPY002 (seed_everything seeds it)
        measured = self.measured_token_ids[self.measured_groups[row]]
        zero_ids = unexpressed_measured_ids(cell, self.column_token_ids, [measured])[0]
        batch = int(self.batch_indices[row]) if self.batch_indices is not None else 0
        label = int(self.labels[row]) if self.labels is not None else -1
        return TwoViewCell(self._view(cell, rng), zero_ids, batch, label, view=self._view(cell, rng))


class TwoViewCollator(MaskedValueCollator):
    """:class:`MaskedValueCollator` of the first views plus the padded, unmasked second views."""

    def __call__(self, cells: Sequence[TwoViewCell], generator: torch.Generator | None = None) -> dict:
        batch = super().__call__(cells, generator)
        view_ids, view_values = pad_cells([cell.view for cell in cells], pad_id=self.pad_id, pad_value=self.pad_value)
        batch[VIEW_GENE_IDS] = view_ids
        batch[VIEW_VALUES] = view_values
        return batch
