"""Alignment of ``adata.var`` gene names to a :class:`~scfm.genes.GeneVocab`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from ._alignment import GeneAlignment
from ._ids import (
    HUMAN_ENSEMBL_PATTERN,
    IdType,
    clean_names,
    detect_id_type,
    is_ensembl,
    is_string_column,
    strip_version,
)
from ._resolve import (
    AMBIGUOUS,
    DUPLICATE,
    GENE_ID_TYPES,
    MATCH_KINDS,
    SPECIES,
    GeneIdType,
    Resolved,
    Species,
    resolve_names,
)
from ._table import human_gene_table
from ._vocab import GeneVocab

SYMBOL_COLUMNS: tuple[str, ...] = (
    "gene_symbols",
    "gene_symbol",
    "symbol",
    "symbols",
    "feature_name",
    "gene_name",
    "gene_names",
    "gene_short_name",
    "name",
)
ENSEMBL_COLUMNS: tuple[str, ...] = (
    "gene_ids",
    "gene_id",
    "ensembl_id",
    "ensembl_ids",
    "ensembl_gene_id",
    "ensembl",
    "feature_id",
)
_N_EXAMPLES = 10


class GeneKeyError(KeyError, ValueError):
    """A ``gene_key`` that is not a column of ``var`` (catchable as ``KeyError`` or ``ValueError``)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass
class _Match:
    """Names of one source resolved to the vocabulary, with duplicates settled."""

    source: str
    names: np.ndarray  # cleaned names, None where unusable
    resolved: Resolved
    keep: np.ndarray  # bool per column: the column is fed to the model
    same_name: np.ndarray  # bool per column: dropped because the same name was given by an earlier column

    @property
    def n_unique(self) -> int:
        return int(np.count_nonzero(self.keep))

    def kinds(self) -> np.ndarray:
        kinds = self.resolved.kinds.copy()
        kinds[(self.resolved.ids >= 0) & ~self.keep] = DUPLICATE
        return kinds


def _settle_duplicates(resolved: Resolved) -> tuple[np.ndarray, np.ndarray]:
    """Keep one column per token: the best match kind wins, then the first column.

    Returns ``keep`` and ``same_name`` (a dropped column whose name, as matched, equals the winner's: the same name
    given twice, which ``on_duplicate`` governs).
    """
    n = resolved.ids.shape[0]
    keep = np.zeros(n, dtype=bool)
    same_name = np.zeros(n, dtype=bool)
    rows = np.flatnonzero(resolved.ids >= 0)
    if rows.size == 0:
        return keep, same_name
    rank = np.array([MATCH_KINDS.index(k) for k in resolved.kinds[rows]], dtype=np.int64)
    table = pd.DataFrame({"row": rows, "token": resolved.ids[rows], "rank": rank}).sort_values(
        ["rank", "row"], kind="stable"
    )
    first = ~table["token"].duplicated(keep="first").to_numpy()
    keep[table["row"].to_numpy()[first]] = True
    losers = table[~first]
    if len(losers):
        winners = table[first].set_index("token")
        win_row = winners.loc[losers["token"], "row"].to_numpy()
        win_rank = winners.loc[losers["token"], "rank"].to_numpy()
        loser_rows = losers["row"].to_numpy()
        same = (win_rank == losers["rank"].to_numpy()) & (resolved.keys[loser_rows] == resolved.keys[win_row])
        same_name[loser_rows[same]] = True
    return keep, same_name


def _match(
    source: str, values: object, vocab: GeneVocab, gene_id_type: GeneIdType, species: Species, aliases: bool
) -> _Match:
    names = clean_names(values)
    resolved = resolve_names(names, vocab, gene_id_type=gene_id_type, species=species, aliases=aliases)
    keep, same_name = _settle_duplicates(resolved)
    return _Match(source, names, resolved, keep, same_name)


