"""The human gene table shipped with scfm: official symbols, Ensembl gene ids, aliases and previous symbols."""

from __future__ import annotations

import functools
import gzip
import json
from collections import defaultdict
from dataclasses import dataclass
from importlib import resources
from typing import Any

TABLE_FILE = "human_genes.tsv.gz"
META_FILE = "human_genes.json"


@dataclass(frozen=True)
class GeneTable:
    """Lookups built from the shipped table (see ``docs/genes.md``); all keys are upper-cased.

    Attributes
    ----------
    official
        Upper-cased official symbol -> the official symbol.
    ensembl
        Ensembl gene id without version -> official symbols (several for 350 ids).
    alias
        Upper-cased alias or previous symbol -> official symbols of the genes that carry it.
    aliases_of
        Official symbol -> its aliases and previous symbols.
    meta
        Source, date and counts of the table (``human_genes.json``).
    """

    official: dict[str, str]
    ensembl: dict[str, tuple[str, ...]]
    alias: dict[str, tuple[str, ...]]
    aliases_of: dict[str, tuple[str, ...]]
    meta: dict[str, Any]

    def symbols_for_ensembl(self, ensembl_id: str) -> tuple[str, ...]:
        """Official symbols of a version-stripped, upper-cased Ensembl gene id (empty when unknown)."""
        return self.ensembl.get(ensembl_id, ())

    def symbols_for_alias(self, name: str) -> tuple[str, ...]:
        """Official symbols of the genes that carry ``name`` as alias or previous symbol (case-insensitive)."""
        return self.alias.get(name.upper(), ())

    def official_symbol(self, name: str) -> str | None:
        """Return the official symbol equal to ``name`` up to case, or ``None``."""
        return self.official.get(name.upper())

    def ensembl_ids(self) -> dict[str, list[str]]:
        """Official symbol -> its Ensembl gene ids (the inverse of :attr:`ensembl`)."""
        out: dict[str, list[str]] = defaultdict(list)
        for ensembl_id, symbols in self.ensembl.items():
            for symbol in symbols:
                out[symbol].append(ensembl_id)
        return dict(out)


def _split(field: str) -> tuple[str, ...]:
    return tuple(item for item in field.split("|") if item)


@functools.cache
def human_gene_table() -> GeneTable:
    """Load the shipped human gene table once per process (about 0.5 s)."""
    folder = resources.files("scfm.genes") / "data"
    meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    with (folder / TABLE_FILE).open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as fh:
        header = fh.readline().rstrip("\n").split("\t")
        if header != ["symbol", "ensembl_ids", "aliases"]:
            raise RuntimeError(f"the shipped gene table has unexpected columns {header}; reinstall scfm")
        official: dict[str, str] = {}
        ensembl: dict[str, list[str]] = defaultdict(list)
        alias: dict[str, list[str]] = defaultdict(list)
        aliases_of: dict[str, tuple[str, ...]] = {}
        for line in fh:
            symbol, ids, names = line.rstrip("\n").split("\t")
            official[symbol.upper()] = symbol
            for ensembl_id in _split(ids):
                ensembl[ensembl_id].append(symbol)
            names_tuple = _split(names)
            aliases_of[symbol] = names_tuple
            for name in names_tuple:
                owners = alias[name.upper()]
                if symbol not in owners:
                    owners.append(symbol)
    return GeneTable(
        official=official,
        ensembl={k: tuple(v) for k, v in ensembl.items()},
        alias={k: tuple(v) for k, v in alias.items()},
        aliases_of=aliases_of,
        meta=meta,
    )
