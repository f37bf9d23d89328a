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
