"""Sinusoidal encoding of 2-D coordinates (spatial transcriptomics)."""

from __future__ import annotations

import math

import torch
from torch import nn


class SinusoidalPosition2D(nn.Module):
    """Sin/cos features of ``x`` and ``y`` at geometric wavelengths, mixed by a learnable linear map.

    A quarter of the ``d_model`` features are ``sin(x / w)``, a quarter ``cos(x / w)``, and the same for
    ``y``, for wavelengths ``w`` from ``min_wavelength`` to ``max_wavelength`` (in the units of the
    coordinates given, typically cell spacings). Dot products of such features depend on relative offsets,
    so the encoding is translation-aware rather than tied to absolute slide positions.

    Parameters
    ----------
    d_model
        Output width; must be divisible by 4.
    min_wavelength, max_wavelength
        Range of wavelengths.
    """

    def __init__(self, d_model: int, min_wavelength: float = 1.0, max_wavelength: float = 256.0) -> None:
        super().__init__()
        if d_model % 4 != 0:
            raise ValueError(f"d_model must be divisible by 4 for a 2-D sinusoidal encoding, got {d_model}")
        n_freq = d_model // 4
        exponents = torch.arange(n_freq, dtype=torch.float32) / max(n_freq - 1, 1)
        wavelengths = min_wavelength * (max_wavelength / min_wavelength) ** exponents
        self.register_buffer("angular_frequency", 2.0 * math.pi / wavelengths, persistent=False)
        self.projection = nn.Linear(d_model, d_model)

    def forward(self, coordinates: torch.Tensor) -> torch.Tensor:
        """``(n, 2)`` coordinates -> ``(n, d_model)``."""
        angles = coordinates[..., :, None] * self.angular_frequency  # (n, 2, n_freq)
        features = torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)
        return self.projection(features)
