"""``scfm pretrain``: stream a corpus through a model with Lightning (one process, DDP, many nodes), resumably."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import yaml
from lightning.fabric.utilities.seed import seed_everything
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only

from scfm._settings import settings as scfm_settings
from scfm.data import (
    H5adShard,
    RowSource,
    StreamingDataModule,
    batches_per_slot,
    deal_blocks,
    epoch_blocks,
    expand_shard_paths,
)
from scfm.genes import GeneVocab, vocabulary_genes

from ._callbacks import AtomicCheckpointIO, CellTrace, StepCheckpoint, Throughput, checkpoint_files
from ._export import MODEL_CONFIG_FILE, RUN_CONFIG_FILE, RUN_VOCAB_FILE, export_run, write_atomic
from ._plan import WarmupCosineTrainingPlan
from ._pretrain_config import PretrainConfig
from ._recipe import PretrainRecipe, resolve_recipe

logger = logging.getLogger(__name__)


@dataclass
class PretrainResult:
    """What a finished run produced."""

    output: Path
    export: Path | None
    global_step: int
    epochs: int
    last_checkpoint: Path | None


def load_sources(config: PretrainConfig) -> list[RowSource]:
    """Load the row sources a config names: its ``.h5ad`` shards, then its SOMA experiment."""
    data = config.data
    sources: list[RowSource] = [
        H5adShard(path, layer=data.layer, dataset_key=data.dataset_key) for path in expand_shard_paths(data.shards)
    ]
    if data.soma:
        from scfm.data import SomaExperimentSource

        sources.append(SomaExperimentSource(**data.soma))
    names = [source.name for source in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"sources need distinct names (file stems); got {names}")
    return sources


def union_vocab(sources: list[RowSource], gene_key: str | None) -> GeneVocab:
    """Every gene named by a source, in order of first appearance."""
    genes: dict[str, None] = {}
    for source in sources:
        if gene_key is not None and gene_key not in source.var:
            raise KeyError(
                f"gene_key={gene_key!r} is not a var column of {source.name!r} (columns: {list(source.var)})"
            )
        genes.update(dict.fromkeys(vocabulary_genes(source.var, gene_key)))
    return GeneVocab(list(genes))


def _model_and_vocab(config: PretrainConfig, recipe: PretrainRecipe, sources: list[RowSource], resume: bool):
    output = Path(config.output)
    if resume:
        vocab = GeneVocab.load(output / RUN_VOCAB_FILE)
        return recipe.module_from_config(json.loads((output / MODEL_CONFIG_FILE).read_text())), vocab
    if config.model.init_from:
        module, vocab = recipe.module_from_checkpoint(config.model.init_from)
        module.train()
        return module, vocab
    if config.data.vocab == "union":
        vocab = union_vocab(sources, config.data.gene_key)
    else:
        vocab = GeneVocab.load(config.data.vocab)
    return recipe.new_module(vocab, config), vocab


def _data_module(
    config: PretrainConfig, recipe: PretrainRecipe, sources: list[RowSource], module, vocab: GeneVocab
) -> StreamingDataModule:
    encoder = recipe.cell_encoder(module, vocab, config)
    encoder.prepare(sources)
    data = config.data
    return StreamingDataModule(
        sources,
        encoder,
        batch_size=data.batch_size,
        block_size=data.block_size,
        buffer_blocks=data.buffer_blocks,
        bucketing=data.length_bucketing,
        max_len=config.model.max_len,
        seed=config.trainer.seed,
        num_workers=data.num_workers,
    )


def freeze_unused_parameters(module, data_module: StreamingDataModule, loss_kwargs: dict) -> list[str]:
    """Freeze the parameters the configured objectives never touch.

    Examples are GEP's zero-probability head in masked-value pretraining, or the GEPC head when ``gepc_weight`` is 0;
    they are found by one forward/backward pass on the first batch.

    DDP otherwise waits for their gradients forever; freezing them is cheaper than asking DDP to search the graph for
    unused parameters at every step. Returns their names.
    """
    batch = next(iter(data_module.dataset()))
    _, _, loss_output = module(batch, loss_kwargs=loss_kwargs)
    loss_output.loss.backward()
    unused = [name for name, p in module.named_parameters() if p.requires_grad and p.grad is None]
    for name, parameter in module.named_parameters():
        parameter.grad = None
        if name in unused:
            parameter.requires_grad_(False)
    return unused


def schedule_steps(config: PretrainConfig, sources: list[RowSource], world_size: int) -> int:
    """Optimiser steps of the whole run (the cosine schedule's length): ``max_steps``, or every epoch's batches."""
    trainer = config.trainer
    n_obs = [source.n_obs for source in sources]
    n_slots = world_size * max(config.data.num_workers, 1)
    steps = 0
    for epoch in range(max(trainer.max_epochs, 1)):
        shares = deal_blocks(epoch_blocks(n_obs, config.data.block_size, trainer.seed, epoch), n_slots)
        batches = batches_per_slot(shares, config.data.batch_size) * max(config.data.num_workers, 1)
        steps += math.ceil(batches / trainer.accumulate_grad_batches)
    return min(steps, trainer.max_steps) if trainer.max_steps > 0 else steps


def _check_resumable(config: PretrainConfig, recipe: PretrainRecipe) -> Path:
    output = Path(config.output)
    checkpoints = checkpoint_files(output / "checkpoints")
    if not checkpoints:
        raise FileNotFoundError(f"nothing to resume: no step-*.ckpt in {str(output / 'checkpoints')!r}")
    saved = PretrainConfig.from_dict(yaml.safe_load((output / RUN_CONFIG_FILE).read_text()))
    if saved.model.family == recipe.family:
        saved = saved.bind(recipe)
    changed = [k for k, v in config.plan_fields().items() if saved.plan_fields()[k] != v]
    if changed:
        raise ValueError(
            f"cannot resume {str(output)!r}: the config's {changed} sections differ from the run's "
            f"{RUN_CONFIG_FILE}; resume with the same data, model, objectives and optimiser (only trainer, "
            "checkpoint and export settings may change)"
        )
    return checkpoints[-1]


def _loggers(output: Path) -> list:
    loggers = [CSVLogger(str(output), name="logs")]
    if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(str(output), name="tensorboard"))
    return loggers


def pretrain(
    config: PretrainConfig | dict | str | os.PathLike,
    *,
    recipe: PretrainRecipe | None = None,
    resume: bool = False,
    callbacks: list[Callback] | None = None,
) -> PretrainResult:
    """Pretrain (or continue pretraining) a model on streamed shards; the Python form of ``scfm pretrain``.

    Parameters
    ----------
    config
        A :class:`PretrainConfig`, its dict form, or a YAML path.
    recipe
        What the model family contributes (module, cell encoder, objectives, export); default: the
        :class:`PretrainRecipe` registered for ``config.model.family`` (see :func:`register_recipe`).
    resume
        Continue from the newest checkpoint of ``config.output`` (model, optimiser, scheduler, step and the
        position in the epoch's data plan), training on exactly the batches the interrupted run had not reached.
    callbacks
        Extra Lightning callbacks (early stopping, custom logging, ...).

    Returns
    -------
    PretrainResult
        Output directory, exported checkpoint (rank 0; loadable by the family's ``from_pretrained`` and
        :func:`scfm.tl.embed`), final step and epoch.

    Notes
    -----
    Under DDP every rank runs this function (Lightning relaunches the command, or ``torchrun``/SLURM start one per
    rank); rank 0 writes the run files. Start a new run in a new ``output``: a directory holding checkpoints is
    only continued with ``resume=True``.
    """
    if not isinstance(config, PretrainConfig):
        config = (
            PretrainConfig.from_dict(config, base_dir=Path.cwd())
            if isinstance(config, dict)
            else PretrainConfig.from_yaml(config)
        )
    recipe = resolve_recipe(config.model.family, recipe)
    config = config.bind(recipe)
    output = Path(config.output)
    is_zero = rank_zero_only.rank == 0
    ckpt_path = _check_resumable(config, recipe) if resume else None
    if not resume and is_zero and checkpoint_files(output / "checkpoints"):
        raise FileExistsError(
            f"{str(output)!r} already holds training checkpoints; pass --resume to continue it or choose a new output"
        )
    seed_everything(config.trainer.seed, workers=True, verbose=False)
    sources = load_sources(config)
    module, vocab = _model_and_vocab(config, recipe, sources, resume)
    data_module = _data_module(config, recipe, sources, module, vocab)
    if is_zero and not resume:
        output.mkdir(parents=True, exist_ok=True)
        write_atomic(output / RUN_CONFIG_FILE, yaml.safe_dump(config.to_dict(), sort_keys=False))
        write_atomic(output / MODEL_CONFIG_FILE, json.dumps(recipe.model_config(module), indent=2, sort_keys=True))
        vocab.save(output / RUN_VOCAB_FILE)

    settings = config.trainer
    loss_kwargs = recipe.loss_kwargs(config.objectives)
    frozen = freeze_unused_parameters(module, data_module, loss_kwargs)
    if frozen and is_zero:
        logger.info("frozen (no objective uses them): %s", ", ".join(frozen))
    plan = WarmupCosineTrainingPlan(
        module,
        lr=config.optimizer.lr,
        weight_decay=config.optimizer.weight_decay,
        warmup_steps=config.optimizer.warmup_steps,
        total_steps=lambda trainer: schedule_steps(config, sources, trainer.world_size),
        log_every_step=True,
        **loss_kwargs,
    )
    run_callbacks = [
        StepCheckpoint(output / "checkpoints", config.checkpoint.every_n_steps, config.checkpoint.keep_last),
        Throughput(data_module.encoder.pad_id(), settings.log_every_n_steps),
    ]
    callbacks = [*run_callbacks, *(callbacks or [])]
    if config.trace_cells:
        callbacks.append(CellTrace(output / "trace", [source.name for source in sources]))
    trainer = Trainer(
        max_epochs=settings.max_epochs,
        max_steps=settings.max_steps,
        precision=settings.precision,
        accumulate_grad_batches=settings.accumulate_grad_batches,
        gradient_clip_val=settings.gradient_clip_val,
        strategy=settings.strategy,
        accelerator=settings.accelerator,
        devices=settings.devices,
        num_nodes=settings.num_nodes,
        logger=_loggers(output),
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        enable_checkpointing=False,
        enable_progress_bar=scfm_settings.show_progress(settings.progress_bar),
        enable_model_summary=False,
        log_every_n_steps=settings.log_every_n_steps,
        reload_dataloaders_every_n_epochs=1,
        use_distributed_sampler=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        default_root_dir=str(output),
    )
    trainer.fit(plan, datamodule=data_module, ckpt_path=str(ckpt_path) if ckpt_path else None)
    module.eval()
    last = checkpoint_files(output / "checkpoints")
    exported = None
    if trainer.is_global_zero:
        exported = export_run(output, recipe=recipe, overwrite=True)
    return PretrainResult(output, exported, trainer.global_step, trainer.current_epoch, last[-1] if last else None)
