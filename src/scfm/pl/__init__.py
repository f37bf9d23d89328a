"""Plotting."""

from ._embedding import embedding_comparison

__all__ = ["embedding_comparison"]
