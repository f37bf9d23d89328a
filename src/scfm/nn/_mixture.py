"""Gaussian-mixture latent: a VAE whose prior is a mixture of K learnable Gaussians (GMVAE)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class MixtureLatentOutput:
    """What :class:`GaussianMixtureLatent` returns for ``n`` cells.

    Attributes
    ----------
    z
        ``(n, latent_dim)``: a posterior sample in training, the posterior mean of the most likely component
        otherwise (deterministic).
    mean, var
        Posterior mean and variance of ``z`` given the cell and its component.
    component_logits
        ``(n, K)`` logits of ``q(component | cell)``.
    kl
        ``(n,)`` KL term per cell: ``log q(z|x,y) - log p(z|y)`` at ``z`` plus ``KL(q(y|x) || uniform)``.
    """

    z: torch.Tensor
    mean: torch.Tensor
    var: torch.Tensor
    component_logits: torch.Tensor
    kl: torch.Tensor


def gaussian_log_density(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``log N(x; mean, diag(var))`` summed over the last dimension."""
    var = var + eps
    return -0.5 * (math.log(2.0 * math.pi) + torch.log(var) + (x - mean) ** 2 / var).sum(-1)


class GaussianMixtureLatent(nn.Module):
    """Posterior ``q(y|h) q(z|h,y)`` and prior ``p(y) p(z|y)`` with ``p(y)`` uniform over ``K`` components.

    ``q(y|h)`` is a linear softmax over components; ``q(z|h,y)`` an MLP on ``[h, y]`` giving a diagonal Gaussian
    (softplus variance); ``p(z|y)`` has a learnable mean and variance per component (linear in the one-hot
    ``y``). In training ``y`` is a Gumbel-softmax relaxation (temperature ``temperature``) and ``z`` is sampled;
    otherwise ``y`` is the most likely component and ``z`` the posterior mean, so inference is deterministic.

    Parameters
    ----------
    d_in, latent_dim, n_components
        Input width, latent width and ``K``.
    d_hidden
        Width of the ``q(z|h,y)`` hidden layer.
    temperature
        Gumbel-softmax temperature in training.
    """

    def __init__(
        self, d_in: int, latent_dim: int, n_components: int, d_hidden: int = 512, temperature: float = 1.0
    ) -> None:
        super().__init__()
        if n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        self.n_components = n_components
        self.temperature = temperature
        self.component_logits = nn.Linear(d_in, n_components)
        self.posterior_hidden = nn.Linear(d_in + n_components, d_hidden)
        self.posterior_mean = nn.Linear(d_hidden, latent_dim)
        self.posterior_var = nn.Linear(d_hidden, latent_dim)
        self.prior_mean = nn.Linear(n_components, latent_dim)
        self.prior_var = nn.Linear(n_components, latent_dim)

    def forward(self, h: torch.Tensor, sample: bool | None = None) -> MixtureLatentOutput:
        """Encode ``(n, d_in)``; ``sample`` defaults to ``self.training``."""
        sample = self.training if sample is None else sample
        logits = self.component_logits(h)
        if sample:
            y = F.gumbel_softmax(logits, tau=self.temperature, hard=False)
        else:
            y = F.one_hot(logits.argmax(-1), self.n_components).to(h.dtype)
        hidden = F.relu(self.posterior_hidden(torch.cat([h, y], dim=-1)))
        mean = self.posterior_mean(hidden)
        var = F.softplus(self.posterior_var(hidden))
        z = mean + torch.randn_like(mean) * torch.sqrt(var + 1e-10) if sample else mean
        prior_mean, prior_var = self.prior_mean(y), F.softplus(self.prior_var(y))
        kl_z = gaussian_log_density(z, mean, var) - gaussian_log_density(z, prior_mean, prior_var)
        log_q = F.log_softmax(logits, dim=-1)
        kl_y = (log_q.exp() * log_q).sum(-1) + math.log(self.n_components)
        return MixtureLatentOutput(z, mean, var, logits, kl_z + kl_y)