def _candidate_columns(var: pd.DataFrame, gene_id_type: GeneIdType) -> list[str]:
    usual = {"symbol": SYMBOL_COLUMNS, "ensembl": ENSEMBL_COLUMNS}.get(gene_id_type, SYMBOL_COLUMNS + ENSEMBL_COLUMNS)
    return [c for c in usual if c in var.columns and is_string_column(var[c])]


def _string_columns(var: pd.DataFrame) -> list[str]:
    return [str(c) for c in var.columns if is_string_column(var[c])]


def _quote_examples(items: list[str], n: int = 5) -> str:
    shown = ", ".join(repr(x) for x in items[:n])
    return shown + (", ..." if len(items) > n else "")


_PROBE_PATTERN = re.compile(r"^X?\d+(_[a-z])?_at$")


def _look_like_probe_ids(names: list[str]) -> bool:
    """Most names end like Affymetrix probe sets (``219340_s_at``, ``X202418_at``)."""
    if not names:
        return False
    probes = sum(bool(_PROBE_PATTERN.match(str(n))) for n in names)
    return probes >= 0.8 * len(names)


def _ensembl_hint(best: _Match, var: pd.DataFrame, label: str, species: Species) -> str:
    columns = _string_columns(var)
    listed = f"string columns of var: {columns}" if columns else "var has no string columns; add one with symbols"
    present = [n for n in best.names if n is not None and is_ensembl(n)]
    human = sum(1 for n in present if HUMAN_ENSEMBL_PATTERN.match(n))
    if human < len(present) / 2:
        return (
            f"{label} like non-human (e.g. mouse) Ensembl gene ids, which scfm cannot map offline (it ships a human "
            f"gene table only); pass gene_key='<column with symbols>' ({listed}) and species='mouse'"
        )
    if species == "mouse":
        return (
            f"{label} like human Ensembl gene ids but species='mouse' does not use the human gene table; pass "
            f"species='human', or gene_key='<column with symbols>' ({listed})"
        )
    table = human_gene_table()
    in_table = sum(1 for n in present if table.symbols_for_ensembl(strip_version(n)))
    return (
        f"{label} like Ensembl gene ids; {in_table} of {len(present)} are in scfm's human gene table (NCBI "
        f"org.Hs.eg.db, 2022-09-12) and the vocabulary uses gene symbols, so the rest cannot be resolved; "
        f"pass gene_key='<column with symbols>' ({listed})"
    )


def _too_few_error(
    best: _Match,
    var: pd.DataFrame,
    vocab: GeneVocab,
    min_genes: int,
    var_names_type: IdType,
    rules: tuple[GeneIdType, Species, bool],
) -> str:
    gene_id_type, species, aliases = rules
    n_matched = best.n_unique
    unmatched = [n for n in best.names[best.resolved.ids < 0] if n is not None]
    head = f"only {n_matched} of {var.shape[0]} genes match the vocabulary"
    if n_matched < min_genes:
        head += f" (min_genes={min_genes})"
    if unmatched:
        head += f" (unmatched e.g. {_quote_examples(unmatched)})"
    n_ambiguous = int(np.count_nonzero(best.resolved.kinds == AMBIGUOUS))
    if n_ambiguous:
        head += f"; {n_ambiguous} names map to several genes and are not guessed"
    source_type = detect_id_type(best.names)
    label = "var_names look" if best.source == "var_names" else f"{best.source} looks"
    if gene_id_type == "ensembl" and source_type == "symbol":
        hint = f"gene_id_type='ensembl' but {label} like gene symbols; pass gene_id_type='auto'"
    elif gene_id_type == "symbol" and source_type == "ensembl":
        hint = f"{label} like Ensembl gene ids but gene_id_type='symbol'; pass gene_id_type='auto'"
    elif source_type == "ensembl" or (best.source == "var_names" and var_names_type == "ensembl"):
        hint = _ensembl_hint(best, var, label, species)
    elif _look_like_probe_ids(unmatched):
        hint = (
            f"{best.source} look like microarray probe-set ids (e.g. Affymetrix '..._at'), not gene symbols; map "
            "them to symbols with the array's annotation (one row per gene) and pass gene_key='<column with symbols>'"
        )
    else:
        hint = "check that var_names (or gene_key) hold human gene symbols"
        if not aliases and species == "human":
            with_aliases = _match(best.source, best.names, vocab, gene_id_type, species, True)
            gain = with_aliases.n_unique - n_matched
            if gain > 0:
                hint += f"; {gain} more genes match through aliases and previous symbols with aliases=True"
    return f"{head}; {hint}"


