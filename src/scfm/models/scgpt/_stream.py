"""Streaming cells into scGPT-family masked-value batches (GEP/GEPC with per-dataset gene masks)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from scfm.data._shards import RowSource, measured_masks
from scfm.genes import GeneVocab, align_genes

from ._data import MaskedValueCollator, TrainingCell, unexpressed_measured_ids
from ._tokenizer import BinningConfig, tokenize_csr


@dataclass
class _SourceGenes:
    """A source's columns in the vocabulary and the vocabulary ids each of its datasets measured."""

    column_token_ids: np.ndarray
    measured_ids: dict[str, np.ndarray]


class SCGPTCellEncoder:
    """:class:`~scfm.data.CellEncoder` for :class:`~scfm.models.SCGPT` pretraining.

    A gene that a cell's dataset did not measure (``var['measured_in:<dataset>']`` false) is neither an input token
    nor a zero target; without such columns every vocabulary gene of the source counts as measured.

    Parameters
    ----------
    vocab
        The model's vocabulary.
    binning
        Tokeniser settings (bins, ``max_len``, seed).
    collator
        Draws the masks and pads the batch.
    gene_key
        Column of each source's ``var`` with gene symbols (``None``: var_names).
    min_genes
        Fewest vocabulary genes a source must match.
    """

    def __init__(
        self,
        vocab: GeneVocab,
        *,
        binning: BinningConfig,
        collator: MaskedValueCollator,
        gene_key: str | None = None,
        min_genes: int = 50,
    ) -> None:
        self.vocab, self.binning, self.collator = vocab, binning, collator
        self.gene_key, self.min_genes = gene_key, min_genes
        self._genes: list[_SourceGenes] | None = None
        self._sources: list[RowSource] = []

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_genes": None, "_sources": []}

    def prepare(self, sources: Sequence[RowSource]) -> None:
        if self._genes is not None and len(self._sources) == len(sources):
            return
        genes = []
        for source in sources:
            var = source.var
            try:
                alignment = align_genes(var, self.vocab, gene_key=self.gene_key, min_genes=self.min_genes)
            except ValueError as err:
                raise ValueError(f"source {source.name!r}: {err}") from err
            column_token_ids = alignment.column_token_ids()
            names = source.dataset_names()
            try:
                masks = measured_masks(var, names)
            except KeyError as err:
                raise KeyError(f"source {source.name!r}: {err.args[0]}") from err
            matched = column_token_ids >= 0
            if masks is None:
                masks = {name: matched for name in names}
            measured = {name: np.unique(column_token_ids[mask & matched]) for name, mask in masks.items()}
            genes.append(_SourceGenes(column_token_ids, measured))
        self._genes, self._sources = genes, list(sources)

    def encode(self, source_index: int, rows: sp.csr_matrix, start: int) -> list[TrainingCell]:
        genes = self._genes[source_index]
        datasets = self._sources[source_index].datasets(start, start + rows.shape[0])
        tokens = tokenize_csr(rows, genes.column_token_ids, cls_id=self.vocab.cls_id, config=self.binning)
        rows = sp.csr_matrix(rows)
        rows.sum_duplicates()
        measured = [genes.measured_ids[dataset] for dataset in datasets]
        zero_ids = unexpressed_measured_ids(rows, genes.column_token_ids, measured)
        return [TrainingCell(t, z, 0) for t, z in zip(tokens, zero_ids, strict=True)]

    def collate(self, items: Sequence[TrainingCell], generator: torch.Generator) -> dict[str, torch.Tensor]:
        return self.collator(items, generator=generator)

    def pad_id(self) -> int:
        return self.vocab.pad_id
