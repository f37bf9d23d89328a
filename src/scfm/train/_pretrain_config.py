"""The ``scfm pretrain`` recipe: a YAML file read into validated dataclasses."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from ._recipe import PretrainRecipe

STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true")
PRECISIONS = ("32-true", "32", "bf16-mixed", "16-mixed", "bf16-true")


@dataclass
class DataSettings:
    """Where the cells come from and how they are read.

    ``shards``: ``.h5ad`` paths or globs (CSR matrices of raw counts). ``soma``: keyword arguments of
    :class:`scfm.data.SomaExperimentSource` (``uri``, ``measurement``, ``layer``, ``obs_value_filter``, ...), for
    TileDB-SOMA / CELLxGENE Census experiments (``pip install 'scfm-models[soma]'``). ``dataset_key``: obs column naming
    each cell's dataset, whose ``var['measured_in:<dataset>']`` masks say which genes it measured. ``vocab``:
    ``"union"`` (every gene named by a source) or a ``vocab.json`` path; ignored with ``model.init_from``.
    ``block_size`` rows are read at a time and ``buffer_blocks`` blocks are shuffled together (the memory bound);
    ``length_bucketing`` groups cells of similar length into a batch; ``pad_to_max_len`` pads every batch to
    ``model.max_len`` (static shapes, as the reference code does; a benchmark baseline). ``num_workers``: DataLoader
    workers per rank.
    """

    shards: list[str] = field(default_factory=list)
    soma: dict[str, Any] | None = None
    layer: str | None = None
    gene_key: str | None = None
    dataset_key: str | None = "dataset"
    vocab: str = "union"
    min_genes: int = 50
    batch_size: int = 32
    block_size: int = 512
    buffer_blocks: int = 8
    length_bucketing: bool = True
    pad_to_max_len: bool = False
    num_workers: int = 0


@dataclass
class ModelSettings:
    """Model settings of a pretraining run.

    ``family``: the model family (one with a registered :class:`~scfm.train.PretrainRecipe`); ``init_from``: a
    checkpoint (directory or bundled name) to continue pretraining, whose vocabulary and architecture are kept;
    ``max_len``: tokens per cell in training; ``architecture``: fields of the family's config (``d_model``,
    ``n_layers``, ...) for a model from scratch.
    """

    family: str = "scgpt"
    init_from: str | None = None
    max_len: int = 256
    architecture: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimizerSettings:
    """AdamW with a linear warm-up and a cosine decay over the run."""

    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 200


@dataclass
class TrainerSettings:
    """Lightning ``Trainer`` settings.

    ``strategy: ddp`` with ``devices``/``num_nodes`` runs data-parallel, launched by Lightning itself, ``torchrun``
    or SLURM; ``precision: bf16-mixed`` on GPUs.
    """

    max_epochs: int = 1
    max_steps: int = -1
    precision: str = "32-true"
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    strategy: str = "auto"
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    seed: int = 0
    log_every_n_steps: int = 10
    progress_bar: bool = True


@dataclass
class CheckpointSettings:
    """Training checkpoints (model, optimiser, scheduler, step, data position).

    They are written every ``every_n_steps`` optimiser steps and at the end; the ``keep_last`` newest are kept.
    """

    every_n_steps: int = 500
    keep_last: int = 2


@dataclass
class ExportSettings:
    """Settings of the exported checkpoint.

    Inference settings written into its ``config.json`` (``max_len``, ``cell_embedding``) and whether to store
    float16 weights.
    """

    max_len: int | None = None
    cell_embedding: str | None = None
    half_precision: bool = False


@dataclass
class PretrainConfig:
    """A pretraining run.

    ``output`` is the run directory: ``checkpoints/``, ``logs/``, ``export/``, the resolved ``config.yaml`` and
    ``vocab.json``. ``objectives`` is the family's section: a mapping until :meth:`bind` reads it into the recipe's
    ``objectives_cls`` (scGPT: ``mode``, ``mask_ratio``, ``gep_weight``, ...). ``trace_cells`` writes every trained
    cell to ``trace/rank<r>.csv`` (audits and tests; one line per cell).
    """

    output: str
    data: DataSettings = field(default_factory=DataSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    objectives: Any = field(default_factory=dict)
    optimizer: OptimizerSettings = field(default_factory=OptimizerSettings)
    trainer: TrainerSettings = field(default_factory=TrainerSettings)
    checkpoint: CheckpointSettings = field(default_factory=CheckpointSettings)
    export: ExportSettings = field(default_factory=ExportSettings)
    trace_cells: bool = False

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, base_dir: str | os.PathLike | None = None) -> PretrainConfig:
        """Build and validate; relative ``output``/shard/vocab paths are taken relative to ``base_dir``."""
        if not isinstance(raw, dict):
            raise ValueError("a pretraining config must be a mapping of sections (data, model, trainer, ...)")
        sections = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - set(sections))
        if unknown:
            raise ValueError(f"unknown config sections {unknown}; known: {sorted(sections)}")
        if "output" not in raw:
            raise ValueError("the config needs output: <run directory>")
        values: dict[str, Any] = {}
        for name, value in raw.items():
            kind = sections[name].default_factory if callable(sections[name].default_factory) else None
            if kind is not None and dataclasses.is_dataclass(kind):
                values[name] = _section(kind, name, value or {})
            elif kind is dict:
                if not isinstance(value or {}, dict):
                    raise ValueError(f"config section {name!r} must be a mapping, got {type(value).__name__}")
                values[name] = dict(value or {})
            else:
                values[name] = value
        config = cls(**values)
        if base_dir is not None:
            config._resolve_paths(Path(base_dir))
        config.validate()
        return config

    @classmethod
    def from_yaml(
        cls,
        path: str | os.PathLike,
        *,
        shards: list[str] | None = None,
        output: str | os.PathLike | None = None,
    ) -> PretrainConfig:
        """Read a YAML recipe; relative paths in it (``output``, shards, vocabulary, SOMA uri) are relative to it.

        Parameters
        ----------
        path
            The recipe file.
        shards
            Replace the recipe's ``data.shards`` (paths or globs, relative to the current directory), e.g. from
            ``scfm pretrain --shards``.
        output
            Replace the recipe's ``output`` run directory (relative to the current directory).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config {str(path)!r} does not exist")
        try:
            recipe = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ValueError(f"config {str(path)!r} is not valid YAML: {err}") from err
        if not isinstance(recipe, dict):
            raise ValueError(
                f"config {str(path)!r} must be a YAML mapping of sections (data:, model:, trainer:, ...), "
                f"got {type(recipe).__name__}"
            )
        data = dict(recipe.get("data") or {})
        if shards is not None:
            data["shards"] = [str(Path(shard).absolute()) for shard in shards]
            recipe = {**recipe, "data": data}
        if output is not None:
            recipe = {**recipe, "output": str(Path(output).absolute())}
        return cls.from_dict(recipe, base_dir=path.absolute().parent)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def _resolve_paths(self, base: Path) -> None:
        self.output = str((base / self.output).resolve())
        self.data.shards = [s if os.path.isabs(s) else str(base / s) for s in self.data.shards]
        if self.data.vocab != "union" and not os.path.isabs(self.data.vocab):
            self.data.vocab = str(base / self.data.vocab)
        uri = (self.data.soma or {}).get("uri")
        if isinstance(uri, str) and "://" not in uri and not os.path.isabs(uri):
            self.data.soma = {**self.data.soma, "uri": str(base / uri)}

    def validate(self) -> None:
        problems = []
        data, trainer = self.data, self.trainer
        if not data.shards and not data.soma:
            problems.append("data needs shards: [...] or soma: {uri: ...}")
        for name in ("batch_size", "block_size", "buffer_blocks", "min_genes"):
            if getattr(data, name) < 1:
                problems.append(f"data.{name} must be >= 1")
        if data.num_workers < 0:
            problems.append("data.num_workers must be >= 0")
        if not isinstance(self.model.family, str) or not self.model.family:
            problems.append("model.family must name a model family")
        if self.model.init_from and self.model.architecture:
            problems.append("model.architecture cannot change a model loaded with init_from; drop one of them")
        if self.model.max_len < 2:
            problems.append("model.max_len must be >= 2")
        if trainer.strategy not in STRATEGIES:
            problems.append(f"trainer.strategy {trainer.strategy!r} is not one of {STRATEGIES}")
        if str(trainer.precision) not in PRECISIONS:
            problems.append(f"trainer.precision {trainer.precision!r} is not one of {PRECISIONS}")
        if trainer.max_epochs < 1 and trainer.max_steps < 1:
            problems.append("set trainer.max_epochs or trainer.max_steps to at least 1")
        if trainer.accumulate_grad_batches < 1:
            problems.append("trainer.accumulate_grad_batches must be >= 1")
        if self.checkpoint.every_n_steps < 1 or self.checkpoint.keep_last < 1:
            problems.append("checkpoint.every_n_steps and checkpoint.keep_last must be >= 1")
        if problems:
            raise ValueError("invalid pretraining config: " + "; ".join(problems))

    def bind(self, recipe: PretrainRecipe) -> PretrainConfig:
        """Return a copy whose ``objectives`` are read into ``recipe.objectives_cls`` (its defaults filled in).

        The copy is checked by the recipe; ``ValueError`` names every problem.
        """
        if recipe.family != self.model.family:
            raise ValueError(
                f"the recipe trains {recipe.family!r} models but the config's model.family is {self.model.family!r}"
            )
        objectives = self.objectives
        if not isinstance(objectives, recipe.objectives_cls):
            raw = dataclasses.asdict(objectives) if dataclasses.is_dataclass(objectives) else objectives
            objectives = _section(recipe.objectives_cls, "objectives", raw or {})
        bound = dataclasses.replace(self, objectives=objectives)
        problems = recipe.check(bound)
        if problems:
            raise ValueError("invalid pretraining config: " + "; ".join(problems))
        return bound

    def plan_fields(self) -> dict[str, Any]:
        """Return the parts a resumed run must share with the run it continues."""
        return {key: self.to_dict()[key] for key in ("data", "model", "objectives", "optimizer")}


def _section(kind: type, name: str, raw: Any):
    if not isinstance(raw, dict):
        raise ValueError(f"config section {name!r} must be a mapping, got {type(raw).__name__}")
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"unknown keys {unknown} in config section {name!r}; known: {sorted(known)}")
    return kind(**raw)
