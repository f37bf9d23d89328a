"""Provenance records written to ``adata.uns["scfm"][key_added]``."""

from __future__ import annotations

from typing import Any

from anndata import AnnData


def check_anndata(adata: object, what: str = "adata") -> None:
    """Raise ``TypeError`` unless ``adata`` is an AnnData (a DataFrame, an array or ``None`` is a clear error)."""
    if not isinstance(adata, AnnData):
        raise TypeError(
            f"{what} must be an AnnData, got {type(adata).__name__}; wrap a matrix with anndata.AnnData(X, obs=..., "
            "var=...)"
        )


def check_result_key(adata: AnnData, key_added: object, what: str = "key_added") -> None:
    """Check, before anything is computed or written, that results can be stored under ``key_added``.

    Raises
    ------
    ValueError
        ``key_added`` is not a non-empty string without ``"/"`` (h5ad files cannot store such keys).
    TypeError
        ``adata.uns["scfm"]`` exists but is not the dict of scfm provenance records.
    """
    if not isinstance(key_added, str) or not key_added or "/" in key_added:
        raise ValueError(f"{what} must be a non-empty string without '/', got {key_added!r}")
    existing = adata.uns.get("scfm")
    if existing is not None and not isinstance(existing, dict):
        raise TypeError(
            f"adata.uns['scfm'] holds a {type(existing).__name__}, not the dict of scfm provenance records; "
            "rename or delete it before running an scfm tool"
        )


def write_provenance(adata: AnnData, key_added: str, record: dict[str, Any]) -> None:
    """Store ``record`` under ``adata.uns["scfm"][key_added]``.

    A ``None`` field, at any depth of nested dicts, is left out: missing means "not given" (h5ad cannot store
    ``None``, and the string ``"none"`` would read as a value).
    """
    from scfm import __version__

    clean = without_none(record)
    clean["scfm_version"] = __version__
    adata.uns.setdefault("scfm", {})
    adata.uns["scfm"][key_added] = clean


def without_none(record: dict[str, Any]) -> dict[str, Any]:
    """Return ``record`` without its ``None`` fields, recursively through nested dicts."""
    return {
        key: without_none(value) if isinstance(value, dict) else value
        for key, value in record.items()
        if value is not None
    }


def gene_fields(alignment, prefix: str = "", rules: bool = True) -> dict[str, Any]:
    """Return how the genes matched: counts by match kind, the source read and (``rules``) the rules asked.

    Every field name starts with ``prefix`` (e.g. ``"reference_"`` for the reference of :func:`scfm.tl.annotate`).
    """
    counts = alignment.counts()
    fields = {
        "genes_matched": alignment.n_matched,
        "genes_total": alignment.n_vars,
        "gene_source": alignment.source,
        "gene_id_type": alignment.id_type,
        "genes_direct": counts["direct"],
        "genes_casefold": alignment.n_casefold,
        "genes_ensembl": counts["ensembl"],
        "genes_alias": counts["alias"],
        "genes_ambiguous": counts["ambiguous"],
        "genes_duplicate": counts["duplicate"],
    }
    if rules:
        fields["gene_rules"] = {
            "gene_id_type": alignment.gene_id_type,
            "species": alignment.species,
            "aliases": bool(alignment.aliases),
        }
    return {prefix + key: value for key, value in fields.items()}


def checkpoint_and_genes(pretrained, alignment, source) -> dict[str, Any]:
    """Return the fields every model-based tool records.

    They say which checkpoint, which genes matched (and how many by each match kind: direct, case-insensitive,
    Ensembl id, alias; ambiguous names and dropped duplicates) and which matrix was read.
    """
    return {**pretrained.provenance(), **gene_fields(alignment), "matrix": source.label}
