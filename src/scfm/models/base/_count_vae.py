"""Fit a batch-conditioned count VAE to a dataset (``tl.integrate(method="vae")``), or only a query's new batches."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from scfm.nn import BatchConditionedCountVAE
from scfm.nn._count_vae import Norm

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
    encode_batch: bool = False,
    norm: Norm | tuple[Norm, Norm] | None = None,
    dropout: float | None = None,
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
    encode_batch
        scArches' reference setting: the encoder reads the batch too, so that :func:`fit_new_batches` can later
        train a query's batches alone. ``False`` (the default): only the decoder reads it.
    norm, dropout
        Normalisation of the hidden layers (one for both, or an ``(encoder, decoder)`` pair; see
        :class:`~scfm.nn.BatchConditionedCountVAE`) and the encoder's dropout. ``None`` takes the setting's own:
        layer norm and 0.2 with ``encode_batch`` (scArches'); without it, layer norm in the encoder, batch norm in
        the decoder and 0.1 (scVI's batch norm everywhere scored lower on pancreas, and layer norm in the decoder
        too left a strong batch effect in the latent). ``docs/benchmarks.md`` ablates them.
    """
    counts, batches, epochs = _checked(counts, batches, side, max_epochs, batch_size)
    torch_device = resolve_device(device)
    torch.manual_seed(seed)
    module = BatchConditionedCountVAE(
        counts.shape[1],
        0 if side is None else side.shape[1],
        int(batches.max()) + 1,
        n_latent=n_latent,
        encode_batch=encode_batch,
        norm=norm or ("layer" if encode_batch else ("layer", "batch")),
        dropout=dropout if dropout is not None else (0.2 if encode_batch else 0.1),
    ).to(torch_device)
    side = None if side is None else np.asarray(side, dtype=np.float32)
    optimiser = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=1e-6, eps=0.01)
    history, seconds = _train(
        module, optimiser, counts, batches, side, epochs, batch_size, seed, torch_device, keep_norm_statistics=False
    )
    latent = encode_counts(module, counts, side, batches, torch_device)
    return CountVAEFit(latent, module.cpu(), epochs, seconds, history)


def fit_new_batches(
    module: BatchConditionedCountVAE,
    counts: sp.csr_matrix,
    batches: np.ndarray,
    *,
    n_new: int,
    max_epochs: int | None = None,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    device: str = "auto",
) -> CountVAEFit:
    """Train only the input columns of the last ``n_new`` batches of ``module`` on a query, then encode it.

    scArches' query step: every other parameter is frozen (a gradient mask keeps the other batches' columns), batch
    norm (if any) keeps its statistics, weight decay is 0, so cells of the other batches encode as before.
    ``module`` is trained in place and returned in the fit.
    """
    counts, batches, epochs = _checked(counts, batches, None, max_epochs, batch_size)
    if not 1 <= n_new <= module.n_batches or batches.max() >= module.n_batches:
        raise ValueError(f"n_new must be 1..{module.n_batches} and every batch code below {module.n_batches}")
    torch_device = resolve_device(device)
    torch.manual_seed(seed)
    module.to(torch_device)
    layers = module.batch_input_layers()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    hooks = []
    for layer in layers:
        mask = torch.zeros_like(layer.weight)
        mask[:, layer.in_features - n_new :] = 1.0
        layer.weight.requires_grad_(True)
        hooks.append(layer.weight.register_hook(lambda grad, mask=mask: grad * mask))
    optimiser = torch.optim.Adam([layer.weight for layer in layers], lr=lr, weight_decay=0.0, eps=0.01)
    try:
        history, seconds = _train(
            module, optimiser, counts, batches, None, epochs, batch_size, seed, torch_device, keep_norm_statistics=True
        )
    finally:
        for hook in hooks:
            hook.remove()
        for parameter in module.parameters():
            parameter.requires_grad_(True)
    latent = encode_counts(module, counts, None, batches, torch_device)
    return CountVAEFit(latent, module.cpu(), epochs, seconds, history)


def _checked(
    counts: sp.csr_matrix, batches: np.ndarray, side: np.ndarray | None, max_epochs: int | None, batch_size: int
) -> tuple[sp.csr_matrix, np.ndarray, int]:
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
    return counts, batches, epochs


def _train(
    module: BatchConditionedCountVAE,
    optimiser: torch.optim.Optimizer,
    counts: sp.csr_matrix,
    batches: np.ndarray,
    side: np.ndarray | None,
    epochs: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    *,
    keep_norm_statistics: bool,
) -> tuple[list[float], float]:
    """Minimise the negative ELBO with the KL weight warmed up; return the loss per epoch and the seconds.

    ``keep_norm_statistics``: batch norm layers stay in eval mode (a query step keeps the reference's statistics).
    """
    rng = np.random.default_rng(seed)
    n_obs = counts.shape[0]
    side_tensor = None if side is None else torch.as_tensor(side, device=device)
    batch_tensor = torch.as_tensor(batches, device=device)
    steps_per_epoch = len(_minibatches(np.arange(n_obs), batch_size))
    warmup_steps = max(1, int(KL_WARMUP_FRACTION * epochs * steps_per_epoch))
    step, history = 0, []
    start = time.perf_counter()
    module.train()
    if keep_norm_statistics:
        for layer in module.modules():
            if isinstance(layer, torch.nn.BatchNorm1d):
                layer.eval()
    for _ in range(epochs):
        total, seen = 0.0, 0
        for rows in _minibatches(rng.permutation(n_obs), batch_size):
            index = torch.as_tensor(rows, device=device)
            reconstruction, kl = module.negative_elbo_terms(
                torch.as_tensor(counts[rows].toarray(), device=device),
                batch_tensor[index],
                None if side_tensor is None else side_tensor[index],
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
    return history, time.perf_counter() - start


def _minibatches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Split a permutation into minibatches; a last one of fewer than 3 cells joins the previous (BatchNorm)."""
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if len(chunks) > 1 and len(chunks[-1]) < 3:
        chunks[-2] = np.concatenate([chunks[-2], chunks.pop()])
    return chunks
