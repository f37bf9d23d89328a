"""scMulan c-sentences: a cell as (entity, value) words for its expressed genes, metadata terms and task tokens.

Entities share one id space (:class:`CSentenceVocab`): the gene vocabulary's ids (special tokens and genes),
then the task tokens ``<annotate>`` and ``<generate>``, one query token ``<predict:KEY>`` per metadata key, and
the terms of every key. Values are expression levels: ``0`` for words that are not genes, ``1..n_levels`` for
genes, from fixed-width bins of ``log1p`` of the cell normalised to ``target_sum``. Fixed bins (not per-cell
quantiles) keep an absolute scale, so a generated level maps back to an expression value.

Two sentence layouts are used (``G`` is the cell's genes, highest level first; ties in a cell-seeded order):

* annotation: ``<cls> <annotate> G [<eoc>] <predict:k1> term_k1 <predict:k2> term_k2 ...``; ``<eoc>`` closes
  ``G`` only when every expressed gene fits in the context.
* generation: ``<cls> <generate> term_a term_b ... G [<eoc>]``; conditions in the vocabulary's key order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from scfm.tokenize._binning import cell_seed
from scfm.tokenize._input import InputKind, check_values
from scfm.tokenize._normalise import normalised_log_values

ANNOTATE = "<annotate>"
GENERATE = "<generate>"
NO_VALUE = 0


def query_token(key: str) -> str:
    """Return the task token that asks for the term of metadata ``key`` (e.g. ``<predict:cell_type>``)."""
    return f"<predict:{key}>"


class CSentenceVocab:
    """Entity ids of c-sentences: gene-vocabulary tokens, task tokens, metadata query tokens and terms.

    Parameters
    ----------
    n_gene_tokens
        Size of the gene vocabulary (its special tokens and genes keep their ids ``0 .. n_gene_tokens - 1``).
    metadata_terms
        Terms of each metadata key, e.g. ``{"cell_type": ["B cell", "T cell"], "tissue": ["blood"]}``. The key
        order is the order conditions take in generation sentences.
    """

    def __init__(self, n_gene_tokens: int, metadata_terms: Mapping[str, Sequence[str]]) -> None:
        self.n_gene_tokens = int(n_gene_tokens)
        self.keys = list(metadata_terms)
        self.terms = {key: [str(t) for t in metadata_terms[key]] for key in self.keys}
        for key, terms in self.terms.items():
            if len(set(terms)) != len(terms):
                raise ValueError(f"metadata key {key!r} lists a term twice")
        self.annotate_id = self.n_gene_tokens
        self.generate_id = self.n_gene_tokens + 1
        self._query_ids = {key: self.n_gene_tokens + 2 + i for i, key in enumerate(self.keys)}
        next_id = self.n_gene_tokens + 2 + len(self.keys)
        self._term_ids: dict[str, dict[str, int]] = {}
        self._entity_key = {}
        for key in self.keys:
            self._term_ids[key] = {term: next_id + i for i, term in enumerate(self.terms[key])}
            for term_id in self._term_ids[key].values():
                self._entity_key[term_id] = key
            next_id += len(self.terms[key])
        self.n_entities = next_id
        self._names = {self.annotate_id: ANNOTATE, self.generate_id: GENERATE}
        self._names.update({v: query_token(k) for k, v in self._query_ids.items()})
        for key in self.keys:
            self._names.update({v: t for t, v in self._term_ids[key].items()})

    def query_id(self, key: str) -> int:
        self._check_key(key)
        return self._query_ids[key]

    def term_id(self, key: str, term: str) -> int:
        """Entity id of ``term`` of ``key``; a ``KeyError`` names the known terms when it is not one."""
        self._check_key(key)
        try:
            return self._term_ids[key][str(term)]
        except KeyError:
            known = self.terms[key]
            shown = ", ".join(repr(t) for t in known[:10]) + (", ..." if len(known) > 10 else "")
            raise KeyError(
                f"{term!r} is not a known {key!r} term of this model ({len(known)} terms: {shown})"
            ) from None

    def term_ids(self, key: str) -> np.ndarray:
        """Entity ids of every term of ``key``, in the order of ``terms[key]``."""
        self._check_key(key)
        return np.fromiter(self._term_ids[key].values(), dtype=np.int64, count=len(self.terms[key]))

    def key_of(self, entity_id: int) -> str | None:
        """Return the metadata key whose term ``entity_id`` is, or ``None``."""
        return self._entity_key.get(int(entity_id))

    def name_of(self, entity_id: int) -> str | None:
        """Task/query token or term name of a non-gene entity; ``None`` for gene-vocabulary ids."""
        return self._names.get(int(entity_id))

    def _check_key(self, key: str) -> None:
        if key not in self._query_ids:
            raise KeyError(f"{key!r} is not a metadata key of this model (keys: {self.keys})")


@dataclass(frozen=True)
class LevelScheme:
    """Fixed-width expression levels of ``log1p`` values of cells normalised to ``target_sum``.

    Level ``b`` (``1 .. n_levels``) holds values in ``[(b - 1) * width, b * width)``; the last level is open.
    """

    n_levels: int = 10
    width: float = 0.75
    target_sum: float = 1e4

    def __post_init__(self) -> None:
        if self.n_levels < 2 or self.width <= 0 or self.target_sum <= 0:
            raise ValueError(f"invalid level scheme {self}: need n_levels >= 2, width > 0, target_sum > 0")

    def levels(self, log_values: np.ndarray) -> np.ndarray:
        """Levels ``1..n_levels`` of positive ``log1p`` values."""
        return np.minimum(np.floor(np.asarray(log_values) / self.width).astype(np.int64) + 1, self.n_levels)

    def midpoints(self) -> np.ndarray:
        """``log1p`` value at the middle of each level (index ``b - 1`` for level ``b``)."""
        return (np.arange(self.n_levels) + 0.5) * self.width


def ordered_gene_words(
    gene_ids: np.ndarray, levels: np.ndarray, *, max_genes: int, seed: int
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Return a cell's gene words, highest level first, ties in an order seeded by the cell itself.

    The words are cut to ``max_genes``.

    Returns ``(gene_ids, levels, complete)``; ``complete`` is ``False`` when genes were cut.
    """
    gene_ids = np.asarray(gene_ids, dtype=np.int64)
    levels = np.asarray(levels, dtype=np.int64)
    canonical = np.argsort(gene_ids, kind="stable")
    gene_ids, levels = gene_ids[canonical], levels[canonical]
    rng = np.random.default_rng(cell_seed(gene_ids, levels.astype(np.float32), seed))
    order = np.lexsort((rng.permutation(gene_ids.size), -levels))[:max_genes]
    return gene_ids[order], levels[order], gene_ids.size <= max_genes


