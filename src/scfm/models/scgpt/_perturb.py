"""scGPT's perturb-GEP: fine-tune an scGPT module to predict the expression of a cell after a genetic perturbation.

The input is a control cell (``<cls>``, every measured gene with its per-cell quantile bin) with a perturbation
flag per token, the target the log-normalised expression of a perturbed cell at every gene position (not only
masked ones). The flag embedding lives in :class:`PerturbationModule`, a wrapper around the unchanged
:class:`~scfm.models.scgpt.SCGPTModule`, so ordinary scGPT checkpoints keep loading strictly; a fine-tuned model
is saved as an scGPT checkpoint (the fine-tuned base weights) plus ``perturbation.safetensors`` (the flags) and
``perturbation.json``.

Genes perturbed in a cell but not measured (or not among the aligned genes) are appended as extra tokens with
value 0 and flag 1, so a perturbation of any vocabulary gene can be predicted.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from anndata import AnnData
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from scfm.nn import padding_attention_mask

from ..base import (
    PERTURBATION_FILE,
    CheckpointError,
    PerturbationModel,
    PerturbationPrediction,
    PerturbationRequest,
    Pretrained,
    load_checkpoint,
    perturbation_name,
    resolve_device,
    save_checkpoint,
)
from ._module import SCGPTModule
from ._perturb_data import (
    TARGET_SUM,
    ScreenGenes,
    binned_inputs,
    cell_counts,
    log_normalised,
    pair_batch,
    screen_genes,
    screen_labels,
    subsample,
)

FLAG_FILE = "perturbation.safetensors"
WARMUP_FRACTION = 0.1
WEIGHT_DECAY = 0.01
#: Learning-rate multiplier of the parts fine-tuning adds (flag embedding, change head).
NEW_PARTS_LR_FACTOR = 10.0


class PerturbationModule(nn.Module):
    """An :class:`SCGPTModule` with a perturbation-flag embedding and a change head.

    Every input token gets ``gene + value + flag`` embeddings (flag 0: not perturbed, 1: perturbed); the
    transformer's output at each gene position goes through a small MLP that predicts the gene's change from
    ``baseline`` (the mean log-expression of the control cells, per gene), so the prediction at every position is
    ``baseline + change``. Flag 0 starts at zero (an unflagged cell is encoded exactly as the base module encodes
    it) and the change head's last layer starts at zero (before fine-tuning the model predicts "no change").
    """

    def __init__(self, base: SCGPTModule) -> None:
        super().__init__()
        config = base.config
        if config.domain_batchnorm or base.batch_embedding is not None:
            raise ValueError(
                "perturbation fine-tuning starts from a model without batch-specific parts (batch embeddings or "
                "domain batch norm); use the bundled checkpoint or one pretrained without them"
            )
        self.base = base
        self.config = config
        d = config.d_model
        self.flag_embedding = nn.Embedding(2, d)
        self.change_head = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 1))
        with torch.no_grad():
            self.flag_embedding.weight[0].zero_()
            self.change_head[2].weight.zero_()
            self.change_head[2].bias.zero_()

    def new_parameters(self) -> list[nn.Parameter]:
        """Parameters that do not come from the checkpoint (trained at a higher learning rate)."""
        return [*self.flag_embedding.parameters(), *self.change_head.parameters()]

    def forward(
        self, gene_ids: torch.Tensor, values: torch.Tensor, flags: torch.Tensor, baseline: torch.Tensor
    ) -> torch.Tensor:
        """Return predicted log-expression ``(batch, n_genes)`` at the ``len(baseline)`` positions after ``<cls>``."""
        padding = gene_ids == self.config.pad_id
        x = self.base.gene_embedding(gene_ids) + self.base.value_embedding(values) + self.flag_embedding(flags)
        hidden = self.base.transformer(x, padding_attention_mask(padding))
        n_genes = baseline.shape[0]
        return baseline[None, :] + self.change_head(hidden[:, 1 : 1 + n_genes]).squeeze(-1)


def _schedule(step: int, total: int) -> float:
    warmup = max(1, int(WARMUP_FRACTION * total))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class SCGPTPerturbation(PerturbationModel):
    """A perturb-GEP fine-tuned scGPT model: predicts mean expression after single or combined gene perturbations.

    Build it with :func:`scfm.tl.predict_perturbation` (``return_model=True``) or :func:`finetune_perturbation`;
    ``save`` writes a checkpoint directory that ``SCGPTPerturbation.load`` and ``tl.predict_perturbation(...,
    model=path)`` read back.

    Attributes
    ----------
    module
        The :class:`PerturbationModule`.
    perturbations
        Perturbations seen in fine-tuning (canonical names).
    record
        Fine-tuning settings and timings (cells, epochs, seconds per epoch, losses).
    """

    def __init__(self, pretrained: Pretrained, module: PerturbationModule, perturbations: list[str], record: dict):
        self.pretrained = pretrained
        self.module = module
        self.perturbations = list(perturbations)
        self.record = dict(record)

    # -- prediction ------------------------------------------------------------------------------
    def predict(
        self,
        adata: AnnData,
        perturbations: list[tuple[str, ...]],
        *,
        n_control_cells: int = 300,
        seed: int = 0,
        device: str = "auto",
        request: PerturbationRequest,
        batch_size: int = 64,
    ) -> PerturbationPrediction:
        """Mean predicted log-normalised expression of each perturbation, over control cells of ``adata``.

        The same seeded subsample of ``n_control_cells`` control cells is the input of every perturbation.
        """
        vocab = self.pretrained.vocab
        missing = sorted({g for genes in perturbations for g in genes if g not in vocab})
        if missing:
            raise ValueError(
                f"perturbed gene(s) {missing} are not in the model's vocabulary ({len(vocab)} tokens); the model has "
                "no representation of them and cannot predict their perturbation"
            )
        genes = screen_genes(adata, vocab, request)
        labels = screen_labels(adata, request)
        controls = np.flatnonzero(labels.is_control)
        rng = np.random.default_rng([seed, 1])
        controls = subsample(controls, n_control_cells, rng)
        control_values = log_normalised(adata, controls, genes, request)
        control_bins = binned_inputs(control_values, self.config.n_bins)
        target = resolve_device(device)
        self.module.to(target).eval()
        predicted = np.zeros((len(perturbations), len(genes.names)), dtype=np.float64)
        baseline = torch.from_numpy(control_values.mean(0)).to(target)
        with torch.inference_mode():
            for p, pert in enumerate(perturbations):
                flagged, extra = _flag_positions(pert, genes, vocab)
                total = np.zeros(len(genes.names), dtype=np.float64)
                for start in range(0, len(controls), batch_size):
                    stop = min(start + batch_size, len(controls))
                    batch = self._batch(
                        control_bins[start:stop], genes, [extra] * (stop - start), [flagged] * (stop - start)
                    )
                    out = self.module(
                        batch.gene_ids.to(target), batch.values.to(target), batch.flags.to(target), baseline
                    )
                    total += out.double().sum(0).cpu().numpy()
                predicted[p] = total / len(controls)
        record = {
            "n_control_cells": len(controls),
            "target_sum": TARGET_SUM,
            "seen_in_training": [perturbation_name(p) in set(self.perturbations) for p in perturbations],
            **{f"finetune_{k}": v for k, v in self.record.items()},
        }
        return PerturbationPrediction(
            [perturbation_name(p) for p in perturbations],
            genes.names,
            predicted.astype(np.float32),
            control_values.mean(0).astype(np.float32),
            record,
            genes.alignment,
        )

    @property
    def config(self):
        """The scGPT configuration of the base module."""
        return self.pretrained.config

    def _batch(self, bins, genes: ScreenGenes, extra, flagged, targets=None):
        config = self.config
        return pair_batch(
            bins,
            genes.token_ids,
            extra,
            flagged,
            cls_id=config.cls_id,
            pad_id=config.pad_id,
            pad_value=config.pad_value,
            targets=targets,
        )

    # -- persistence -----------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the fine-tuned scGPT checkpoint plus ``perturbation.safetensors`` and ``perturbation.json``."""
        config = self.config.to_dict()
        meta = {"family": "scgpt", "perturbations": self.perturbations, "record": _jsonable(self.record)}
        card = (
            "# scGPT fine-tuned for perturbation prediction (perturb-GEP)\n\n"
            f"Fine-tuned by scfm from `{self.pretrained.name}` on {len(self.perturbations)} perturbations. "
            "Load it with `scfm.models.scgpt.SCGPTPerturbation.load(path)` or pass the directory as "
            "`model=` to `scfm.tl.predict_perturbation`.\n"
        )
        flags = {
            f"{name}.{key}": value.detach().cpu().contiguous()
            for name in ("flag_embedding", "change_head")
            for key, value in getattr(self.module, name).state_dict().items()
        }
        return save_checkpoint(
            directory,
            config=config,
            vocab=self.pretrained.vocab,
            state_dict=self.module.base.state_dict(),
            model_card=card,
            overwrite=overwrite,
            extra_files={
                FLAG_FILE: lambda path: save_file(flags, str(path)),
                PERTURBATION_FILE: lambda path: path.write_text(json.dumps(meta, indent=2) + "\n"),
            },
        )

    @classmethod
    def load(cls, directory: str | os.PathLike) -> SCGPTPerturbation:
        """Read a directory written by :meth:`save` (strict loading of every tensor)."""
        from ..base import get_family

        checkpoint = load_checkpoint(directory)
        pretrained = get_family("scgpt").from_checkpoint(checkpoint)
        path = Path(directory).expanduser()
        try:
            meta = json.loads((path / PERTURBATION_FILE).read_text())
            flags = load_file(str(path / FLAG_FILE))
        except (OSError, ValueError, SafetensorError) as err:
            raise CheckpointError(f"{str(path)!r} is not a complete perturbation model ({err})") from err
        module = PerturbationModule(pretrained.module)
        expected = {k: v for k, v in module.state_dict().items() if not k.startswith("base.")}
        shapes_differ = any(flags[k].shape != v.shape for k, v in expected.items() if k in flags)
        if set(flags) != set(expected) or shapes_differ:
            raise CheckpointError(
                f"{str(path / FLAG_FILE)!r} does not hold this model's flag embedding and change head (expected "
                f"{sorted(expected)}, found {sorted(flags)})"
            )
        module.load_state_dict({**module.state_dict(), **{k: v.float() for k, v in flags.items()}}, strict=True)
        module.eval()
        return cls(pretrained, module, meta.get("perturbations", []), meta.get("record", {}))