def _duplicate_error(match: _Match) -> str:
    ids = match.resolved.ids
    dup_ids = np.unique(ids[match.same_name])
    first_pos = np.flatnonzero(match.keep & np.isin(ids, dup_ids))
    examples = [str(match.names[p]) for p in first_pos]
    folded = bool(np.any(match.resolved.kinds[match.same_name] == "case"))
    how = " (after case-insensitive matching)" if folded else ""
    return (
        f"{len(dup_ids)} gene names occur more than once in {match.source}{how} (e.g. {_quote_examples(examples)}); "
        "make them unique with adata.var_names_make_unique() or aggregate the duplicates, "
        "or pass on_duplicate='first' to use the first occurrence"
    )


def _check_rules(on_duplicate: str, gene_id_type: str, species: str, aliases: object) -> None:
    if on_duplicate not in ("error", "first"):
        raise ValueError(f"on_duplicate must be 'error' or 'first', got {on_duplicate!r}")
    if gene_id_type not in GENE_ID_TYPES:
        raise ValueError(f"gene_id_type must be one of {list(GENE_ID_TYPES)}, got {gene_id_type!r}")
    if species not in SPECIES:
        raise ValueError(
            f"species must be one of {list(SPECIES)}, got {species!r} (other species: map symbols to human "
            "orthologs first and pass species='human')"
        )
    if not isinstance(aliases, bool | np.bool_):
        raise TypeError(f"aliases must be True or False, got {aliases!r}")


