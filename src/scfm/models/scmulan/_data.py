"""Training batches of scMulan.

A cell's gene words and metadata terms become an annotation or a generation c-sentence, drawn per cell and batch
from a seeded generator.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch.utils.data import Dataset

from scfm.tokenize import InputKind, check_values

from ._tokenizer import (
    CSentenceVocab,
    LevelScheme,
    annotation_sentence,
    generation_sentence,
    row_gene_words,
)

ENTITIES, VALUES = "entities", "values"
ENTITY_TARGET, VALUE_TARGET, METADATA_TARGET = "entity_target", "value_target", "metadata_target"


class CellWordsDataset(Dataset):
    """Gene words and metadata term ids of selected rows of a cells x genes CSR matrix, tokenised on access.

    Parameters
    ----------
    matrix
        CSR matrix of all cells; only ``rows`` are read.
    column_token_ids
        Gene-vocabulary id per column (``-1``: outside the vocabulary).
    term_ids
        ``(n_cells, n_keys)`` entity ids of each cell's metadata terms; ``-1`` where a cell has none.
    rows
        Row positions of this dataset, in item order.
    scheme, input_kind, max_genes, seed
        See :func:`scfm.tokenize.cell_gene_words`.
    """

    def __init__(
        self,
        matrix: sp.csr_matrix,
        column_token_ids: np.ndarray,
        term_ids: np.ndarray,
        rows: np.ndarray,
        *,
        scheme: LevelScheme,
        input_kind: InputKind,
        max_genes: int,
        seed: int,
    ) -> None:
        self.matrix = matrix if sp.isspmatrix_csr(matrix) else sp.csr_matrix(matrix)
        self.column_token_ids = np.asarray(column_token_ids, dtype=np.int64)
        self.term_ids = term_ids
        self.rows = np.asarray(rows, dtype=np.int64)
        self.settings = {"scheme": scheme, "input_kind": input_kind, "max_genes": max_genes, "seed": seed}
        check_values(self.matrix.data, where="the training matrix")  # once, so that items can skip the check

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, bool, np.ndarray]:
        row = self.rows[index]
        start, stop = self.matrix.indptr[row], self.matrix.indptr[row + 1]
        gene_ids, levels, complete = row_gene_words(
            self.matrix.indices[start:stop], self.matrix.data[start:stop], self.column_token_ids, **self.settings
        )
        return gene_ids, levels, complete, self.term_ids[row]


class CSentenceCollator:
    """Builds and right-pads the c-sentences of a batch.

    Each cell becomes an annotation sentence (genes, then its metadata terms in a random key order, each
    after its query token) with probability ``annotate_fraction``, else a generation sentence (a random subset
    of its terms as conditions, each dropped with probability ``condition_dropout``, then its genes). The
    choices come from a generator seeded with ``seed``, so a run is reproducible.
    """

    def __init__(
        self,
        vocab: CSentenceVocab,
        *,
        begin_id: int,
        end_id: int,
        pad_id: int,
        annotate_fraction: float = 0.5,
        condition_dropout: float = 0.3,
        seed: int = 0,
    ) -> None:
        if not 0.0 <= annotate_fraction <= 1.0 or not 0.0 <= condition_dropout <= 1.0:
            raise ValueError("annotate_fraction and condition_dropout must be in [0, 1]")
        self.vocab = vocab
        self.ids = {"begin_id": begin_id, "end_id": end_id}
        self.pad_id = pad_id
        self.annotate_fraction, self.condition_dropout = annotate_fraction, condition_dropout
        self.rng = np.random.default_rng(seed)

    def sentence(self, gene_ids, levels, complete, term_ids):
        keys = self.vocab.keys
        terms = {key: int(t) for key, t in zip(keys, term_ids, strict=True) if t >= 0}
        if self.rng.random() < self.annotate_fraction:
            order = [keys[i] for i in self.rng.permutation(len(keys))]
            return annotation_sentence(self.vocab, gene_ids, levels, complete, terms, order, **self.ids)
        kept = {key: t for key, t in terms.items() if self.rng.random() >= self.condition_dropout}
        return generation_sentence(self.vocab, kept, gene_ids, levels, complete, **self.ids)

    def __call__(self, items) -> dict[str, torch.Tensor]:
        sentences = [self.sentence(*item) for item in items]
        length = max(len(s) for s in sentences)
        out = {
            ENTITIES: torch.full((len(sentences), length), self.pad_id, dtype=torch.long),
            VALUES: torch.zeros((len(sentences), length), dtype=torch.long),
        }
        for name in (ENTITY_TARGET, VALUE_TARGET, METADATA_TARGET):
            out[name] = torch.zeros((len(sentences), length), dtype=torch.bool)
        for i, s in enumerate(sentences):
            n = len(s)
            out[ENTITIES][i, :n] = torch.from_numpy(s.entities)
            out[VALUES][i, :n] = torch.from_numpy(s.values)
            out[ENTITY_TARGET][i, :n] = torch.from_numpy(s.entity_target)
            out[VALUE_TARGET][i, :n] = torch.from_numpy(s.value_target)
            out[METADATA_TARGET][i, :n] = torch.from_numpy(s.metadata_target)
        return out
