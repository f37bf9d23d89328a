"""Plotting."""

from ._benchmark import benchmark
from ._embedding import embedding_comparison
from ._perturbation import perturbation

__all__ = ["benchmark", "embedding_comparison", "perturbation"]