def _flag_positions(pert: tuple[str, ...], genes: ScreenGenes, vocab) -> tuple[np.ndarray, list[int]]:
    """Positions of the perturbed genes among the measured genes, and vocabulary ids of the others."""
    position = {int(t): i for i, t in enumerate(genes.token_ids)}
    flagged, extra = [], []
    for gene in pert:
        token = int(vocab[gene])
        if token in position:
            flagged.append(position[token])
        else:
            extra.append(token)
    return np.asarray(flagged, dtype=np.int64), extra


def _averaged_targets(
    targets: np.ndarray, groups: dict[str, np.ndarray], k: int, rng: np.random.Generator
) -> np.ndarray:
    """Each row's target: itself (``k == 1``, the paper's pairing) or the mean of ``k`` cells of its group."""
    if k == 1:
        return targets
    out = np.empty_like(targets)
    for members in groups.values():
        draws = members[rng.integers(0, len(members), size=(len(members), k))]
        draws[:, 0] = members
        out[members] = targets[draws].mean(1)
    return out


def _jsonable(record: dict) -> dict:
    return json.loads(json.dumps(record, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


def finetune_perturbation(pretrained: Pretrained, adata: AnnData, request: PerturbationRequest) -> SCGPTPerturbation:
    """Fine-tune a copy of ``pretrained`` with perturb-GEP on the cells of ``adata`` (never modified).

    With ``request.target_cells > 1`` a cell's target is the mean of itself and ``target_cells - 1`` cells of the
    same perturbation drawn every epoch: the same expected gradient with less noise (a deviation from the paper).

    Every perturbed cell (at most ``request.cells_per_perturbation`` per perturbation, a seeded subsample) and
    ``request.control_cells`` control cells (paired with other control cells, flags all 0) are targets; each is
    paired with a control cell drawn anew every epoch. The loss is the mean squared error of the log-normalised
    expression at every measured gene, predicted as the control mean plus a change. AdamW (weight decay 0.01;
    the flag embedding and change head at 10x ``lr``), 10 % linear warm-up then cosine decay.

    Raises
    ------
    ValueError
        Too few control cells, or a perturbation with fewer than ``request.min_cells`` cells.
    """
    if request.max_epochs < 1 or request.batch_size < 1 or request.lr <= 0:
        raise ValueError(
            f"max_epochs and batch_size must be >= 1 and lr > 0, got {request.max_epochs}, {request.batch_size}, "
            f"{request.lr}"
        )
    vocab = pretrained.vocab
    genes = screen_genes(adata, vocab, request)
    labels = screen_labels(adata, request)
    n_controls = int(labels.is_control.sum())
    if n_controls < request.min_cells:
        raise ValueError(
            f"only {n_controls} control cells ({request.control!r}); fine-tuning needs at least min_cells="
            f"{request.min_cells}"
        )
    counts = cell_counts(labels)
    few = counts[counts < request.min_cells]
    if len(few):
        raise ValueError(
            f"perturbation(s) {dict(few)} have fewer than min_cells={request.min_cells} cells; drop them from the "
            "AnnData or lower min_cells"
        )
    unknown = sorted(name for name, gs in labels.genes.items() if any(g not in vocab for g in gs))
    usable = sorted(name for name in labels.genes if name not in unknown)
    if not usable:
        raise ValueError(
            f"no perturbation of adata.obs[{request.perturbation_key!r}] names vocabulary genes only (outside the "
            f"vocabulary: {unknown[:8]}); the model cannot represent them"
        )
    rng = np.random.default_rng([request.seed, 0])
    targets_rows = [
        subsample(np.flatnonzero(labels.names == name), request.cells_per_perturbation, rng) for name in usable
    ]
    control_rows = np.flatnonzero(labels.is_control)
    control_targets = subsample(control_rows, request.control_cells, rng)
    rows = np.concatenate([*targets_rows, control_targets])
    pert_of_row = [name for name, r in zip(usable, targets_rows, strict=True) for _ in r] + [None] * len(
        control_targets
    )
    targets = log_normalised(adata, rows, genes, request)
    control_inputs = subsample(control_rows, request.control_cells, np.random.default_rng([request.seed, 2]))
    control_values = log_normalised(adata, control_inputs, genes, request)
    control_bins = binned_inputs(control_values, pretrained.config.n_bins)
    flag_cache = {name: _flag_positions(labels.genes[name], genes, vocab) for name in usable}
    empty = (np.zeros(0, dtype=np.int64), [])
    flags_of_row = [flag_cache[name] if name is not None else empty for name in pert_of_row]
    group_of_row = np.asarray([name if name is not None else "" for name in pert_of_row])
    target_groups = {name: np.flatnonzero(group_of_row == name) for name in sorted(set(group_of_row))}

    torch.manual_seed(request.seed)
    base = SCGPTModule(pretrained.config)
    base.load_state_dict(pretrained.module.state_dict())
    module = PerturbationModule(base)
    device = resolve_device(request.device)
    module.to(device).train()
    new = {id(p) for p in module.new_parameters()}
    groups = [
        {"params": [p for p in module.parameters() if id(p) not in new], "lr": request.lr},
        {"params": module.new_parameters(), "lr": request.lr * NEW_PARTS_LR_FACTOR},
    ]
    optimiser = torch.optim.AdamW(groups, lr=request.lr, weight_decay=WEIGHT_DECAY)
    baseline = torch.from_numpy(control_values.mean(0)).to(device)
    steps_per_epoch = math.ceil(len(rows) / request.batch_size)
    total_steps = steps_per_epoch * request.max_epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: _schedule(step, total_steps))
    model = SCGPTPerturbation(pretrained, module, usable, {})
    n_genes = len(genes.names)
    epoch_seconds, epoch_losses = [], []
    for epoch in range(request.max_epochs):
        start = time.perf_counter()
        epoch_rng = np.random.default_rng([request.seed, 3, epoch])
        order = epoch_rng.permutation(len(rows))
        partners = epoch_rng.integers(0, len(control_inputs), size=len(rows))
        epoch_targets = _averaged_targets(targets, target_groups, request.target_cells, epoch_rng)
        losses = []
        for begin in range(0, len(rows), request.batch_size):
            index = order[begin : begin + request.batch_size]
            batch = model._batch(
                control_bins[partners[index]],
                genes,
                [flags_of_row[i][1] for i in index],
                [flags_of_row[i][0] for i in index],
                targets=epoch_targets[index],
            )
            out = module(batch.gene_ids.to(device), batch.values.to(device), batch.flags.to(device), baseline)
            loss = F.mse_loss(out, batch.targets.to(device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            if request.progress and len(losses) % 20 == 0:
                print(f"epoch {epoch + 1}/{request.max_epochs} step {len(losses)}/{steps_per_epoch} loss {loss:.4f}")
        epoch_seconds.append(time.perf_counter() - start)
        epoch_losses.append(float(np.mean(losses)))
    module.eval()
    model.record = {
        "perturbations_trained": len(usable),
        "left_out_outside_vocabulary": unknown,
        "training_cells": len(rows),
        "control_input_cells": len(control_inputs),
        "genes": n_genes,
        "max_epochs": request.max_epochs,
        "batch_size": request.batch_size,
        "lr": request.lr,
        "cells_per_perturbation": request.cells_per_perturbation,
        "target_cells": request.target_cells,
        "seed": request.seed,
        "seconds_per_epoch": float(np.mean(epoch_seconds)),
        "epoch_losses": epoch_losses,
        "finetuned_from": pretrained.name,
    }
    model.pretrained = Pretrained(
        "scgpt", base, vocab, f"{pretrained.name} (perturb-GEP fine-tuned)", "in-memory model", pretrained.sha256
    )
    return model
