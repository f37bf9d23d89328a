"""Resolution of gene names (symbols, Ensembl ids, aliases) to vocabulary ids, one name at a time.

Every name gets the id it resolves to and how (its *match kind*); which of several names resolving to one token is
kept is decided later, by :func:`scfm.genes.align_genes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ._ids import is_ensembl, strip_version
from ._table import GeneTable, human_gene_table
from ._vocab import GeneVocab

GeneIdType = Literal["auto", "symbol", "ensembl"]
Species = Literal["human", "mouse"]

#: Match kinds in priority order: when several names resolve to one token, the earliest kind wins.
MATCH_KINDS: tuple[str, ...] = ("direct", "case", "ensembl", "alias")
UNMATCHED = "unmatched"
AMBIGUOUS = "ambiguous"
DUPLICATE = "duplicate"
GENE_ID_TYPES: tuple[str, ...] = ("auto", "symbol", "ensembl")
SPECIES: tuple[str, ...] = ("human", "mouse")


@dataclass
class Resolved:
    """Per-name result of :func:`resolve_names` (all arrays have one entry per name)."""

    ids: np.ndarray  # int64 vocabulary id, -1 where the name does not resolve
    kinds: np.ndarray  # object: a MATCH_KINDS entry, UNMATCHED or AMBIGUOUS
    via: np.ndarray  # object: official symbol(s) of the gene table the name went through ("" if none)
    keys: np.ndarray  # object: the name normalised as matched (same key twice = the same name given twice)


class _VocabView:
    """Official symbols of the gene table -> vocabulary ids, memoised for one vocabulary."""

    def __init__(self, vocab: GeneVocab, table: GeneTable) -> None:
        self.vocab, self.table = vocab, table
        self._memo: dict[str, int] = {}

    def _token(self, name: str) -> int:
        tid = int(self.vocab.lookup([name])[0])
        return tid if tid >= 0 else int(self.vocab.lookup_casefold([name])[0])

    def official_token(self, symbol: str) -> int:
        """Id of an official symbol: itself (any case), else its one unambiguous previous symbol in the vocabulary.

        A previous symbol is not used when it is the official symbol of another gene or an alias of several genes:
        the vocabulary token could then mean another gene.
        """
        if symbol in self._memo:
            return self._memo[symbol]
        tid = self._token(symbol)
        if tid < 0:
            found = set()
            for name in self.table.aliases_of.get(symbol, ()):
                if self.table.official_symbol(name) is not None or len(self.table.symbols_for_alias(name)) != 1:
                    continue
                candidate = self._token(name)
                if candidate >= 0:
                    found.add(candidate)
            tid = found.pop() if len(found) == 1 else -1
        self._memo[symbol] = tid
        return tid


def _resolve_ensembl(name: str, vocab: GeneVocab, view: _VocabView | None) -> tuple[int, str, str]:
    if not is_ensembl(name):
        return -1, UNMATCHED, ""
    stripped = strip_version(name)
    tid = int(vocab.lookup([stripped])[0])
    if tid >= 0:
        return tid, "ensembl", ""
    if view is None:
        return -1, UNMATCHED, ""
    symbols = view.table.symbols_for_ensembl(stripped)
    if len(symbols) > 1:
        return -1, AMBIGUOUS, "|".join(symbols)
    if not symbols:
        return -1, UNMATCHED, ""
    tid = view.official_token(symbols[0])
    return tid, ("ensembl" if tid >= 0 else UNMATCHED), symbols[0]


def _resolve_alias(name: str, view: _VocabView) -> tuple[int, str, str]:
    official = view.table.official_symbol(name)
    if official is not None:  # an official symbol (any case) means its own gene, never another gene's alias
        symbols: tuple[str, ...] = (official,)
    else:
        symbols = view.table.symbols_for_alias(name)
    if len(symbols) > 1:
        return -1, AMBIGUOUS, "|".join(symbols)
    if not symbols:
        return -1, UNMATCHED, ""
    tid = view.official_token(symbols[0])
    return tid, ("alias" if tid >= 0 else UNMATCHED), symbols[0]


def resolve_names(
    names: np.ndarray,
    vocab: GeneVocab,
    *,
    gene_id_type: GeneIdType = "auto",
    species: Species = "human",
    aliases: bool = False,
) -> Resolved:
    """Resolve cleaned names (``None`` = unusable) to vocabulary ids.

    Parameters
    ----------
    names
        Object array from :func:`scfm.genes._ids.clean_names`.
    vocab
        Vocabulary of gene symbols (it may hold Ensembl ids too; an exact match always comes first).
    gene_id_type
        ``"auto"``: names that look like Ensembl gene ids are resolved as such, the others as symbols.
        ``"symbol"``: every name is a symbol. ``"ensembl"``: every name is an Ensembl id.
    species
        ``"human"`` uses the shipped human gene table (Ensembl ids, previous symbols, aliases); ``"mouse"`` matches
        symbols exactly and case-insensitively only.
    aliases
        Resolve symbols that are still unmatched through aliases and previous symbols (human only).
    """
    n = names.shape[0]
    ids = vocab.lookup(names)
    kinds = np.full(n, UNMATCHED, dtype=object)
    kinds[ids >= 0] = "direct"
    via = np.full(n, "", dtype=object)
    keys = names.copy()
    usable = np.array([name is not None for name in names], dtype=bool)
    if gene_id_type == "ensembl":
        as_ensembl = usable.copy()
    elif gene_id_type == "auto":
        as_ensembl = np.array([name is not None and is_ensembl(name) for name in names], dtype=bool)
    else:
        as_ensembl = np.zeros(n, dtype=bool)
    open_ = usable & (ids < 0)

    symbol_rows = np.flatnonzero(open_ & ~as_ensembl)
    folded = vocab.lookup_casefold(names[symbol_rows])
    ids[symbol_rows] = folded
    kinds[symbol_rows[folded >= 0]] = "case"
    keys[symbol_rows] = [name.upper() for name in names[symbol_rows]]

    ensembl_rows = np.flatnonzero(open_ & as_ensembl)
    alias_rows = symbol_rows[folded < 0] if aliases else symbol_rows[:0]
    needs_table = species == "human" and (ensembl_rows.size or alias_rows.size)
    view = _VocabView(vocab, human_gene_table()) if needs_table else None  # the table loads only when needed
    for row in ensembl_rows:
        ids[row], kinds[row], via[row] = _resolve_ensembl(names[row], vocab, view)
        keys[row] = strip_version(names[row])
    if view is not None:
        for row in alias_rows:
            ids[row], kinds[row], via[row] = _resolve_alias(names[row], view)
    return Resolved(ids=ids, kinds=kinds, via=via, keys=keys)
