"""Lightning pieces of a pretraining run: atomic checkpoints, step-interval saving, throughput, cell traces."""

from __future__ import annotations

import os
import pickle
import re
import resource
import time
from pathlib import Path

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback

CHECKPOINT_PATTERN = re.compile(r"^step-(\d+)\.ckpt$")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoint I/O that replaces files atomically.

    Writes a checkpoint to a temporary file in the same directory, syncs it, then renames it into place, so a crash
    leaves either the old file or the complete new one.
    """

    def save_checkpoint(self, checkpoint: dict, path: str | os.PathLike, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(staging, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(staging, path)
        finally:
            staging.unlink(missing_ok=True)

    def load_checkpoint(self, path: str | os.PathLike, map_location=None, weights_only: bool | None = None) -> dict:
        """Read a checkpoint with ``torch.load(weights_only=True)``: a file holding pickled objects is refused.

        Raises
        ------
        ValueError
            ``path`` is not an scfm training checkpoint (pickled Python objects, or not a checkpoint at all).
        """
        return read_training_checkpoint(path)


def read_training_checkpoint(path: str | os.PathLike) -> dict:
    """Load a ``step-*.ckpt`` of ``scfm pretrain`` on the CPU without unpickling anything but tensors and plain data.

    Raises
    ------
    ValueError
        ``path`` holds pickled Python objects (nothing is executed) or has no ``state_dict``.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{str(path)!r} is not an scfm training checkpoint: it holds pickled Python objects that "
            "torch.load(weights_only=True) refuses to load (nothing was executed)"
        ) from err
    if not isinstance(state, dict) or not isinstance(state.get("state_dict"), dict):
        raise ValueError(f"{str(path)!r} is not an scfm training checkpoint (no 'state_dict' in it)")
    return state


def checkpoint_files(directory: str | os.PathLike) -> list[Path]:
    """``step-<n>.ckpt`` files of a directory, oldest step first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name))]
    return [path for _, path in sorted(found)]


class StepCheckpoint(Callback):
    """Save ``step-<global step>.ckpt`` every ``every_n_steps`` optimiser steps and when training ends.

    The ``keep_last`` newest are kept.
    """

    def __init__(self, directory: str | os.PathLike, every_n_steps: int, keep_last: int = 2) -> None:
        self.directory = Path(directory)
        self.every_n_steps, self.keep_last = every_n_steps, keep_last
        self._last_saved = -1

    def _save(self, trainer) -> None:
        step = trainer.global_step
        if step == self._last_saved:
            return
        trainer.save_checkpoint(self.directory / f"step-{step:08d}.ckpt", weights_only=False)
        self._last_saved = step
        if trainer.is_global_zero:
            for old in checkpoint_files(self.directory)[: -self.keep_last]:
                old.unlink(missing_ok=True)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step > 0 and step % self.every_n_steps == 0 and step != self._last_saved:
            self._save(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self._save(trainer)


class Throughput(Callback):
    """Log tokens (non-padding) and cells per second over all ranks, and the peak memory of rank 0.

    Every ``every_n_steps`` batches the token and cell counts are summed across ranks; ``tokens_per_s`` shows in
    the progress bar and all three go to the loggers.
    """

    def __init__(self, pad_id: int, every_n_steps: int = 10) -> None:
        self.pad_id, self.every_n_steps = pad_id, every_n_steps
        self._tokens = self._cells = 0
        self._since = None
        self.history: list[dict[str, float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._since is None:
            self._since = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._tokens += int((batch["gene_ids"] != self.pad_id).sum())
        self._cells += int(batch["gene_ids"].shape[0])
        if (batch_idx + 1) % self.every_n_steps:
            return
        counts = torch.tensor([self._tokens, self._cells], dtype=torch.float64, device=pl_module.device)
        counts = trainer.strategy.reduce(counts, reduce_op="sum")
        elapsed = max(time.perf_counter() - self._since, 1e-9)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if torch.cuda.is_available() and pl_module.device.type == "cuda":
            peak_mb = torch.cuda.max_memory_allocated(pl_module.device) / 2**20
        record = {
            "tokens_per_s": float(counts[0]) / elapsed,
            "cells_per_s": float(counts[1]) / elapsed,
            "peak_memory_mb": peak_mb,
        }
        self.history.append(record)
        pl_module.log("tokens_per_s", record["tokens_per_s"], prog_bar=True, on_step=True, rank_zero_only=True)
        pl_module.log("cells_per_s", record["cells_per_s"], on_step=True, rank_zero_only=True)
        pl_module.log("peak_memory_mb", peak_mb, on_step=True, rank_zero_only=True)
        self._tokens = self._cells = 0
        self._since = time.perf_counter()


class CellTrace(Callback):
    """Append ``epoch,step,batch,source,row`` for every trained cell to ``<directory>/rank<r>.csv``."""

    def __init__(self, directory: str | os.PathLike, source_names: list[str]) -> None:
        self.directory = Path(directory)
        self.source_names = source_names
        self._handle = None

    def on_train_start(self, trainer, pl_module) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"rank{trainer.global_rank}.csv"
        new = not path.exists()
        self._handle = open(path, "a")
        if new:
            self._handle.write("epoch,step,batch,source,row\n")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        epoch, step = trainer.current_epoch, trainer.global_step
        lines = [
            f"{epoch},{step},{batch_idx},{self.source_names[int(s)]},{int(r)}\n"
            for s, r in zip(batch["cell_source"].tolist(), batch["cell_row"].tolist(), strict=True)
        ]
        self._handle.writelines(lines)
        self._handle.flush()

    def on_train_end(self, trainer, pl_module) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
