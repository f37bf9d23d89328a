"""Loss functions of the pretraining and fine-tuning objectives."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over positions where ``mask`` is true (zero when nothing is masked)."""
    weight = mask.to(prediction.dtype)
    return ((prediction - target) ** 2 * weight).sum() / weight.sum().clamp(min=1.0)


def masked_zero_bce(zero_logit: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the "value is zero" logit over positions where ``mask`` is true."""
    weight = mask.to(zero_logit.dtype)
    loss = F.binary_cross_entropy_with_logits(zero_logit, (target == 0).to(zero_logit.dtype), reduction="none")
    return (loss * weight).sum() / weight.sum().clamp(min=1.0)


def elastic_cell_similarity(cell_embedding: torch.Tensor, threshold: float = 0.6) -> torch.Tensor:
    """Compute scGPT's ECS objective: push pairwise cosine similarities away from ``threshold``.

    ``mean(1 - (cos_ij - threshold)^2)`` over pairs ``i != j``; pairs above the threshold are pulled
    together, pairs below it pushed apart.
    """
    n = cell_embedding.shape[0]
    if n < 2:
        return cell_embedding.new_zeros(())
    normed = F.normalize(cell_embedding, dim=1)
    cosine = normed @ normed.T
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=cell_embedding.device)
    return (1.0 - (cosine[off_diagonal] - threshold) ** 2).mean()


def paired_view_contrastive(first: torch.Tensor, second: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Compute the symmetric InfoNCE (NT-Xent) loss of two views of the same cells.

    Row ``i`` of ``first`` and row ``i`` of ``second`` are two views of one cell (the positive pair); the other
    ``2n - 2`` views in the minibatch are its negatives. Cosine similarities are divided by ``temperature``.
    """
    n = first.shape[0]
    if n < 2:
        return first.new_zeros(())
    views = F.normalize(torch.cat([first, second]).float(), dim=1)
    logits = views @ views.T / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=logits.device), float("-inf"))
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(logits.device)
    return F.cross_entropy(logits, positives)