def cell_gene_words(
    block: sp.csr_matrix | np.ndarray,
    column_token_ids: np.ndarray,
    *,
    scheme: LevelScheme,
    input_kind: InputKind,
    max_genes: int,
    seed: int = 0,
) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    """Gene words ``(gene_ids, levels, complete)`` of every row of a cells x genes block.

    The library size is taken over all columns of the row (genes outside the vocabulary included), as
    ``sc.pp.normalize_total`` does; only genes in the vocabulary (``column_token_ids >= 0``) become words.
    """
    column_token_ids = np.asarray(column_token_ids, dtype=np.int64)
    if block.shape[1] != column_token_ids.size:
        raise ValueError(f"the block has {block.shape[1]} columns but column_token_ids has {column_token_ids.size}")
    if max_genes < 1:
        raise ValueError(f"max_genes must be >= 1, got {max_genes}")
    csr = block if sp.isspmatrix_csr(block) else sp.csr_matrix(block)
    check_values(csr.data, where="the expression block")
    return [
        row_gene_words(
            csr.indices[csr.indptr[row] : csr.indptr[row + 1]],
            csr.data[csr.indptr[row] : csr.indptr[row + 1]],
            column_token_ids,
            scheme=scheme,
            input_kind=input_kind,
            max_genes=max_genes,
            seed=seed,
        )
        for row in range(csr.shape[0])
    ]


