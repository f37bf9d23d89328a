"""The gene-identifier rules of :func:`~scfm.genes.align_genes`, carried by the tools' requests as one value."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._resolve import GeneIdType, Species


@dataclass(frozen=True)
class GeneRules:
    """How gene names are read: ``gene_id_type``, ``species`` and ``aliases`` of :func:`~scfm.genes.align_genes`.

    The defaults are :func:`~scfm.genes.align_genes`'s; see ``docs/genes.md``.
    """

    gene_id_type: GeneIdType = "auto"
    species: Species = "human"
    aliases: bool = False

    def as_kwargs(self) -> dict[str, Any]:
        """Return the rules as keyword arguments of :func:`~scfm.genes.align_genes`."""
        return {"gene_id_type": self.gene_id_type, "species": self.species, "aliases": self.aliases}
