"""Plotting."""

from ._benchmark import benchmark
from ._embedding import embedding_comparison

__all__ = ["benchmark", "embedding_comparison"]
