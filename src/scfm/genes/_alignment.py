"""The result of aligning an AnnData's genes to a vocabulary, and its reports."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ._resolve import AMBIGUOUS, DUPLICATE, MATCH_KINDS, UNMATCHED

_N_EXAMPLES = 10
_KIND_WORDS = {
    "case": "by case-insensitive match",
    "ensembl": "via Ensembl ids",
    "alias": "by alias or previous symbol",
}


def _frozen(values: Any, dtype: Any) -> np.ndarray | None:
    if values is None:
        return None
    out = np.array(values, dtype=dtype)
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class GeneAlignment:
    """Which columns of an AnnData map to which vocabulary ids, and how each gene matched.

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
        ``"symbol"`` or ``"ensembl"``: what most names of ``source`` look like.
    n_casefold
        How many genes matched only after case folding.
    unmatched_examples
        Up to 10 names that did not match the vocabulary.
    kinds
        Per column: ``"direct"``, ``"case"``, ``"ensembl"``, ``"alias"`` (matched that way), ``"unmatched"``,
        ``"ambiguous"`` (an Ensembl id or alias of several genes: not guessed) or ``"duplicate"`` (resolved to a token
        that another column keeps). ``None`` for alignments built by hand.
    names
        Per column: the name that was matched (``None`` where missing or not a string).
    tokens
        Per column: the vocabulary token the name resolved to (``""`` if none), also for dropped duplicates.
    via
        Per column: the official symbol(s) of the gene table the name went through (``""`` if none;
        ``"A|B"`` for an ambiguous name).
    var_names
        ``var_names`` of the AnnData (index of :meth:`report`).
    gene_id_type, species, aliases
        The resolution rules used (see :func:`scfm.genes.align_genes`).
    """

    var_index: np.ndarray
    token_ids: np.ndarray
    n_vars: int
    source: str
    id_type: str
    n_casefold: int
    unmatched_examples: tuple[str, ...]
    kinds: np.ndarray | None = None
    names: np.ndarray | None = None
    tokens: np.ndarray | None = None
    via: np.ndarray | None = None
    var_names: np.ndarray | None = None
    gene_id_type: str = "auto"
    species: str = "human"
    aliases: bool = False

    def __post_init__(self) -> None:
        var_index = _frozen(self.var_index, np.int64)
        token_ids = _frozen(self.token_ids, np.int64)
        if var_index.shape != token_ids.shape or var_index.ndim != 1:
            raise ValueError("var_index and token_ids must be 1-d arrays of equal length")
        object.__setattr__(self, "var_index", var_index)
        object.__setattr__(self, "token_ids", token_ids)
        for field in ("kinds", "names", "tokens", "via", "var_names"):
            values = _frozen(getattr(self, field), object)
            if values is not None and values.shape != (self.n_vars,):
                raise ValueError(f"{field} must have one entry per column ({self.n_vars}), got shape {values.shape}")
            object.__setattr__(self, field, values)

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

    def restrict(self, token_ids: np.ndarray) -> GeneAlignment:
        """Return the same alignment keeping only the genes whose vocabulary id is in ``token_ids``."""
        keep = np.isin(self.token_ids, token_ids)
        return dataclasses.replace(self, var_index=self.var_index[keep], token_ids=self.token_ids[keep])

    def counts(self) -> dict[str, int]:
        """Count genes per match kind (kept genes only) and unmatched, ambiguous and duplicate columns."""
        if self.kinds is None:
            return {
                "direct": self.n_matched - self.n_casefold,
                "case": self.n_casefold,
                "ensembl": 0,
                "alias": 0,
                UNMATCHED: self.n_vars - self.n_matched,
                AMBIGUOUS: 0,
                DUPLICATE: 0,
            }
        kept = pd.Series(self.kinds[self.var_index]).value_counts()
        every = pd.Series(self.kinds).value_counts()
        out = {kind: int(kept.get(kind, 0)) for kind in MATCH_KINDS}
        out.update({kind: int(every.get(kind, 0)) for kind in (UNMATCHED, AMBIGUOUS, DUPLICATE)})
        return out

    def ambiguous(self) -> dict[str, list[str]]:
        """Names that map to several genes of the table (not guessed), with the official symbols they could mean."""
        if self.kinds is None:
            return {}
        rows = np.flatnonzero(self.kinds == AMBIGUOUS)
        return {str(self.names[r]): str(self.via[r]).split("|") for r in rows}

    def report(self) -> pd.DataFrame:
        """One row per column of the AnnData: how its name matched.

        Columns: ``name`` (the name matched), ``match`` (kind, see :attr:`kinds`), ``token`` (the vocabulary token
        it resolved to), ``via`` (official symbol(s) of the gene table it went through), ``kept`` (the column is fed
        to the model). The index is ``var_names``.
        """
        if self.kinds is None:
            raise ValueError("this alignment was built by hand and holds no per-gene report; use align_genes")
        kept = np.zeros(self.n_vars, dtype=bool)
        kept[self.var_index] = True
        index = pd.Index(self.var_names if self.var_names is not None else np.arange(self.n_vars), name="var_names")
        return pd.DataFrame(
            {
                "name": pd.array(self.names, dtype="string"),
                "match": pd.Categorical(self.kinds, categories=[*MATCH_KINDS, UNMATCHED, AMBIGUOUS, DUPLICATE]),
                "token": self.tokens.astype(str),
                "via": self.via.astype(str),
                "kept": kept,
            },
            index=index,
        )

    def summary(self) -> str:
        """One-line human-readable description."""
        kind = "Ensembl ids" if self.id_type == "ensembl" else "symbols"
        counts = self.counts()
        details = [f"{counts[k]} {_KIND_WORDS[k]}" for k in ("ensembl", "case", "alias") if counts[k]]
        if counts[AMBIGUOUS]:
            details.append(f"{counts[AMBIGUOUS]} ambiguous, not matched")
        if counts[DUPLICATE]:
            details.append(f"{counts[DUPLICATE]} dropped as duplicates")
        detail = "; ".join([kind, *details])
        return (
            f"{self.n_matched} of {self.n_vars} genes ({100 * self.fraction_matched:.1f}%) "
            f"match the vocabulary via {self.source} ({detail})"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable provenance record."""
        counts = self.counts()
        ambiguous = [f"{name} -> {'|'.join(genes)}" for name, genes in list(self.ambiguous().items())[:_N_EXAMPLES]]
        return {
            "n_vars": int(self.n_vars),
            "n_matched": self.n_matched,
            "fraction_matched": float(self.fraction_matched),
            "source": self.source,
            "id_type": self.id_type,
            "n_casefold": int(self.n_casefold),
            "n_direct": counts["direct"],
            "n_ensembl": counts["ensembl"],
            "n_alias": counts["alias"],
            "n_ambiguous": counts[AMBIGUOUS],
            "n_duplicate": counts[DUPLICATE],
            "gene_id_type": self.gene_id_type,
            "species": self.species,
            "aliases": bool(self.aliases),
            "unmatched_examples": list(self.unmatched_examples),
            "ambiguous_examples": ambiguous,
        }
