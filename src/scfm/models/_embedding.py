"""What an embedding run returns, shared by the model families."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class EmbeddingResult:
    """Sample embeddings plus what provenance needs to know about the run.

    ``n_subsampled_cells`` counts samples with more known expressed genes than the context holds (scGPT
    subsamples them per cell; tGPT keeps the highest-ranked ones).
    """

    embeddings: np.ndarray
    input_kind: str
    n_empty_cells: int
    n_subsampled_cells: int
    n_tokens: int


def l2_normalise(embeddings: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm in place (all-zero rows stay zero)."""
    embeddings /= np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    return embeddings
