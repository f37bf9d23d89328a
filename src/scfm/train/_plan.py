"""Training plans: scvi-tools ``TrainingPlan`` with AdamW and a linear warm-up + cosine schedule."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from lightning.pytorch import Trainer
from scvi.train import TrainingPlan


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.05) -> float:
    """Learning-rate multiplier: linear warm-up to 1, then cosine decay to ``min_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosineTrainingPlan(TrainingPlan):
    """scvi-tools ``TrainingPlan`` whose optimiser is AdamW with a per-step warm-up + cosine schedule.

    Parameters
    ----------
    module
        The scvi-tools module to train.
    lr, weight_decay
        Peak learning rate and AdamW weight decay.
    warmup_steps
        Linear warm-up length in optimiser steps (clipped to a tenth of the run when the run is short).
    head_lr_factor
        Learning-rate multiplier for the parameters under ``head_prefixes``: freshly initialised heads (a batch
        discriminator, a classifier) on top of a pretrained encoder must learn faster than the encoder moves.
    head_prefixes
        Parameter-name prefixes of those heads.
    total_steps
        Length of the schedule in optimiser steps, or a function of the trainer giving it (default: Lightning's
        estimate for the run).
    log_every_step
        Log the losses and the learning rate at every step too (pretraining curves), not only per epoch.
    loss_kwargs
        Passed to ``module.loss`` (objective weights).
    """

    def __init__(
        self,
        module,
        *,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 200,
        head_lr_factor: float = 1.0,
        head_prefixes: tuple[str, ...] = (),
        total_steps: int | Callable[[Trainer], int] | None = None,
        log_every_step: bool = False,
        **loss_kwargs,
    ):
        super().__init__(module, lr=lr, weight_decay=weight_decay, optimizer="AdamW", **loss_kwargs)
        if head_lr_factor <= 0:
            raise ValueError(f"head_lr_factor must be positive, got {head_lr_factor}")
        self.warmup_steps = warmup_steps
        self.head_lr_factor = head_lr_factor
        self.head_prefixes = tuple(head_prefixes)
        self.total_steps = total_steps
        self.log_every_step = log_every_step

    def training_step(self, batch, batch_idx):
        _, _, loss_output = self.forward(batch, loss_kwargs=self.loss_kwargs)
        size = loss_output.n_obs_minibatch
        per_step, sync = self.log_every_step, self.trainer.world_size > 1
        self.log(
            "train_loss",
            loss_output.loss,
            on_epoch=True,
            on_step=per_step,
            prog_bar=True,
            batch_size=size,
            sync_dist=sync,
        )
        for name, value in loss_output.reconstruction_loss.items():
            self.log(f"train_{name}", value.mean(), on_epoch=True, on_step=per_step, batch_size=size, sync_dist=sync)
        if per_step:
            self.log("lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False, batch_size=size)
        return loss_output.loss

    def validation_step(self, batch, batch_idx):
        _, _, loss_output = self.forward(batch, loss_kwargs=self.loss_kwargs)
        size = loss_output.n_obs_minibatch
        self.log("validation_loss", loss_output.loss, on_epoch=True, batch_size=size)
        for name, value in loss_output.reconstruction_loss.items():
            self.log(f"validation_{name}", value.mean(), on_epoch=True, batch_size=size)

    def configure_optimizers(self):
        groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
        for name, parameter in self.module.named_parameters():
            if not parameter.requires_grad:
                continue
            decays = parameter.ndim >= 2 and "embedding" not in name
            in_head = name.startswith(self.head_prefixes) if self.head_prefixes else False
            groups.setdefault((decays, in_head), []).append(parameter)
        optimizer = torch.optim.AdamW(
            [
                {
                    "params": params,
                    "weight_decay": self.weight_decay if decays else 0.0,
                    "lr": self.lr * (self.head_lr_factor if in_head else 1.0),
                }
                for (decays, in_head), params in groups.items()
            ],
            lr=self.lr,
        )
        if callable(self.total_steps):
            total = self.total_steps(self.trainer)
        else:
            total = self.total_steps or max(int(self.trainer.estimated_stepping_batches), 1)
        warmup = min(self.warmup_steps, max(total // 10, 1))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, warmup, total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
