"""Token, value and condition embeddings."""

from __future__ import annotations

import torch
from torch import nn


class GeneEmbedding(nn.Module):
    """Gene-token embedding followed by layer norm."""

    def __init__(self, n_tokens: int, d_model: int, padding_idx: int | None = None) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_tokens, d_model, padding_idx=padding_idx)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self.norm(self.embedding(token_ids))


class ContinuousValueEmbedding(nn.Module):
    """Embed a scalar value per token with a two-layer MLP (values clipped at ``max_value``)."""

    def __init__(self, d_model: int, dropout: float = 0.0, max_value: float = 512.0) -> None:
        super().__init__()
        self.linear1 = nn.Linear(1, d_model)
        self.linear2 = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.max_value = max_value

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        x = torch.clamp(values.unsqueeze(-1), max=self.max_value)
        x = self.linear2(torch.relu(self.linear1(x)))
        return self.dropout(self.norm(x))


class CategoryValueEmbedding(nn.Module):
    """Embed an integer bin per token (values below zero, i.e. pad/mask values, map to their own rows)."""

    def __init__(self, n_bins: int, d_model: int, n_special: int = 2) -> None:
        super().__init__()
        self.n_special = n_special
        self.embedding = nn.Embedding(n_bins + n_special, d_model)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        index = values.long() + self.n_special
        return self.norm(self.embedding(index.clamp(min=0)))


class ConditionEmbedding(nn.Module):
    """Embedding of a per-cell condition (batch, modality, perturbation)."""

    def __init__(self, n_categories: int, d_condition: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_categories, d_condition)
        self.norm = nn.LayerNorm(d_condition)

    def forward(self, category: torch.Tensor) -> torch.Tensor:
        return self.norm(self.embedding(category))
