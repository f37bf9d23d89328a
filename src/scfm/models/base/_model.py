"""``FoundationModel``: what the scvi-tools model classes of all families share.

A family's model class sets ``family_name``, implements the hooks (:meth:`_new_config`, :meth:`_summary`,
:meth:`setup_anndata`, ``train``) and inherits construction, gene alignment, saving, loading and
``from_pretrained`` from here.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from anndata import AnnData
from lightning.fabric.utilities.seed import seed_everything
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.model.base import BaseModelClass

from scfm._settings import settings
from scfm._validation import RULES, anndata, check_argument, checked_arguments
from scfm.data import ExpressionSource, expression_source
from scfm.genes import GeneAlignment, GeneRules, GeneVocab, align_genes, vocabulary_genes
from scfm.tokenize import check_values
from scfm.train import WarmupCosineTrainingPlan

from ._checkpoint import ANNDATA_FILE, SETUP_FILE, save_checkpoint
from ._device import resolve_device
from ._family import EmbedRequest, Family, get_family
from ._fields import GenePanelLayerField, registry_from_json, registry_to_json
from ._pretrained import Pretrained


class FoundationModel(BaseModelClass):
    """Base class of the family model classes (:class:`~scfm.models.SCGPT`, :class:`~scfm.models.TGPT`, ...).

    Parameters
    ----------
    adata
        AnnData registered with the family's ``setup_anndata``.
    vocab
        Gene vocabulary. ``None`` builds one from the AnnData's genes (training from scratch).
    config
        A complete configuration of the family (used when loading checkpoints); otherwise built from
        ``config_kwargs``.
    min_genes, on_duplicate, gene_id_type, species, aliases
        Gene-alignment rules, passed to :func:`scfm.genes.align_genes` (``docs/genes.md``).
    **config_kwargs
        Settings of the family's configuration dataclass.
    """

    family_name: ClassVar[str]
    vocab_specials: ClassVar[tuple[str, ...] | None] = None
    #: Public methods whose arguments are checked against the shared rules of :mod:`scfm._validation` on every call.
    checked_methods: ClassVar[tuple[str, ...]] = (
        "setup_anndata",
        "from_pretrained",
        "load",
        "get_latent_representation",
        "train",
        "save",
        "predict",
        "predict_metadata",
        "generate",
        "for_finetuning",
    )

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        for name in cls.checked_methods:
            _check_arguments_of(cls, name)

    def __init__(
        self,
        adata: AnnData,
        *,
        vocab: GeneVocab | None = None,
        config: Any = None,
        min_genes: int = 50,
        on_duplicate: Literal["error", "first"] = "error",
        gene_id_type: Literal["auto", "symbol", "ensembl"] = "auto",
        species: Literal["human", "mouse"] = "human",
        aliases: bool = False,
        **config_kwargs,
    ) -> None:
        init_params = self._get_init_params(locals())  # the arguments as given, before any other local exists
        super().__init__(adata)
        source = expression_source(adata, layer=self._setup_args.get("layer"))
        if vocab is None:
            genes = vocabulary_genes(source.var, self._setup_args.get("gene_key"))
            vocab = GeneVocab(genes) if self.vocab_specials is None else GeneVocab(genes, specials=self.vocab_specials)
        self._check_vocab(vocab)
        self.vocab = vocab
        self._min_genes, self._on_duplicate = min_genes, on_duplicate
        self._gene_rules = GeneRules(gene_id_type=gene_id_type, species=species, aliases=aliases)
        self.alignment = self._align(source)
        if config is None:
            config = self._new_config(vocab, **config_kwargs)
        else:
            problem = self.family().vocab_problem(config, vocab)
            if problem:
                raise ValueError(f"the config does not fit the vocabulary: {problem}")
        self.config = config
        self.module = self.family().module_cls(config)
        self.checkpoint_name = "untrained"
        self.checkpoint_sha256 = ""
        self._model_summary_string = f"{self._summary()}; {self.alignment.summary()}"
        self.init_params_ = init_params

    # -- hooks of the families ---------------------------------------------------------------------------------------
    def _new_config(self, vocab: GeneVocab, **config_kwargs):
        """Return a configuration for a model trained from scratch on ``vocab``."""
        raise NotImplementedError

    def _check_vocab(self, vocab: GeneVocab) -> None:
        """Raise ``ValueError`` when ``vocab`` lacks what the family needs (e.g. an end token)."""

    def _summary(self) -> str:
        """One line describing the architecture (without the gene alignment)."""
        config = self.config
        return (
            f"{type(self).__name__}: {config.n_layers} layers, d_model {config.d_model}, {config.n_heads} heads, "
            f"{len(self.vocab)} tokens"
        )

    def _model_card(self) -> str:
        """Return the ``model_card.md`` written by :meth:`save` when none is given."""
        n_params = sum(p.numel() for p in self.module.parameters())
        return (
            f"# scfm {type(self).__name__} checkpoint\n\n- family: {self.family_name}\n- parameters: {n_params:,}\n"
            f"- {self._summary()}\n- origin: {self.checkpoint_name}\n"
        )

    @classmethod
    def _check_pretrained_for(cls, pretrained: Pretrained, adata: AnnData) -> None:
        """Raise when the registered ``adata`` cannot be used with ``pretrained`` (beyond gene alignment)."""

    # -- shared behaviour --------------------------------------------------------------------------------------------
    @classmethod
    def family(cls) -> Family:
        """Return the registered :class:`~scfm.models.base.Family` of this model class."""
        return get_family(cls.family_name)

    @property
    def _setup_args(self) -> dict:
        return self.adata_manager.registry["setup_args"]

    @property
    def pretrained(self) -> Pretrained:
        """The weights of this model as an AnnData-free :class:`Pretrained` handle (shares the module)."""
        return Pretrained(
            self.family_name,
            self.module,
            self.vocab,
            self.checkpoint_name,
            "in-memory model",
            self.checkpoint_sha256 or None,  # not saved yet: no weights file, no hash (missing in provenance)
            genes=tuple(str(name) for name in self.adata.var_names),
        )

    @classmethod
    def _check_expression(cls, adata: AnnData, layer: str | None, gene_key: str | None) -> ExpressionSource:
        """Validate the gene-name column and the matrix that ``setup_anndata`` registers; returns the source."""
        if gene_key is not None and gene_key not in adata.var:
            raise KeyError(f"gene_key={gene_key!r} is not a column of adata.var (columns: {list(adata.var.columns)})")
        source = expression_source(adata, layer=layer)
        if source.is_backed:
            raise ValueError(
                f"{cls.__name__}.setup_anndata needs the matrix in memory; for backed AnnData use scfm.tl.embed"
            )
        check_values(source.matrix, where=source.label)
        return source

    @classmethod
    def _register(cls, adata: AnnData, setup_method_args: dict, layer: str | None, extra_fields=(), **kwargs) -> None:
        """Register the expression layer and ``extra_fields`` with scvi-tools.

        ``kwargs`` are scvi-tools' transfer arguments (``source_registry``: the registry of the data a saved model
        was set up with, whose category mappings the new AnnData's columns are coded with).
        """
        fields = [GenePanelLayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=False), *extra_fields]
        manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        manager.register_fields(adata, **kwargs)
        cls.register_manager(manager)

    @staticmethod
    @contextlib.contextmanager
    def _registration_undone_on_error(adata: AnnData) -> Iterator[None]:
        """Remove what scvi-tools registration added to ``adata`` (``uns``/``obs`` keys) if the block raises."""
        uns_keys, obs_columns = set(adata.uns.keys()), set(adata.obs.columns)
        try:
            yield
        except BaseException:
            for key in set(adata.uns.keys()) - uns_keys:
                del adata.uns[key]
            added = [column for column in adata.obs.columns if column not in obs_columns]
            if added:
                adata.obs.drop(columns=added, inplace=True)
            raise

    @classmethod
    def _register_if_needed(cls, adata: AnnData, **setup_kwargs) -> None:
        try:
            registered = cls._get_most_recent_anndata_manager(adata, required=False) is not None
        except ValueError:  # a copy of a registered AnnData: register the copy itself
            registered = False
        if not registered:
            cls.setup_anndata(adata, **setup_kwargs)

    #: ``(noun, why)`` when a cell expressing none of the matched genes has no representation in this family:
    #: ``from_pretrained`` then refuses such cells before anything is computed. ``None``: every cell has one.
    cells_need_known_genes: ClassVar[tuple[str, str] | None] = None

    def _check_registered_cells(self) -> None:
        """Raise, before anything is computed, when a registered cell has no representation in this family."""
        if self.cells_need_known_genes is None:
            return
        from ._inference import check_cells_express_known_genes

        noun, why = self.cells_need_known_genes
        source = expression_source(self.adata, layer=self._setup_args.get("layer"))
        check_cells_express_known_genes(source, self.alignment, np.asarray(self.adata.obs_names), noun=noun, why=why)

    def _align(self, source: ExpressionSource) -> GeneAlignment:
        return align_genes(
            source.var,
            self.vocab,
            gene_key=self._setup_args.get("gene_key"),
            min_genes=self._min_genes,
            on_duplicate=self._on_duplicate,
            **self._gene_rules.as_kwargs(),
        )

    def _source_and_alignment(self, adata: AnnData | None) -> tuple[AnnData, ExpressionSource, GeneAlignment]:
        """``adata`` (default: the registered one), its registered matrix and its alignment to the vocabulary."""
        adata = self.adata if adata is None else adata
        source = expression_source(adata, layer=self._setup_args.get("layer"))
        alignment = self.alignment if adata is self.adata else self._align(source)
        return adata, source, alignment

    def get_latent_representation(
        self,
        adata: AnnData | None = None,
        indices: np.ndarray | None = None,
        *,
        batch_size: int = 64,
        normalize: bool = True,
        device: str = "auto",
        progress: bool = False,
    ) -> np.ndarray:
        """Cell embeddings from the family's ``embed`` capability (as :func:`scfm.tl.embed` computes them).

        Parameters
        ----------
        adata
            Cells to embed (default: the registered AnnData), read from the registered layer and aligned to the
            vocabulary by the registered gene names; no registration needed.
        indices
            Rows of ``adata`` to embed (default: all).
        batch_size, normalize, device, progress
            Cells per forward pass (results do not depend on it), L2 normalisation, device, progress bar.

        Returns
        -------
        ``(n_cells, d_model)`` float32 array.
        """
        adata, source, alignment = self._source_and_alignment(adata)
        rows = checked_rows(indices, adata.n_obs)
        request = EmbedRequest({}, self._move_to(device), batch_size, normalize=normalize, progress=progress, rows=rows)
        return self.family().embed(self.pretrained, adata, source, alignment, request).embeddings

    def _move_to(self, device: str | torch.device) -> torch.device:
        target = resolve_device(device)
        self.module.to(target)
        return target

    @classmethod
    def _from_loaded(
        cls,
        pretrained: Pretrained,
        adata: AnnData,
        *,
        min_genes: int,
        on_duplicate: Literal["error", "first"] = "error",
        **gene_rules,
    ):
        """Return a model on ``adata`` (registered) holding a copy of the loaded checkpoint's weights, in eval mode."""
        model = cls(
            adata,
            vocab=pretrained.vocab,
            config=pretrained.config,
            min_genes=min_genes,
            on_duplicate=on_duplicate,
            **gene_rules,
        )
        model.module.load_state_dict(pretrained.module.state_dict())
        model.module.eval()
        model.is_trained_ = True
        model.checkpoint_name = pretrained.name
        model.checkpoint_sha256 = pretrained.sha256
        return model

    training_options: ClassVar[tuple[str, ...]] = ()

    def _training_data(self, loader: dict[str, Any], **options) -> tuple[Any, dict[str, Any]]:
        """Return the Lightning data module of the registered cells and the extra arguments of the training plan.

        ``loader`` holds ``batch_size``, ``validation_size``, ``seed`` and ``num_workers``; ``options`` the family's
        ``training_options`` that the caller gave.
        """
        raise NotImplementedError

    def train(
        self,
        max_epochs: int = 10,
        *,
        batch_size: int = 32,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 200,
        validation_size: float = 0.0,
        seed: int = 0,
        accelerator: str = "auto",
        devices: int | str = "auto",
        num_workers: int = 0,
        train_size: float | None = None,
        early_stopping: bool = False,
        early_stopping_patience: int = 5,
        plan_kwargs: dict[str, Any] | None = None,
        datasplitter_kwargs: dict[str, Any] | None = None,
        **kwargs,
    ) -> None:
        """Train on the registered cells with the family's objectives, AdamW, a linear warm-up and a cosine decay.

        Parameters
        ----------
        max_epochs, batch_size, lr, weight_decay, warmup_steps
            Optimisation settings (``warmup_steps`` in optimiser steps).
        validation_size
            Fraction of cells held out to log ``validation_loss``.
        seed
            Seeds the split, the masks and the initial shuffle.
        accelerator, devices, num_workers
            Lightning's accelerator and devices; DataLoader worker processes.
        train_size
            scvi-tools' name for the training fraction: ``validation_size = 1 - train_size`` (give one of the two).
        early_stopping, early_stopping_patience
            Stop when ``validation_loss`` has not improved for ``early_stopping_patience`` epochs (needs held-out
            cells: ``validation_size > 0`` or ``train_size < 1``).
        plan_kwargs
            As in scvi-tools: training-plan settings (``lr``, ``weight_decay``, ``warmup_steps`` and the family's
            training options, e.g. ``mask_ratio``); they override the keyword arguments of the same name.
        datasplitter_kwargs
            As in scvi-tools: data-loader settings; ``num_workers`` is supported.
        **kwargs
            The family's training options (``training_options``: see the family's ``train``), then arguments of the
            Lightning trainer (through :class:`scvi.train.TrainRunner`).
        """
        if train_size is not None:
            check_argument("train", "train_size", train_size)
            if validation_size:
                raise ValueError("train: give train_size or validation_size, not both (validation = 1 - train_size)")
            validation_size = round(1.0 - float(train_size), 12)
        for key, value in dict(plan_kwargs or {}).items():
            if key == "lr":
                lr = value
            elif key == "weight_decay":
                weight_decay = value
            elif key == "warmup_steps":
                warmup_steps = value
            elif key in self.training_options:
                if key in RULES:
                    check_argument("train", key, value)
                kwargs[key] = value
            else:
                known = ["lr", "weight_decay", "warmup_steps", *self.training_options]
                raise ValueError(
                    f"train: plan_kwargs has the unknown setting {key!r}; {type(self).__name__} takes {known}"
                )
        for key, value in dict(datasplitter_kwargs or {}).items():
            if key != "num_workers":
                raise ValueError(f"train: datasplitter_kwargs supports only 'num_workers', got {key!r}")
            num_workers = value
        check_training_arguments(max_epochs, batch_size, lr, weight_decay, warmup_steps, validation_size)
        check_argument("train", "early_stopping", early_stopping)
        if early_stopping:
            check_argument("train", "early_stopping_patience", early_stopping_patience)
            if validation_size <= 0:
                raise ValueError(
                    "train: early_stopping monitors validation_loss on held-out cells; pass validation_size=0.1 "
                    "(or train_size=0.9)"
                )
            from lightning.pytorch.callbacks import EarlyStopping

            stopper = EarlyStopping(monitor="validation_loss", patience=early_stopping_patience, mode="min")
            kwargs["callbacks"] = [*kwargs.get("callbacks", []), stopper]
        seed_everything(seed, verbose=False)
        options = {key: kwargs.pop(key) for key in self.training_options if key in kwargs}
        loader = {
            "batch_size": batch_size,
            "validation_size": validation_size,
            "seed": seed,
            "num_workers": num_workers,
        }
        data_module, plan_options = self._training_data(loader, **options)
        plan = WarmupCosineTrainingPlan(
            self.module, lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps, **plan_options
        )
        self._run_training(
            plan,
            data_module,
            max_epochs=max_epochs,
            accelerator=accelerator,
            devices=devices,
            validation_size=validation_size,
            **kwargs,
        )

    def _run_training(
        self,
        plan,
        data_module,
        *,
        max_epochs: int,
        accelerator: str,
        devices: int | str,
        validation_size: float,
        **trainer_kwargs,
    ) -> None:
        """Fit ``plan`` on ``data_module`` with scvi-tools' ``TrainRunner``; the module ends in eval mode.

        The progress bar follows :data:`scfm.settings` (``enable_progress_bar=False`` always hides it); Lightning's
        banners and model summary stay quiet below verbosity 3 (hint).
        """
        from scvi.train import TrainRunner

        trainer_kwargs.setdefault("check_val_every_n_epoch", 1 if validation_size > 0 else None)
        trainer_kwargs["enable_progress_bar"] = settings.show_progress(trainer_kwargs.get("enable_progress_bar", True))
        trainer_kwargs.setdefault("enable_model_summary", settings.verbosity >= 3)
        was_trained = self.is_trained_
        if self.history_ is None:
            self.is_trained_ = False  # scvi-tools starts ``history`` on a model's first training run
        self.module.train()
        try:
            with settings.quiet_lightning():  # the Trainer prints its banners when it is built
                runner = TrainRunner(
                    self,
                    training_plan=plan,
                    data_splitter=data_module,
                    max_epochs=max_epochs,
                    accelerator=accelerator,
                    devices=devices,
                    **trainer_kwargs,
                )
                runner()
        except BaseException:
            self.is_trained_ = was_trained
            self.module.eval()
            raise
        self.module.eval()
        self.checkpoint_name = "trained in session"

    # -- persistence -------------------------------------------------------------------------------------------------
    def save(
        self,
        dir_path: str | os.PathLike,
        overwrite: bool = False,
        *,
        model_card: str | None = None,
        half_precision: bool = False,
        save_anndata: bool = False,
        **kwargs,
    ) -> Path:
        """Write a checkpoint directory (``config.json``, ``vocab.json``, ``model.safetensors``, ``model_card.md``).

        The directory also holds ``setup.json``, the arguments of ``setup_anndata`` that registered the AnnData, which
        :meth:`load` applies to the AnnData it is given, and with ``save_anndata=True`` the AnnData (``adata.h5ad``).

        Parameters
        ----------
        dir_path
            Directory to write (atomically: a temporary sibling renamed into place).
        overwrite
            Replace an existing directory.
        model_card
            Text of ``model_card.md`` (default: a summary of the architecture and origin).
        half_precision
            Store float16 weights (half the size; loaded back as float32).
        save_anndata
            Also write the registered AnnData to ``adata.h5ad``, so that ``load(dir_path)`` needs no AnnData.
        **kwargs
            Keyword arguments of :meth:`anndata.AnnData.write_h5ad` (e.g. ``compression="gzip"``), with
            ``save_anndata=True``.
        """
        fields = registry_to_json(self.adata_manager.registry)
        fields.pop(REGISTRY_KEYS.X_KEY, None)  # the gene panel is aligned anew on every AnnData
        setup = {
            "setup_args": {key: value for key, value in self._setup_args.items() if _json_ready(value)},
            "fields": fields,
            "var_names": [str(name) for name in self.adata.var_names],  # the genes, for prepare_query_anndata
        }
        extra_files = {SETUP_FILE: lambda path: path.write_text(json.dumps(setup, indent=2, sort_keys=True) + "\n")}
        if save_anndata:
            extra_files[ANNDATA_FILE] = lambda path: self.adata.write_h5ad(path, **kwargs)
        elif kwargs:
            raise TypeError(
                f"save got unexpected arguments {sorted(kwargs)}; AnnData writing options need save_anndata=True"
            )
        return save_checkpoint(
            dir_path,
            config=self.config.to_dict(),
            vocab=self.vocab,
            state_dict=self.module.state_dict(),
            model_card=model_card or self._model_card(),
            overwrite=overwrite,
            half_precision=half_precision,
            extra_files=extra_files,
        )

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike | Pretrained | None = None,
        adata: AnnData | None = None,
        *,
        min_genes: int = 50,
        on_duplicate: Literal["error", "first"] = "error",
        gene_id_type: Literal["auto", "symbol", "ensembl"] = "auto",
        species: Literal["human", "mouse"] = "human",
        aliases: bool = False,
        **setup_kwargs,
    ):
        """Load a checkpoint of this family and align ``adata`` to its vocabulary.

        Parameters
        ----------
        name_or_path
            A checkpoint directory, a bundled name, an already loaded :class:`Pretrained`, or ``None`` for the
            family's bundled checkpoint. Nothing is downloaded.
        adata
            AnnData to align; registered with ``setup_anndata(**setup_kwargs)`` unless it already is.
        min_genes, on_duplicate, gene_id_type, species, aliases
            Gene-alignment rules, see :func:`scfm.genes.align_genes` and ``docs/genes.md`` (Ensembl IDs resolve by
            default; ``aliases=True`` also tries aliases and previous symbols of unmatched genes).
        **setup_kwargs
            Arguments of the family's ``setup_anndata`` (``layer``, ``gene_key``, ...).
        """
        from ._resolve import load_pretrained

        if adata is None:
            raise ValueError(
                "from_pretrained needs the AnnData to align to the checkpoint; for AnnData-free use call "
                "scfm.models.load_pretrained or a tool such as scfm.tl.embed"
            )
        if adata.n_obs == 0:
            raise ValueError(
                f"{cls.__name__}.from_pretrained: the AnnData has no cells (n_obs == 0); pass the cells to embed, "
                "train on or annotate"
            )
        if isinstance(name_or_path, Pretrained):
            pretrained = name_or_path
            if pretrained.family != cls.family_name:
                raise ValueError(f"{pretrained.name} is a {pretrained.family!r} model, not a {cls.__name__} one")
        else:
            pretrained = load_pretrained(name_or_path, family=cls.family_name)
        with cls._registration_undone_on_error(adata):
            cls._register_if_needed(adata, **setup_kwargs)
            cls._check_pretrained_for(pretrained, adata)
            model = cls._from_loaded(
                pretrained,
                adata,
                min_genes=min_genes,
                on_duplicate=on_duplicate,
                gene_id_type=gene_id_type,
                species=species,
                aliases=aliases,
            )
            model._check_registered_cells()
            return model

    @classmethod
    def load(
        cls,
        dir_path: str | os.PathLike,
        adata: AnnData | None = None,
        *,
        accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto",
        device: str = "auto",
        **kwargs,
    ):
        """Load a checkpoint directory written by :meth:`save`, as scvi-tools' ``load`` does.

        Parameters
        ----------
        dir_path
            The directory :meth:`save` wrote.
        adata
            AnnData to align and register; ``None`` reads the AnnData saved with ``save(..., save_anndata=True)``.
            An AnnData that is not registered yet is registered with the ``setup_anndata`` arguments stored in the
            directory (``setup.json``), unless ``kwargs`` give others.
        accelerator, device
            Where the weights go: ``accelerator="cpu"`` keeps them on the CPU; otherwise ``device`` (``"auto"``,
            ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``) decides, ``"auto"`` picking CUDA, then MPS, then CPU.
        **kwargs
            Arguments of :meth:`from_pretrained` (``min_genes``, ``on_duplicate``, ``setup_anndata`` arguments).
        """
        path = Path(dir_path).expanduser()
        if adata is None:
            if not (path / ANNDATA_FILE).is_file():
                raise ValueError(
                    f"{cls.__name__}.load: {str(path)!r} holds no saved AnnData ({ANNDATA_FILE}); pass adata=..., or "
                    "save the model with save(..., save_anndata=True)"
                )
            import anndata as ad

            adata = ad.read_h5ad(path / ANNDATA_FILE)
        if (path / SETUP_FILE).is_file():
            kwargs = cls._saved_setup(json.loads((path / SETUP_FILE).read_text()), kwargs)
        model = cls.from_pretrained(dir_path, adata, **kwargs)
        target = torch.device("cpu") if accelerator == "cpu" else resolve_device(device)
        model.module.to(target)
        return model

    @classmethod
    def _saved_setup(cls, saved: dict, kwargs: dict) -> dict:
        """``kwargs`` completed with the saved setup arguments and, when they are all kept, the saved field states."""
        if "setup_args" not in saved:  # an earlier setup.json: the arguments only
            return {**saved, **kwargs}
        setup_args = saved["setup_args"]
        kept = all(kwargs[key] == value for key, value in setup_args.items() if key in kwargs)
        merged = {**setup_args, **kwargs}
        if kept and saved.get("fields"):
            merged["source_registry"] = registry_from_json(saved["fields"])
        return merged


