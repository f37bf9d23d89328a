"""Rank-token samples for causal next-gene training (tGPT): a dataset over matrix rows and a padding collator."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch.utils.data import Dataset

from scfm.tokenize import check_values

from ._tokenizer import rank_tokenize_csr, rank_tokens

TOKEN_IDS = "token_ids"
VIEW_TOKEN_IDS = "view_token_ids"


class RankedSampleDataset(Dataset):
    """Rank tokens of selected rows of a cells (or samples) x genes CSR matrix, tokenised on access.

    Parameters
    ----------
    matrix
        CSR matrix of all rows; only ``rows`` are read.
    column_token_ids
        Token id per column (``-1``: outside the vocabulary).
    rows
        Row positions of this dataset, in item order.
    begin_id, end_id, max_len, end_when_cut
        See :func:`scfm.models.tgpt.rank_tokens`.
    """

    def __init__(
        self,
        matrix: sp.csr_matrix,
        column_token_ids: np.ndarray,
        rows: np.ndarray,
        *,
        begin_id: int,
        end_id: int,
        max_len: int,
        end_when_cut: bool = False,
    ) -> None:
        self.matrix = sp.csr_matrix(matrix) if not sp.isspmatrix_csr(matrix) else matrix
        self.column_token_ids = np.asarray(column_token_ids, dtype=np.int64)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.begin_id, self.end_id, self.max_len, self.end_when_cut = begin_id, end_id, max_len, end_when_cut
        # validates the column map and the values once, so that items can skip the checks
        rank_tokenize_csr(
            self.matrix[:0],
            self.column_token_ids,
            begin_id=begin_id,
            end_id=end_id,
            max_len=max_len,
            end_when_cut=end_when_cut,
        )
        check_values(self.matrix.data, where="the training matrix")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> np.ndarray:
        return self._ranking(self.rows[index])

    def _ranking(self, row: int) -> np.ndarray:
        """Rank tokens of one matrix row."""
        start, stop = self.matrix.indptr[row], self.matrix.indptr[row + 1]
        ids = self.column_token_ids[self.matrix.indices[start:stop]]
        values = self.matrix.data[start:stop]
        keep = (ids >= 0) & (values > 0)
        return rank_tokens(
            ids[keep],
            values[keep],
            begin_id=self.begin_id,
            end_id=self.end_id,
            max_len=self.max_len,
            end_when_cut=self.end_when_cut,
        )


class PadTokens:
    """Collator: right-pads token sequences to the longest in the batch with ``pad_id``."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, sequences: list[np.ndarray]) -> dict[str, torch.Tensor]:
        length = max(len(s) for s in sequences)
        out = torch.full((len(sequences), length), self.pad_id, dtype=torch.long)
        for i, tokens in enumerate(sequences):
            out[i, : len(tokens)] = torch.from_numpy(np.asarray(tokens, dtype=np.int64))
        return {TOKEN_IDS: out}


class TwoViewRankedDataset(RankedSampleDataset):
    """:class:`RankedSampleDataset` whose items are two rankings of one cell, each from binomially thinned counts.

    Each view keeps every count with a probability drawn uniformly from ``[min_keep, 1]`` (numpy's global RNG,
    seeded by ``seed_everything`` in training), then ranks the surviving genes, so the views differ in depth, in
    which genes reach the context and in their order. The matrix must hold integer counts.
    """

    def __init__(self, *args, min_keep: float = 0.5, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not 0.0 < min_keep <= 1.0:
            raise ValueError(f"min_keep must be in (0, 1], got {min_keep}")
        self.min_keep = min_keep

    def _view(self, ids: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        kept = rng.binomial(counts, rng.uniform(self.min_keep, 1.0)).astype(np.float32)
        alive = kept > 0
        return rank_tokens(
            ids[alive],
            kept[alive],
            begin_id=self.begin_id,
            end_id=self.end_id,
            max_len=self.max_len,
            end_when_cut=self.end_when_cut,
        )

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        row = self.rows[index]
        start, stop = self.matrix.indptr[row], self.matrix.indptr[row + 1]
        ids = self.column_token_ids[self.matrix.indices[start:stop]]
        values = self.matrix.data[start:stop]
        keep = (ids >= 0) & (values > 0)
        ids, counts = ids[keep], np.rint(values[keep]).astype(np.int64)
        rng = np.random.default_rng(np.random.randint(0, 2**31 - 1))  # noqa: NPY002 (seed_everything seeds it)
        return self._view(ids, counts, rng), self._view(ids, counts, rng)


class PadTwoViews(PadTokens):
    """Collator of :class:`TwoViewRankedDataset` items: both views right-padded, under two keys."""

    def __call__(self, pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, torch.Tensor]:
        first = super().__call__([pair[0] for pair in pairs])[TOKEN_IDS]
        second = super().__call__([pair[1] for pair in pairs])[TOKEN_IDS]
        return {TOKEN_IDS: first, VIEW_TOKEN_IDS: second}


class NeighbourViewDataset(RankedSampleDataset):
    """:class:`RankedSampleDataset` whose items pair a cell's ranking with the ranking of one of its neighbours.

    The neighbour is drawn uniformly (numpy's global RNG, seeded by ``seed_everything`` in training) from the cell's
    row of ``neighbours`` (from :func:`scfm.data.expression_neighbours`): a contrastive objective on these pairs
    teaches the embedding the neighbour graph of log-normalised expression. A cell without neighbours (``-1`` row)
    is paired with itself.
    """

    def __init__(self, *args, neighbours: np.ndarray, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.neighbours = np.asarray(neighbours, dtype=np.int64)
        if self.neighbours.ndim != 2 or self.neighbours.shape[0] != self.matrix.shape[0]:
            raise ValueError(
                f"neighbours must have one row per matrix row ({self.matrix.shape[0]}), "
                f"got shape {self.neighbours.shape}"
            )
        if self.neighbours.max(initial=-1) >= self.matrix.shape[0]:
            raise ValueError("neighbours holds row indices beyond the matrix")

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        row = self.rows[index]
        candidates = self.neighbours[row]
        candidates = candidates[candidates >= 0]
        partner = candidates[np.random.randint(len(candidates))] if len(candidates) else row  # noqa: NPY002
        return self._ranking(row), self._ranking(partner)
