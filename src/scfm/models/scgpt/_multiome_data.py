"""Multi-omic cells as scGPT tokens: ``<cls>`` then each measured modality's feature tokens with binned values.

Per modality (in the model's modality order), for a cell measured in it:

- ``rna``: the expressed genes, values binned per cell into ``1 .. n_bins - 1`` (scGPT's quantile bins), at most
  ``max_tokens["rna"]`` of them (a per-cell subsample);
- ``atac``: the open peaks, **binarised** (value ``n_bins - 1`` = accessible), at most ``max_tokens["atac"]``;
- ``protein``: every protein of the cell's panel, binned per cell (zero counts get bin 0);
- plus ``zero_fraction`` times as many measured-but-zero features of the modality with value 0, so that GEP and
  GEPC see zeros as well as non-zeros.

A cell missing a modality has no tokens of it (nothing is imputed as zero). Inference draws the subsample from a
seed of the cell's content (same tokens whatever the batch or order); training draws from torch's RNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch.utils.data import Dataset

from scfm.tokenize._binning import bin_expressed, cell_seed


@dataclass
class ModalityColumns:
    """The selected features of one modality: the cells x features counts and each feature's token id.

    ``measured`` (``(n_batches, n_features)`` bool) says which features a batch's panel measured (``None``: all).
    """

    kind: str
    matrix: sp.csr_matrix
    present: np.ndarray
    token_ids: np.ndarray
    measured: np.ndarray | None = None


@dataclass
class MultiomeCell:
    """One tokenised cell: input tokens (``<cls>`` first) and GEPC query tokens (``None``: the input's features)."""

    gene_ids: np.ndarray
    values: np.ndarray
    batch_index: int
    query_ids: np.ndarray | None = None
    query_values: np.ndarray | None = None


def tokenize_cell(
    row: int,
    columns: Sequence[ModalityColumns],
    *,
    cls_id: int,
    pad_value: float,
    n_bins: int,
    max_tokens: dict[str, int],
    zero_fraction: float,
    batch_index: int,
    rng: np.random.Generator | None,
    seed: int = 0,
    only: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and values of cell ``row`` (see the module docstring); ``rng=None`` seeds from the cell's content."""
    parts = []
    for mod in columns:
        if only is not None and mod.kind != only:
            continue
        if not mod.present[row]:
            continue
        start, stop = mod.matrix.indptr[row], mod.matrix.indptr[row + 1]
        cols = mod.matrix.indices[start:stop]
        vals = mod.matrix.data[start:stop]
        cols, vals = cols[vals > 0], vals[vals > 0]
        parts.append((mod, cols, vals))
    if rng is None:
        ids = np.concatenate([m.token_ids[c] for m, c, _ in parts]) if parts else np.zeros(0, dtype=np.int64)
        vals = np.concatenate([v for _, _, v in parts]) if parts else np.zeros(0, dtype=np.float32)
        rng = np.random.default_rng(cell_seed(ids, vals, seed))
    ids_out, values_out = [np.array([cls_id], dtype=np.int64)], [np.array([pad_value], dtype=np.float32)]
    for mod, cols, vals in parts:
        n_features = mod.matrix.shape[1]
        if mod.kind == "atac":
            binned = np.full(len(cols), n_bins - 1, dtype=np.float32)
        elif len(cols):
            binned = bin_expressed(vals, n_bins, None).astype(np.float32)
        else:
            binned = np.zeros(0, dtype=np.float32)
        if mod.kind == "protein":
            panel = np.arange(n_features) if mod.measured is None else np.flatnonzero(mod.measured[batch_index])
            zeros = np.setdiff1d(panel, cols, assume_unique=False)
            keep_cols, keep_vals = cols, binned
        else:
            limit = max_tokens.get(mod.kind, len(cols))
            if len(cols) > limit:
                pick = np.sort(rng.choice(len(cols), size=limit, replace=False))
                keep_cols, keep_vals = cols[pick], binned[pick]
            else:
                keep_cols, keep_vals = cols, binned
            n_zero = round(zero_fraction * len(keep_cols))
            zeros = np.zeros(0, dtype=np.int64)
            if n_zero:
                candidates = np.setdiff1d(np.arange(n_features), cols, assume_unique=True)
                if len(candidates):
                    zeros = np.sort(rng.choice(candidates, size=min(n_zero, len(candidates)), replace=False))
        ids_out += [mod.token_ids[keep_cols], mod.token_ids[zeros]]
        values_out += [keep_vals, np.zeros(len(zeros), dtype=np.float32)]
    return np.concatenate(ids_out).astype(np.int64), np.concatenate(values_out).astype(np.float32)


class MultiomeCellDataset(Dataset):
    """Cells ``rows`` of the selected modality columns, tokenised on access.

    ``training=True`` draws subsamples from torch's global RNG (fixed by ``seed_everything``); otherwise from the
    cell's content. ``only`` keeps one modality's tokens (per-modality embeddings).

    ``modality_dropout`` (training): with this probability, a cell measured in several modalities hides one of them
    (chosen at random) from its input; that modality's tokens stay GEPC queries, so the cell embedding made from
    the other modalities must predict it (cross-modal prediction, which places cells measured in one modality
    beside paired cells).
    """

    def __init__(
        self,
        columns: Sequence[ModalityColumns],
        rows: np.ndarray,
        batch_codes: np.ndarray,
        *,
        cls_id: int,
        pad_value: float,
        n_bins: int,
        max_tokens: dict[str, int],
        zero_fraction: float,
        seed: int = 0,
        training: bool = False,
        only: str | None = None,
        token_modality: np.ndarray | None = None,
        modality_dropout: float = 0.0,
    ) -> None:
        if modality_dropout > 0 and token_modality is None:
            raise ValueError("modality_dropout needs token_modality (the modality index of every token id)")
        self.token_modality = token_modality
        self.modality_dropout = modality_dropout
        self.columns = list(columns)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.batch_codes = np.asarray(batch_codes, dtype=np.int64)
        self.settings = {
            "cls_id": cls_id,
            "pad_value": pad_value,
            "n_bins": n_bins,
            "max_tokens": dict(max_tokens),
            "zero_fraction": zero_fraction,
            "seed": seed,
            "only": only,
        }
        self.training = training

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item: int) -> MultiomeCell:
        row = int(self.rows[item])
        rng = None
        if self.training:
            rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
        batch = int(self.batch_codes[row])
        ids, values = tokenize_cell(row, self.columns, batch_index=batch, rng=rng, **self.settings)
        if not self.training or self.modality_dropout <= 0:
            return MultiomeCell(ids, values, batch)
        modality = self.token_modality[ids]
        kinds = np.unique(modality[1:])
        if len(kinds) < 2 or torch.rand(1).item() >= self.modality_dropout:
            return MultiomeCell(ids, values, batch)
        hidden = kinds[int(torch.randint(0, len(kinds), (1,)).item())]
        keep = modality != hidden
        return MultiomeCell(ids[keep], values[keep], batch, ids[1:], values[1:])

    def lengths(self) -> np.ndarray:
        """Approximate token count per cell (for length-bucketed batches)."""
        total = np.ones(len(self.rows), dtype=np.int64)
        for mod in self.columns:
            if self.settings["only"] is not None and mod.kind != self.settings["only"]:
                continue
            nnz = np.diff(mod.matrix.indptr)[self.rows]
            if mod.kind == "protein":
                nnz = np.full(len(self.rows), mod.matrix.shape[1])
            else:
                nnz = np.minimum(nnz, self.settings["max_tokens"].get(mod.kind, mod.matrix.shape[1]))
                nnz = nnz + np.round(self.settings["zero_fraction"] * nnz).astype(np.int64)
            total += np.where(mod.present[self.rows], nnz, 0)
        return total


class MultiomeCollator:
    """Pads cells and masks a fraction ``mask_ratio`` of each cell's feature tokens for GEP (torch's RNG)."""

    def __init__(self, *, pad_id: int, pad_value: float, mask_value: float, mask_ratio: float = 0.4) -> None:
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        self.pad_id, self.pad_value, self.mask_value, self.mask_ratio = pad_id, pad_value, mask_value, mask_ratio

    def __call__(self, cells: Sequence[MultiomeCell]) -> dict[str, torch.Tensor]:
        gene_ids, targets = pad(cells, self.pad_id, self.pad_value)
        is_feature = gene_ids != self.pad_id
        is_feature[:, 0] = False
        masked = (torch.rand(gene_ids.shape) < self.mask_ratio) & is_feature
        values = targets.clone()
        values[masked] = self.mask_value
        queries = [
            MultiomeCell(
                cell.gene_ids[1:] if cell.query_ids is None else cell.query_ids,
                cell.values[1:] if cell.query_values is None else cell.query_values,
                cell.batch_index,
            )
            for cell in cells
        ]
        query_ids, query_values = pad(queries, self.pad_id, 0.0)
        return {
            "gene_ids": gene_ids,
            "values": values,
            "target_values": targets,
            "masked": masked,
            "query_gene_ids": query_ids,
            "query_values": query_values,
            "batch_index": torch.tensor([cell.batch_index for cell in cells], dtype=torch.long),
        }


def pad(cells: Sequence[MultiomeCell], pad_id: int, pad_value: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(batch, longest)`` id and value tensors."""
    length = max(max(len(cell.gene_ids) for cell in cells), 1)
    ids = np.full((len(cells), length), pad_id, dtype=np.int64)
    values = np.full((len(cells), length), pad_value, dtype=np.float32)
    for row, cell in enumerate(cells):
        ids[row, : len(cell.gene_ids)] = cell.gene_ids
        values[row, : len(cell.values)] = cell.values
    return torch.from_numpy(ids), torch.from_numpy(values)


@torch.inference_mode()
def embed_dataset(module, dataset: MultiomeCellDataset, *, batch_size: int, device: torch.device) -> np.ndarray:
    """Cell embeddings of every cell of ``dataset`` in its order, ``(n, d)`` float32 (not normalised).

    Cells are batched by length; a cell's embedding does not depend on the batch it lands in.
    """
    module.eval()
    n = len(dataset)
    out = np.zeros((n, module.config.d_model), dtype=np.float32)
    order = np.argsort(-dataset.lengths(), kind="stable")
    for start in range(0, n, batch_size):
        items = order[start : start + batch_size]
        cells = [dataset[int(i)] for i in items]
        ids, values = pad(cells, module.config.pad_id, module.config.pad_value)
        embedding = module.embed(ids.to(device), values.to(device))
        out[items] = embedding.float().cpu().numpy()
    return out