def _json_ready(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def check_training_arguments(
    max_epochs: int, batch_size: int, lr: float, weight_decay: float, warmup_steps: int, validation_size: float
) -> None:
    """Raise ``TypeError``/``ValueError`` naming the first optimisation argument of the wrong type or range."""
    for name, value in {
        "max_epochs": max_epochs,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "warmup_steps": warmup_steps,
        "validation_size": validation_size,
    }.items():
        check_argument("train", name, value)


def _check_arguments_of(cls: type, name: str) -> None:
    """Replace ``cls.<name>`` by a version that checks its arguments (``SCGPT.train: batch_size must be ...``)."""
    for owner in cls.__mro__:
        if name in owner.__dict__:
            attribute = owner.__dict__[name]
            break
    else:
        return
    is_classmethod = isinstance(attribute, classmethod)
    function = attribute.__func__ if is_classmethod else attribute
    function = getattr(function, "__scfm_unchecked__", function)
    checked = checked_arguments(function, owner=cls, adata=anndata(allow_view=False))
    checked.__scfm_unchecked__ = function
    setattr(cls, name, classmethod(checked) if is_classmethod else checked)


def checked_rows(indices: object, n_obs: int) -> np.ndarray | None:
    """Return ``indices`` as an integer array of row positions in ``range(n_obs)`` (``None``: all rows)."""
    if indices is None:
        return None
    rows = np.asarray(indices)
    if rows.dtype == bool:
        if rows.shape != (n_obs,):
            raise ValueError(f"a boolean indices mask needs {n_obs} entries, got shape {rows.shape}")
        return np.flatnonzero(rows)
    if rows.ndim != 1 or (rows.size and rows.dtype.kind not in "iu"):
        raise ValueError(
            f"indices must be a 1-D array of integer row positions, got {rows.dtype} of shape {rows.shape}"
        )
    if rows.size and (rows.min() < 0 or rows.max() >= n_obs):
        raise ValueError(
            f"indices must lie in [0, {n_obs}) (the AnnData has {n_obs} cells), got {rows.min()}..{rows.max()}"
        )
    return rows.astype(np.int64)
