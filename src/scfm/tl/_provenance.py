"""Provenance records written to ``adata.uns["scfm"][key_added]``."""

from __future__ import annotations

from typing import Any

from anndata import AnnData


def write_provenance(adata: AnnData, key_added: str, record: dict[str, Any]) -> None:
    """Store ``record`` (h5ad-serialisable: no ``None``) under ``adata.uns["scfm"][key_added]``."""
    from scfm import __version__

    clean = {key: ("none" if value is None else value) for key, value in record.items()}
    clean["scfm_version"] = __version__
    adata.uns.setdefault("scfm", {})
    adata.uns["scfm"][key_added] = clean


def checkpoint_and_genes(pretrained, alignment, source) -> dict[str, Any]:
    """Return the fields every model-based tool records.

    They say which checkpoint, which genes matched and which matrix was read.
    """
    return {
        **pretrained.provenance(),
        "genes_matched": alignment.n_matched,
        "genes_total": alignment.n_vars,
        "gene_source": alignment.source,
        "gene_id_type": alignment.id_type,
        "genes_casefold": alignment.n_casefold,
        "matrix": source.label,
    }
