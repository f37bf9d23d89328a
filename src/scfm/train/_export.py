"""Turn a pretraining run's training checkpoint into an scfm checkpoint directory.

The directory holds ``config.json``, ``vocab.json``, ``model.safetensors`` and ``model_card.md``; the family's
``from_pretrained`` and ``tl.embed`` load it.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from scfm.genes import GeneVocab

from ._callbacks import checkpoint_files, read_training_checkpoint

if TYPE_CHECKING:
    from ._recipe import PretrainRecipe

RUN_CONFIG_FILE = "config.yaml"
MODEL_CONFIG_FILE = "model_config.json"
RUN_VOCAB_FILE = "vocab.json"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary sibling and rename it over ``path``."""
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.write_text(text)
    os.replace(staging, path)


def _last_logged(run: Path, key: str) -> float | None:
    files = sorted((run / "logs").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    value = None
    for path in files:
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                if row.get(key):
                    value = float(row[key])
    return value


def export_run(
    run_dir: str | os.PathLike,
    destination: str | os.PathLike | None = None,
    *,
    checkpoint: str | os.PathLike | None = None,
    overwrite: bool = False,
    recipe: PretrainRecipe | None = None,
) -> Path:
    """Export a pretraining run's newest (or a chosen) training checkpoint as an scfm checkpoint directory.

    Parameters
    ----------
    run_dir
        The run's ``output`` directory.
    destination
        Where to write (default ``<run_dir>/export``).
    checkpoint
        A ``step-*.ckpt`` of the run (default: the newest).
    overwrite
        Replace an existing destination.
    recipe
        The family's :class:`~scfm.train.PretrainRecipe` (default: the one registered for the family recorded in
        the run's ``config.yaml``).
    """
    from ._pretrain_config import PretrainConfig
    from ._recipe import resolve_recipe

    run = Path(run_dir)
    for name in (RUN_CONFIG_FILE, MODEL_CONFIG_FILE, RUN_VOCAB_FILE):
        if not (run / name).is_file():
            raise FileNotFoundError(f"{str(run)!r} is not a pretraining run directory: {name} is missing")
    if checkpoint is None:
        found = checkpoint_files(run / "checkpoints")
        if not found:
            raise FileNotFoundError(f"no step-*.ckpt in {str(run / 'checkpoints')!r} to export")
        checkpoint = found[-1]
    config = PretrainConfig.from_dict(yaml.safe_load((run / RUN_CONFIG_FILE).read_text()))
    recipe = resolve_recipe(config.model.family, recipe)
    config = config.bind(recipe)
    model_config = json.loads((run / MODEL_CONFIG_FILE).read_text())
    for key in ("max_len", "cell_embedding"):
        if getattr(config.export, key) is not None:
            model_config[key] = getattr(config.export, key)
    model_config["extra"] = {**model_config.get("extra", {}), "pretrained_by": "scfm pretrain", "run": run.name}
    state = read_training_checkpoint(checkpoint)
    weights = {key.removeprefix("module."): value for key, value in state["state_dict"].items()}
    module = recipe.module_from_config(model_config, weights, source=str(checkpoint))
    vocab = GeneVocab.load(run / RUN_VOCAB_FILE)
    n_params = sum(p.numel() for p in module.parameters())
    loss = _last_logged(run, "train_loss_step")
    sources = config.data.shards + ([f"SOMA {config.data.soma.get('uri')}"] if config.data.soma else [])
    architecture = recipe.describe(module)
    card = (
        f"# scfm {recipe.label} checkpoint pretrained with `scfm pretrain` (run `{run.name}`)\n\n"
        f"- parameters: {n_params:,}; vocabulary: {len(vocab)} tokens\n"
        + (f"- architecture: {architecture}\n" if architecture else "")
        + f"- training: {state['global_step']} optimiser steps (epoch counter {state['epoch']}), "
        f"context {config.model.max_len} tokens, objectives {config.objectives}, optimiser {config.optimizer}\n"
        f"- last logged train loss: {loss if loss is not None else 'not logged'}\n"
        f"- data: {', '.join(sources)}\n"
        f"- exported from: `{Path(checkpoint).name}`\n"
    )
    target = Path(destination) if destination is not None else run / "export"
    return recipe.save(
        target,
        module,
        vocab,
        model_card=card,
        overwrite=overwrite,
        half_precision=config.export.half_precision,
    )
