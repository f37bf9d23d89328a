"""Fit a batch-conditioned count VAE to a dataset and return each cell's latent (``tl.integrate(method="vae")``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from scfm.nn import BatchConditionedCountVAE

from ._count_vae_model import encode_counts
from ._device import resolve_device

KL_WARMUP_FRACTION = 0.75  # the KL weight rises linearly from 0 to 1 over this share of the optimiser steps


def default_vae_epochs(n_cells: int) -> int:
    """scvi-tools' heuristic: ``min(round(20000 / n_cells * 400), 400)`` epochs, at least 1."""
    return max(1, min(round(20000 / max(n_cells, 1) * 400), 400))


@dataclass
class CountVAEFit:
    """Posterior means of the cells' latents ``(n_obs, n_latent)`` float32, the trained module and how the fit went."""

    latent: np.ndarray
    module: BatchConditionedCountVAE
    epochs: int
    seconds: float
    loss_per_epoch: list[float] = field(default_factory=list)


def fit_count_vae(
    counts: sp.csr_matrix,
    batches: np.ndarray,
    side: np.ndarray | None = None,
    *,
    n_latent: int = 30,
    max_epochs: int | None = None,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    device: str = "auto",
) -> CountVAEFit:
    """Train :class:`~scfm.nn.BatchConditionedCountVAE` on ``counts`` and encode every cell.

    Parameters
    ----------
    counts
        ``(n_obs, n_genes)`` non-negative counts (CSR; densified one minibatch at a time).
    batches
        ``(n_obs,)`` integer batch codes ``0 .. n_batches - 1``.
    side
        Optional ``(n_obs, n_side)`` features the encoder also reads, already scaled.
    n_latent, max_epochs, batch_size, lr
        Latent width; epochs (``None``: :func:`default_vae_epochs`); cells per step; Adam's learning rate.
    seed
        Seeds initialisation, minibatch order and the latent samples. The cells are visited in the order given:
        callers that want a result independent of cell order pass a canonical order.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
    """
    counts = sp.csr_matrix(counts, dtype=np.float32)
    n_obs = counts.shape[0]
    batches = np.asarray(batches, dtype=np.int64)
    if batches.shape != (n_obs,) or n_obs < 2:
        raise ValueError(f"need at least 2 cells and one batch code per cell; got {n_obs} cells, {batches.shape}")
    if side is not None and (side.ndim != 2 or side.shape[0] != n_obs):
        raise ValueError(f"side features must be (n_obs, n_side) with n_obs={n_obs}, got {side.shape}")
    epochs = default_vae_epochs(n_obs) if max_epochs is None else int(max_epochs)
    if epochs < 1 or batch_size < 2:
        raise ValueError(f"max_epochs must be >= 1 and batch_size >= 2, got {epochs} and {batch_size}")
    torch_device = resolve_device(device)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    side_tensor = None if side is None else torch.as_tensor(np.asarray(side, dtype=np.float32), device=torch_device)
    batch_tensor = torch.as_tensor(batches, device=torch_device)
    module = BatchConditionedCountVAE(
        counts.shape[1], 0 if side is None else side.shape[1], int(batches.max()) + 1, n_latent=n_latent
    ).to(torch_device)
    optimiser = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=1e-6, eps=0.01)

    def dense(rows: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(counts[rows].toarray(), device=torch_device)

    steps_per_epoch = len(_minibatches(np.arange(n_obs), batch_size))
    warmup_steps = max(1, int(KL_WARMUP_FRACTION * epochs * steps_per_epoch))
    step, history = 0, []
    start = time.perf_counter()
    module.train()
    for _ in range(epochs):
        total, seen = 0.0, 0
        for rows in _minibatches(rng.permutation(n_obs), batch_size):
            index = torch.as_tensor(rows, device=torch_device)
            reconstruction, kl = module.negative_elbo_terms(
                dense(rows), batch_tensor[index], None if side_tensor is None else side_tensor[index]
            )
            loss = (reconstruction + min(1.0, step / warmup_steps) * kl).mean()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the VAE's loss became {loss.item()} at step {step}; lower lr")
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            step += 1
            total += loss.item() * len(rows)
            seen += len(rows)
        history.append(total / seen)
    seconds = time.perf_counter() - start
    latent = encode_counts(module, counts, None if side is None else np.asarray(side, dtype=np.float32), torch_device)
    return CountVAEFit(latent, module.cpu(), epochs, seconds, history)


def _minibatches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Split a permutation into minibatches; a last one of fewer than 3 cells joins the previous (BatchNorm)."""
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if len(chunks) > 1 and len(chunks[-1]) < 3:
        chunks[-2] = np.concatenate([chunks[-2], chunks.pop()])
    return chunks