def align_genes(
    var: pd.DataFrame,
    vocab: GeneVocab,
    *,
    gene_key: str | None = None,
    min_genes: int = 50,
    on_duplicate: Literal["error", "first"] = "error",
    gene_id_type: GeneIdType = "auto",
    species: Species = "human",
    aliases: bool = False,
) -> GeneAlignment:
    """Match the genes of an AnnData to a vocabulary of gene symbols.

    Each name is matched, in this order (see ``docs/genes.md``):

    1. ``"direct"``: exactly (a vocabulary may also hold Ensembl ids).
    2. ``"case"``: case-insensitively, both sides upper-cased (mouse ``Actb`` meets human ``ACTB``); an
       upper-cased form shared by several vocabulary genes does not match.
    3. ``"ensembl"`` (human): an Ensembl gene id, with or without version suffix, is mapped through scfm's
       shipped human gene table to its official symbol, which matches the vocabulary itself (any case) or, when
       the vocabulary holds an older symbol of the gene, through its one unambiguous previous symbol.
    4. ``"alias"`` (human, only with ``aliases=True``): a symbol still unmatched that is an alias or previous
       symbol of exactly one gene (or the official symbol of a gene the vocabulary knows under an older symbol).

    An Ensembl id or alias of several genes is reported as ``"ambiguous"`` and not matched. When several columns
    resolve to one vocabulary token, the better kind wins (direct, then case, Ensembl, alias), then the first
    column; the others are dropped and reported as ``"duplicate"``. The same name given twice (equal up to case or
    Ensembl version) is governed by ``on_duplicate``. Missing, empty or non-string names are simply unmatched.

    Parameters
    ----------
    var
        ``adata.var``; its index holds the var_names. It is not modified.
    vocab
        The vocabulary.
    gene_key
        Column of ``var`` holding gene names. If ``None``, var_names are used; when fewer than half of them match
        and a usual column exists (symbols: ``gene_symbols``, ``feature_name``, ``gene_name``, ...; Ensembl ids:
        ``gene_ids``, ``gene_id``, ``ensembl_id``, ...), those columns are tried too and the source with most
        matches wins.
    min_genes
        Minimum number of matched genes.
    on_duplicate
        What to do when the same name occurs in several columns (equal up to case, or Ensembl ids equal up to their
        version): ``"error"`` raises, ``"first"`` keeps the first occurrence.
    gene_id_type
        ``"auto"``: names that look like Ensembl gene ids (``ENSG...``) are resolved as such, the others as symbols
        (a mixed column works). ``"symbol"``: every name is a symbol (no Ensembl resolution, only symbol columns
        are tried). ``"ensembl"``: every name is an Ensembl id (only Ensembl columns are tried).
    species
        ``"human"``: the shipped human gene table resolves Ensembl ids and, with ``aliases=True``, aliases.
        ``"mouse"``: symbols match exactly or case-insensitively (mouse ``Actb`` -> human ``ACTB``, a proxy for
        orthology); no human table is used and mouse Ensembl ids cannot be resolved.
    aliases
        Also resolve unmatched symbols through aliases and previous symbols (off by default: it can change which
        genes a dataset feeds the model, hence its embeddings).

    Returns
    -------
    GeneAlignment
        Matched column positions, their vocabulary ids, and how each column matched (``report()``).

    Raises
    ------
    KeyError
        If ``gene_key`` is not a column of ``var`` (the error is also a ``ValueError``).
    ValueError
        If ``var`` is empty, fewer than ``min_genes`` (or no) genes match, a name is duplicated and
        ``on_duplicate="error"``, or a rule is not one of its choices.
    """
    _check_rules(on_duplicate, gene_id_type, species, aliases)
    n_vars = int(var.shape[0])
    if n_vars == 0:
        raise ValueError("the AnnData has no genes (n_vars == 0)")
    aliases = bool(aliases)

    var_names_type = detect_id_type(clean_names(var.index))
    if gene_key is not None:
        if gene_key not in var.columns:
            columns = [str(c) for c in var.columns]
            raise GeneKeyError(f"gene_key={gene_key!r} is not a column of var; available columns: {columns}")
        best = _match(f"var[{gene_key!r}]", var[gene_key], vocab, gene_id_type, species, aliases)
    else:
        best = _match("var_names", var.index, vocab, gene_id_type, species, aliases)
        if best.n_unique < n_vars / 2:
            for column in _candidate_columns(var, gene_id_type):
                candidate = _match(f"var[{column!r}]", var[column], vocab, gene_id_type, species, aliases)
                if candidate.n_unique > best.n_unique:
                    best = candidate

    n_matched = best.n_unique
    if n_matched == 0 or n_matched < min_genes:
        rules = (gene_id_type, species, aliases)
        raise ValueError(_too_few_error(best, var, vocab, min_genes, var_names_type, rules))
    if on_duplicate == "error" and best.same_name.any():
        raise ValueError(_duplicate_error(best))

    var_index = np.flatnonzero(best.keep)
    dropped = ~best.keep & ~best.same_name
    unmatched = [str(n) for n in best.names[dropped] if n is not None][:_N_EXAMPLES]
    kinds = best.kinds()
    resolved_ids = best.resolved.ids
    tokens = np.array([vocab.token(int(i)) if i >= 0 else "" for i in resolved_ids], dtype=object)
    return GeneAlignment(
        var_index=var_index,
        token_ids=resolved_ids[var_index],
        n_vars=n_vars,
        source=best.source,
        id_type=detect_id_type(best.names),
        n_casefold=int(np.count_nonzero(kinds[var_index] == "case")),
        unmatched_examples=tuple(unmatched),
        kinds=kinds,
        names=best.names,
        tokens=tokens,
        via=best.resolved.via,
        var_names=np.asarray(var.index, dtype=object),
        gene_id_type=gene_id_type,
        species=species,
        aliases=aliases,
    )
