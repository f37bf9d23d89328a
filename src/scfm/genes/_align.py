"""Alignment of ``adata.var`` gene names to a :class:`~scfm.genes.GeneVocab`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from ._ids import IdType, clean_names, detect_id_type, is_string_column
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
_N_EXAMPLES = 10


class GeneKeyError(KeyError, ValueError):
    """A ``gene_key`` that is not a column of ``var`` (catchable as ``KeyError`` or ``ValueError``)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True, eq=False)
class GeneAlignment:
    """Which columns of an AnnData map to which vocabulary ids.

    Attributes
    ----------
    var_index
        ``int64`` positions (columns of ``adata``) of matched genes, ascending.
    token_ids
        ``int64`` vocabulary ids of those genes, same length; no id appears twice.
    n_vars
        ``adata.n_vars``.
    source
        Where the names came from: ``"var_names"`` or ``"var['<column>']"``.
    id_type
        ``"symbol"`` or ``"ensembl"``: what the names of ``source`` look like.
    n_casefold
        How many genes matched only after case folding.
    unmatched_examples
        Up to 10 names that did not match the vocabulary.
    """

    var_index: np.ndarray
    token_ids: np.ndarray
    n_vars: int
    source: str
    id_type: str
    n_casefold: int
    unmatched_examples: tuple[str, ...]

    def __post_init__(self) -> None:
        var_index = np.array(self.var_index, dtype=np.int64)
        token_ids = np.array(self.token_ids, dtype=np.int64)
        if var_index.shape != token_ids.shape or var_index.ndim != 1:
            raise ValueError("var_index and token_ids must be 1-d arrays of equal length")
        var_index.setflags(write=False)
        token_ids.setflags(write=False)
        object.__setattr__(self, "var_index", var_index)
        object.__setattr__(self, "token_ids", token_ids)

    @property
    def n_matched(self) -> int:
        """Number of matched genes."""
        return int(self.var_index.shape[0])

    @property
    def fraction_matched(self) -> float:
        """``n_matched / n_vars`` (0.0 if there are no genes)."""
        return self.n_matched / self.n_vars if self.n_vars else 0.0

    def column_token_ids(self) -> np.ndarray:
        """Vocabulary id for every column of the AnnData, ``-1`` where unmatched (``int64``, length ``n_vars``)."""
        out = np.full(self.n_vars, -1, dtype=np.int64)
        out[self.var_index] = self.token_ids
        return out

    def summary(self) -> str:
        """One-line human-readable description."""
        kind = "Ensembl ids" if self.id_type == "ensembl" else "symbols"
        detail = f"{kind}; {self.n_casefold} by case-insensitive match" if self.n_casefold else kind
        return (
            f"{self.n_matched} of {self.n_vars} genes ({100 * self.fraction_matched:.1f}%) "
            f"match the vocabulary via {self.source} ({detail})"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable provenance record."""
        return {
            "n_vars": int(self.n_vars),
            "n_matched": self.n_matched,
            "fraction_matched": float(self.fraction_matched),
            "source": self.source,
            "id_type": self.id_type,
            "n_casefold": int(self.n_casefold),
            "unmatched_examples": list(self.unmatched_examples),
        }


@dataclass
class _Match:
    source: str
    names: np.ndarray  # cleaned names, None where unusable
    ids: np.ndarray  # vocab id per column, -1 where unmatched
    casefold: np.ndarray  # bool per column: matched only after case folding
    duplicated: np.ndarray  # bool per column: matched a token that an earlier column already matched

    @property
    def n_unique(self) -> int:
        return int(np.count_nonzero((self.ids >= 0) & ~self.duplicated))


def _match(source: str, values: Any, vocab: GeneVocab) -> _Match:
    names = clean_names(values)
    ids = vocab.lookup(names)
    unmatched = np.flatnonzero(ids < 0)
    folded = vocab.lookup_casefold(names[unmatched])
    folded[np.isin(folded, ids[ids >= 0])] = -1  # tokens claimed by an exact match are not reused
    ids[unmatched] = folded
    casefold = np.zeros(ids.shape[0], dtype=bool)
    casefold[unmatched[folded >= 0]] = True
    duplicated = np.zeros(ids.shape[0], dtype=bool)
    matched = np.flatnonzero(ids >= 0)
    duplicated[matched] = pd.Series(ids[matched]).duplicated(keep="first").to_numpy()
    return _Match(source, names, ids, casefold, duplicated)


def _symbol_candidates(var: pd.DataFrame) -> list[str]:
    return [c for c in SYMBOL_COLUMNS if c in var.columns and is_string_column(var[c])]


def _string_columns(var: pd.DataFrame) -> list[str]:
    return [str(c) for c in var.columns if is_string_column(var[c])]


def _quote_examples(items: list[str], n: int = 5) -> str:
    shown = ", ".join(repr(x) for x in items[:n])
    return shown + (", ..." if len(items) > n else "")


_PROBE_PATTERN = re.compile(r"^X?\d+(_[a-z])?_at$")


def _too_few_error(best: _Match, var: pd.DataFrame, n_matched: int, min_genes: int, var_names_type: IdType) -> str:
    unmatched = [n for n in best.names[best.ids < 0] if n is not None]
    head = f"only {n_matched} of {var.shape[0]} genes match the vocabulary"
    if n_matched < min_genes:
        head += f" (min_genes={min_genes})"
    if unmatched:
        head += f" (unmatched e.g. {_quote_examples(unmatched)})"
    source_type = detect_id_type(best.names)
    if source_type == "ensembl" or (best.source == "var_names" and var_names_type == "ensembl"):
        label = "var_names look" if best.source == "var_names" else f"{best.source} looks"
        columns = _string_columns(var)
        listed = f"string columns of var: {columns}" if columns else "var has no string columns; add one with symbols"
        hint = (
            f"{label} like Ensembl gene ids but the vocabulary uses gene symbols; "
            f"pass gene_key='<column with symbols>' ({listed})"
        )
    elif _look_like_probe_ids(unmatched):
        hint = (
            f"{best.source} look like microarray probe-set ids (e.g. Affymetrix '..._at'), not gene symbols; map "
            "them to symbols with the array's annotation (one row per gene) and pass gene_key='<column with symbols>'"
        )
    else:
        hint = "check that var_names (or gene_key) hold human gene symbols"
    return f"{head}; {hint}"


def _look_like_probe_ids(names: list[str]) -> bool:
    """Most names end like Affymetrix probe sets (``219340_s_at``, ``X202418_at``)."""
    if not names:
        return False
    probes = sum(bool(_PROBE_PATTERN.match(str(n))) for n in names)
    return probes >= 0.8 * len(names)


def _duplicate_error(match: _Match) -> str:
    dup_ids = np.unique(match.ids[match.duplicated])
    first_pos = np.flatnonzero((match.ids >= 0) & ~match.duplicated)
    first_pos = first_pos[np.isin(match.ids[first_pos], dup_ids)]
    examples = [str(match.names[p]) for p in first_pos]
    folded = bool(np.any(match.casefold[match.duplicated]))
    how = " (after case-insensitive matching)" if folded else ""
    return (
        f"{len(dup_ids)} gene names occur more than once in {match.source}{how} (e.g. {_quote_examples(examples)}); "
        "make them unique with adata.var_names_make_unique() or aggregate the duplicates, "
        "or pass on_duplicate='first' to use the first occurrence"
    )


def align_genes(
    var: pd.DataFrame,
    vocab: GeneVocab,
    *,
    gene_key: str | None = None,
    min_genes: int = 50,
    on_duplicate: Literal["error", "first"] = "error",
) -> GeneAlignment:
    """Match the genes of an AnnData to a vocabulary of gene symbols.

    Names are matched exactly first; names still unmatched are then matched case-insensitively (both sides
    upper-cased), which lets mouse Title-case symbols such as ``Actb`` match human ``ACTB``. A vocabulary token
    already claimed by an exact match is never reused by a case-insensitive one, and an upper-cased name shared by
    several vocabulary genes does not match. Missing, empty or non-string names are simply unmatched.

    Parameters
    ----------
    var
        ``adata.var``; its index holds the var_names. It is not modified.
    vocab
        The vocabulary.
    gene_key
        Column of ``var`` holding gene symbols. If ``None``, var_names are used; when fewer than half of them match
        and a usual symbol column exists (``gene_symbols``, ``feature_name``, ``gene_name``, ...), those columns are
        tried too and the source with most matches wins (e.g. Ensembl var_names with a ``gene_symbols`` column).
    min_genes
        Minimum number of matched genes.
    on_duplicate
        What to do when several columns match the same vocabulary gene (the same name twice, or names equal up to
        case): ``"error"`` raises, ``"first"`` keeps the first occurrence.

    Returns
    -------
    GeneAlignment
        Matched column positions and their vocabulary ids.

    Raises
    ------
    KeyError
        If ``gene_key`` is not a column of ``var`` (the error is also a ``ValueError``).
    ValueError
        If ``var`` is empty, fewer than ``min_genes`` (or no) genes match, or names are duplicated and
        ``on_duplicate="error"``.
    """
    if on_duplicate not in ("error", "first"):
        raise ValueError(f"on_duplicate must be 'error' or 'first', got {on_duplicate!r}")
    n_vars = int(var.shape[0])
    if n_vars == 0:
        raise ValueError("the AnnData has no genes (n_vars == 0)")

    var_names_type = detect_id_type(clean_names(var.index))
    if gene_key is not None:
        if gene_key not in var.columns:
            columns = [str(c) for c in var.columns]
            raise GeneKeyError(f"gene_key={gene_key!r} is not a column of var; available columns: {columns}")
        best = _match(f"var[{gene_key!r}]", var[gene_key], vocab)
    else:
        best = _match("var_names", var.index, vocab)
        if best.n_unique < n_vars / 2:
            for column in _symbol_candidates(var):
                candidate = _match(f"var[{column!r}]", var[column], vocab)
                if candidate.n_unique > best.n_unique:
                    best = candidate

    n_matched = best.n_unique
    if n_matched == 0 or n_matched < min_genes:
        raise ValueError(_too_few_error(best, var, n_matched, min_genes, var_names_type))
    if on_duplicate == "error" and best.duplicated.any():
        raise ValueError(_duplicate_error(best))

    keep = (best.ids >= 0) & ~best.duplicated
    var_index = np.flatnonzero(keep)
    unmatched = [str(n) for n in best.names[best.ids < 0] if n is not None][:_N_EXAMPLES]
    return GeneAlignment(
        var_index=var_index,
        token_ids=best.ids[var_index],
        n_vars=n_vars,
        source=best.source,
        id_type=detect_id_type(best.names),
        n_casefold=int(np.count_nonzero(best.casefold & keep)),
        unmatched_examples=tuple(unmatched),
    )
