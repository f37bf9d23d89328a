"""Preprocessing helpers: check how a dataset meets a model before running it."""

from ._overlap import gene_overlap

__all__ = ["gene_overlap"]
