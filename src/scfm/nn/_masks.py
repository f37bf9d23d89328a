"""Attention masks as boolean tensors (``True`` = may attend), the convention of SDPA."""

from __future__ import annotations

import torch


def padding_attention_mask(padding: torch.Tensor) -> torch.Tensor:
    """Mask hiding padded keys.

    Parameters
    ----------
    padding
        ``(batch, length)`` boolean, ``True`` at padding positions.

    Returns
    -------
    ``(batch, 1, 1, length)`` boolean mask. Padded queries still see the real keys, so no row is empty.
    """
    return (~padding)[:, None, None, :]


def generative_attention_mask(known: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
    """Build scGPT's generative attention mask.

    Known tokens (``<cls>`` and genes whose values are given) attend among themselves; unknown tokens
    (genes whose values are to be generated) attend to every known token and to themselves only, so
    that predictions for one unknown gene never see another unknown gene.

    Parameters
    ----------
    known
        ``(batch, length)`` boolean, ``True`` for known tokens.
    padding
        Optional ``(batch, length)`` boolean, ``True`` at padding; padded keys are never attended.

    Returns
    -------
    ``(batch, 1, length, length)`` boolean mask (query on dim -2, key on dim -1).
    """
    allowed_keys = known if padding is None else known & ~padding
    length = known.shape[1]
    eye = torch.eye(length, dtype=torch.bool, device=known.device)
    mask = allowed_keys[:, None, :].expand(-1, length, -1) | eye
    return mask[:, None, :, :]