def row_gene_words(
    columns: np.ndarray,
    values: np.ndarray,
    column_token_ids: np.ndarray,
    *,
    scheme: LevelScheme,
    input_kind: InputKind,
    max_genes: int,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Return the gene words of one cell given its stored ``columns`` and (already validated) ``values``.

    See :func:`cell_gene_words`.
    """
    log_values = normalised_log_values(values, input_kind, scheme.target_sum)
    ids = column_token_ids[columns]
    keep = (ids >= 0) & (log_values > 0)
    return ordered_gene_words(ids[keep], scheme.levels(log_values[keep]), max_genes=max_genes, seed=seed)


@dataclass
class CSentence:
    """One c-sentence: entity ids, value ids, and which next-word targets train which loss.

    ``entity_target[i]`` / ``value_target[i]`` say whether word ``i`` is a prediction target (of the entity
    head / the value head) from the words before it; ``metadata_target[i]`` marks metadata-term targets.
    """

    entities: np.ndarray
    values: np.ndarray
    entity_target: np.ndarray
    value_target: np.ndarray
    metadata_target: np.ndarray

    def __len__(self) -> int:
        return len(self.entities)


def annotation_sentence(
    vocab: CSentenceVocab,
    gene_ids: np.ndarray,
    levels: np.ndarray,
    complete: bool,
    terms: Mapping[str, int],
    key_order: Sequence[str],
    *,
    begin_id: int,
    end_id: int,
) -> CSentence:
    """``<cls> <annotate> G [<eoc>] (<predict:k> term_k)...`` for the keys of ``key_order`` present in ``terms``.

    ``terms`` maps keys to term entity ids. Genes, ``<eoc>`` and terms are targets; query tokens are not.
    """
    gene_ids = np.asarray(gene_ids, dtype=np.int64)
    n_genes = gene_ids.size
    head = [begin_id, vocab.annotate_id]
    tail: list[int] = [end_id] if complete else []
    queried = [k for k in key_order if k in terms]
    for key in queried:
        tail += [vocab.query_id(key), int(terms[key])]
    entities = np.concatenate([head, gene_ids, tail]).astype(np.int64)
    values = np.concatenate([[NO_VALUE, NO_VALUE], levels, np.zeros(len(tail))]).astype(np.int64)
    entity_target = np.zeros(len(entities), dtype=bool)
    entity_target[2 : 2 + n_genes + int(complete)] = True
    metadata_target = np.zeros(len(entities), dtype=bool)
    term_positions = 2 + n_genes + int(complete) + 1 + 2 * np.arange(len(queried))
    metadata_target[term_positions] = True
    value_target = np.zeros(len(entities), dtype=bool)
    value_target[2 : 2 + n_genes] = True
    return CSentence(entities, values, entity_target | metadata_target, value_target, metadata_target)


def generation_sentence(
    vocab: CSentenceVocab,
    conditions: Mapping[str, int],
    gene_ids: np.ndarray,
    levels: np.ndarray,
    complete: bool,
    *,
    begin_id: int,
    end_id: int,
) -> CSentence:
    """``<cls> <generate> conditions G [<eoc>]``: conditions (key -> term id) in the vocabulary's key order.

    Genes and ``<eoc>`` are targets; the conditions are given, not predicted.
    """
    prompt = generation_prompt(vocab, conditions, begin_id=begin_id)
    gene_ids = np.asarray(gene_ids, dtype=np.int64)
    tail = [end_id] if complete else []
    entities = np.concatenate([prompt, gene_ids, tail]).astype(np.int64)
    values = np.concatenate([np.zeros(len(prompt)), levels, np.zeros(len(tail))]).astype(np.int64)
    entity_target = np.zeros(len(entities), dtype=bool)
    entity_target[len(prompt) :] = True
    value_target = np.zeros(len(entities), dtype=bool)
    value_target[len(prompt) : len(prompt) + gene_ids.size] = True
    return CSentence(entities, values, entity_target, value_target, np.zeros(len(entities), dtype=bool))


def generation_prompt(vocab: CSentenceVocab, conditions: Mapping[str, int], *, begin_id: int) -> np.ndarray:
    """``<cls> <generate>`` and the condition terms in the vocabulary's key order."""
    unknown = sorted(set(conditions) - set(vocab.keys))
    if unknown:
        raise KeyError(f"conditions name keys {unknown} that this model does not know (keys: {vocab.keys})")
    terms = [int(conditions[key]) for key in vocab.keys if key in conditions]
    return np.array([begin_id, vocab.generate_id, *terms], dtype=np.int64)


def read_sentence(
    vocab: CSentenceVocab, entities: np.ndarray, values: np.ndarray, *, special_ids: Sequence[int]
) -> dict[str, object]:
    """Decode a c-sentence: ``{"task": ..., "genes": {gene_id: level}, "metadata": {key: term}}``."""
    task, genes, metadata = None, {}, {}
    specials = set(int(s) for s in special_ids)
    for entity, value in zip(np.asarray(entities).tolist(), np.asarray(values).tolist(), strict=True):
        if entity in specials:
            continue
        if entity < vocab.n_gene_tokens:
            genes[entity] = value
        elif entity in (vocab.annotate_id, vocab.generate_id):
            task = vocab.name_of(entity)
        elif (key := vocab.key_of(entity)) is not None:
            metadata[key] = vocab.name_of(entity)
    return {"task": task, "genes": genes, "metadata": metadata}
