"""``SCGPT``: the scGPT family as an scvi-tools model."""

from __future__ import annotations

import dataclasses
import os
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS

from scfm.data import CellDataModule, expressed_gene_counts
from scfm.genes import GeneVocab
from scfm.tokenize import check_values

from ..base import ArchesMixin, FoundationModel, ObsCategoryField, Pretrained, checked_rows, load_pretrained
from ._config import SCGPTConfig
from ._contrastive import TwoViewCellDataset, TwoViewCollator
from ._convert import pretrained_from_reference
from ._data import MaskedValueCollator, TokenizedCellDataset
from ._embed import binning_config, embed_cells
from ._perturb_setup import PerturbationSetup


class SCGPT(ArchesMixin, PerturbationSetup, FoundationModel):
    """scGPT (Cui et al. 2024): gene tokens with binned values, a ``<cls>`` cell token, a transformer encoder.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    vocab
        Gene vocabulary. ``None`` builds one from the AnnData's genes (pretraining from scratch).
    config
        A complete :class:`SCGPTConfig` (used when loading checkpoints); otherwise built from ``config_kwargs``.
    min_genes, on_duplicate
        Passed to :func:`scfm.genes.align_genes`.
    **config_kwargs
        Architecture settings of :class:`SCGPTConfig` (``d_model``, ``n_layers``, ``max_len``, ...).
        ``use_batch_embeddings=True`` concatenates a batch embedding (from ``batch_key``) to the transformer output;
        ``batch_discriminator=True`` and ``domain_batchnorm=True`` also take their batches from ``batch_key``.

    Examples
    --------
    >>> scfm.models.SCGPT.setup_anndata(adata, layer="counts")
    >>> model = scfm.models.SCGPT.from_pretrained("default", adata)
    >>> adata.obsm["X_scgpt"] = model.get_latent_representation()
    """

    family_name = "scgpt"
    checked_methods = (*FoundationModel.checked_methods, "prepare_query_anndata", "load_query_data")

    # -- reference mapping (scArches): the batch-indexed parts, see ArchesMixin ---------------------------------------
    arches_batch_tensors = (
        "batch_embedding.embedding.weight",
        "batch_discriminator.classifier.out.weight",
        "batch_discriminator.classifier.out.bias",
    )
    arches_batch_modules = ("domain_batchnorm.norms",)
    arches_classifier_prefixes = ("classifier.",)

    @classmethod
    def _query_config(cls, config: SCGPTConfig, categories: list[str], reference_name: str) -> SCGPTConfig:
        n_reference = len(config.batch_categories)
        return dataclasses.replace(
            config,
            n_batches=len(categories),
            batch_categories=list(categories),
            extra={**config.extra, "query_of": reference_name, "reference_batches": n_reference},
        )

    def _new_config(self, vocab: GeneVocab, *, use_batch_embeddings: bool = False, **config_kwargs) -> SCGPTConfig:
        uses_batches = use_batch_embeddings or any(
            config_kwargs.get(k) for k in ("batch_discriminator", "domain_batchnorm")
        )
        if uses_batches and self._setup_args.get("batch_key") is None:
            raise ValueError(
                "batch embeddings, the batch discriminator and batch norm need setup_anndata(batch_key=...)"
            )
        categories = self._registered_batches() if uses_batches else []
        return SCGPTConfig(
            n_tokens=len(vocab),
            pad_id=vocab.pad_id,
            cls_id=vocab.cls_id,
            n_batches=len(categories),
            batch_categories=categories,
            batch_embedding=use_batch_embeddings,
            **config_kwargs,
        )

    def _registered_batches(self) -> list[str]:
        mapping = self.adata_manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY).categorical_mapping
        return [str(name) for name in mapping]

    def batch_codes(self, adata: AnnData | None = None) -> np.ndarray:
        """Return the batch index of every cell of ``adata`` in this model's batch categories.

        Raises
        ------
        ValueError
            The model has no batches, ``batch_key`` was not registered, or ``adata`` holds batches the model
            was not trained on (they have no embedding or normalisation statistics).
        """
        adata = self.adata if adata is None else adata
        batch_key = self._setup_args.get("batch_key")
        if self.config.n_batches == 0:
            raise ValueError("this model has no batch-specific parts")
        if batch_key is None or batch_key not in adata.obs:
            raise KeyError(f"the model needs adata.obs[{batch_key!r}] (the batch_key it was set up with)")
        if not self.config.batch_categories:  # models saved before batch names were recorded
            if adata is not self.adata:
                raise ValueError("this model did not record its batch names; it can only encode its training data")
            return self.adata_manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY).ravel().astype(np.int64)
        return _codes(adata.obs[batch_key], self.config.batch_categories, f"adata.obs[{batch_key!r}]", "batches")

    def label_codes(self, adata: AnnData | None = None) -> np.ndarray:
        """Index of every cell's label in ``config.label_categories`` (``-1``: missing or unknown label)."""
        adata = self.adata if adata is None else adata
        labels_key = self._setup_args.get("labels_key")
        if not self.config.label_categories:
            raise ValueError("this model has no classification head (config.label_categories is empty)")
        if labels_key is None or labels_key not in adata.obs:
            raise KeyError(f"training the classifier needs adata.obs[{labels_key!r}] (setup_anndata(labels_key=...))")
        values = adata.obs[labels_key]
        strings = values.astype(str).where(values.notna(), None)
        return pd.Categorical(strings, categories=self.config.label_categories).codes.astype(np.int64)

    # -- data registration -----------------------------------------------------------------------
    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        layer: str | None = None,
        batch_key: str | None = None,
        labels_key: str | None = None,
        gene_key: str | None = None,
        perturbation_key: str | None = None,
        control: str | None = None,
        **kwargs,
    ) -> None:
        """Register the expression matrix, batch and label columns, and the gene-name source.

        ``batch_key`` and ``labels_key`` are registered as the categorical ``obs`` fields ``"batch"`` and
        ``"labels"`` (missing labels allowed; on a new AnnData new values extend the categories, and
        :meth:`batch_codes` refuses batches that a model with batch-specific parts was not trained on).

        Parameters
        ----------
        adata
            AnnData with raw counts or log-normalised values (not scaled: negative values are rejected).
        layer
            Layer holding the expression (``None`` = ``adata.X``).
        batch_key, labels_key
            Columns of ``adata.obs`` with batch and cell-type labels.
        gene_key
            Column of ``adata.var`` holding gene symbols (``None`` = ``var_names``, with auto-detection of
            common symbol columns when var_names are Ensembl ids).
        perturbation_key, control
            Column of ``adata.obs`` with each cell's perturbation (``"GENE"`` or ``"A+B"``) and the label of its
            control cells, for :meth:`finetune_perturbation` (registered as the categorical field
            ``"perturbation"``).
        **kwargs
            scvi-tools' transfer arguments (``source_registry``), as :meth:`load` passes them.
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        for key, name in ((batch_key, "batch_key"), (labels_key, "labels_key")):
            if key is not None and key not in adata.obs:
                raise KeyError(f"{name}={key!r} is not a column of adata.obs (columns: {list(adata.obs.columns)})")
        cls._check_expression(adata, layer, gene_key)
        fields = [
            ObsCategoryField(REGISTRY_KEYS.BATCH_KEY, batch_key),
            ObsCategoryField(REGISTRY_KEYS.LABELS_KEY, labels_key),
            *cls.perturbation_fields(adata, perturbation_key, control),
        ]
        cls._register(adata, setup_method_args, layer, fields, **kwargs)

    # -- training --------------------------------------------------------------------------------
    training_options = (
        "mode",
        "mask_ratio",
        "gep_weight",
        "gepc_weight",
        "ecs_weight",
        "ecs_threshold",
        "dar_weight",
        "cls_weight",
        "head_lr_factor",
        "n_zero_queries",
        "max_len",
        "measured_key",
        "contrastive_weight",
        "contrastive_temperature",
        "view_min_keep",
        "minibatch_key",
    )

    def train(
        self,
        max_epochs: int = 10,
        *,
        mode: Literal["masked", "generative"] = "masked",
        mask_ratio: float = 0.4,
        gep_weight: float = 1.0,
        gepc_weight: float = 1.0,
        ecs_weight: float = 0.0,
        ecs_threshold: float = 0.6,
        dar_weight: float = 0.0,
        cls_weight: float = 0.0,
        head_lr_factor: float = 1.0,
        n_zero_queries: int = 128,
        max_len: int | None = None,
        measured_key: str | None = None,
        contrastive_weight: float = 0.0,
        contrastive_temperature: float = 0.1,
        view_min_keep: float = 0.5,
        minibatch_key: str | None = None,
        **kwargs,
    ) -> None:
        """Self-supervised training with GEP + GEPC (+ ECS, + contrastive), AdamW and a warm-up + cosine schedule.

        Parameters
        ----------
        max_epochs
            Passes over the registered cells.
        mode
            ``"masked"``: masked genes get the mask value as input. ``"generative"``: masked genes are
            "unknown" under scGPT's generative attention mask (they attend only to known tokens and themselves).
        mask_ratio
            Fraction of each cell's gene tokens whose values are hidden and predicted (GEP).
        gep_weight, gepc_weight, ecs_weight, ecs_threshold
            Objective weights and the ECS similarity threshold.
        dar_weight
            Weight of the batch discriminator's cross-entropy behind gradient reversal (needs a model built
            with ``batch_discriminator=True``).
        cls_weight
            Weight of the cell-type cross-entropy (needs ``label_categories`` and ``labels_key``; cells whose
            label is missing or not a category do not contribute).
        head_lr_factor
            Learning-rate multiplier of the batch discriminator and the classifier relative to ``lr``.
        n_zero_queries
            Measured-but-unexpressed genes queried per cell by GEPC with target 0.
        max_len
            Tokens per cell in training (default: the model's ``max_len``); longer cells are subsampled.
        measured_key
            Column of ``adata.obs`` naming each cell's dataset; ``adata.var`` must then hold boolean columns
            ``measured_in:<dataset>``. A gene a dataset did not measure is never used as a zero target.
        contrastive_weight, contrastive_temperature
            Weight and temperature of the contrastive objective (InfoNCE between two views of each cell; the other
            cells of the minibatch are the negatives). With a positive weight every cell is seen as two views made by
            binomial thinning of its raw counts, so the registered matrix must hold integer counts.
        view_min_keep
            Each view keeps every count with a probability drawn uniformly from ``[view_min_keep, 1]``.
        minibatch_key
            Column of ``adata.obs``: every minibatch is drawn from the cells of one of its categories (e.g. the
            dataset), so the contrastive negatives are cells of the same dataset and dataset identity cannot tell two
            cells apart. ``None``: minibatches mix all cells.
        **kwargs
            Optimisation, split and trainer settings of :meth:`scfm.models.FoundationModel.train` (``batch_size``,
            ``lr``, ``weight_decay``, ``warmup_steps``, ``validation_size``, ``seed``, ...).
        """
        options = {name: value for name, value in locals().items() if name in self.training_options}
        kwargs = self._arches_training_kwargs(kwargs)  # a query model (load_query_data): no decay on frozen rows
        super().train(max_epochs, **options, **kwargs)

    def _training_data(
        self,
        loader: dict,
        *,
        mode: str,
        mask_ratio: float,
        gep_weight: float,
        gepc_weight: float,
        ecs_weight: float,
        ecs_threshold: float,
        dar_weight: float,
        cls_weight: float,
        head_lr_factor: float,
        n_zero_queries: int,
        max_len: int | None,
        measured_key: str | None,
        contrastive_weight: float,
        contrastive_temperature: float,
        view_min_keep: float,
        minibatch_key: str | None,
    ) -> tuple[CellDataModule, dict]:
        matrix = self._training_matrix()
        column_token_ids = self.alignment.column_token_ids()
        groups, measured = self._measured_sets(measured_key, column_token_ids)
        batch_codes = self.batch_codes() if self.config.n_batches > 0 else None
        label_codes = self.label_codes() if cls_weight > 0 else None
        if label_codes is not None and not (label_codes >= 0).any():
            raise ValueError("cls_weight > 0 but no cell has a label among the model's label_categories")
        tokenizer = binning_config(self.config, max_len)
        lengths = np.minimum(expressed_gene_counts(matrix, column_token_ids) + 1, tokenizer.max_len)  # + <cls>

        two_views = contrastive_weight > 0
        if two_views and not np.array_equal(matrix.data, np.rint(matrix.data)):
            raise ValueError(
                "contrastive_weight > 0 makes two views of each cell by thinning its counts, but the registered "
                "matrix holds non-integer values; register raw counts (setup_anndata(layer='counts'))"
            )
        view_options = {"min_keep": view_min_keep} if two_views else {}

        def make_dataset(rows: np.ndarray) -> TokenizedCellDataset:
            return (TwoViewCellDataset if two_views else TokenizedCellDataset)(
                matrix,
                column_token_ids,
                cls_id=self.config.cls_id,
                config=tokenizer,
                rows=rows,
                measured_groups=groups,
                measured_token_ids=measured,
                batch_indices=batch_codes,
                labels=label_codes,
                **view_options,
            )

        collator = (TwoViewCollator if two_views else MaskedValueCollator)(
            pad_id=self.config.pad_id,
            pad_value=self.config.pad_value,
            mask_value=self.config.mask_value,
            mask_ratio=mask_ratio,
            mode=mode,
            n_zero_queries=n_zero_queries,
        )
        plan_kwargs = {
            "gep_weight": gep_weight,
            "gepc_weight": gepc_weight,
            "ecs_weight": ecs_weight,
            "ecs_threshold": ecs_threshold,
            "dar_weight": dar_weight,
            "cls_weight": cls_weight,
            "contrastive_weight": contrastive_weight,
            "contrastive_temperature": contrastive_temperature,
            "head_lr_factor": head_lr_factor,
            "head_prefixes": ("batch_discriminator.", "classifier.", "gene_classifier."),
        }
        minibatch_groups = self._minibatch_groups(minibatch_key)
        data = CellDataModule(
            make_dataset, matrix.shape[0], collator, lengths=lengths, groups=minibatch_groups, **loader
        )
        return data, plan_kwargs

    def _minibatch_groups(self, minibatch_key: str | None) -> np.ndarray | None:
        if minibatch_key is None:
            return None
        if minibatch_key not in self.adata.obs:
            raise KeyError(
                f"minibatch_key={minibatch_key!r} is not a column of adata.obs "
                f"(columns: {list(self.adata.obs.columns)})"
            )
        return self.adata.obs[minibatch_key].astype("category").cat.codes.to_numpy()

    def _training_matrix(self) -> sp.csr_matrix:
        matrix = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        matrix = sp.csr_matrix(matrix, dtype=np.float32)
        check_values(matrix, where="the registered matrix")
        return matrix

    def _measured_sets(self, measured_key: str | None, column_token_ids: np.ndarray):
        if measured_key is None:
            return self._padded_gene_sets(column_token_ids)  # genes prepare_query_anndata padded are not zeros
        obs, var = self.adata.obs, self.adata.var
        if measured_key not in obs:
            raise KeyError(f"measured_key={measured_key!r} is not a column of adata.obs")
        datasets = obs[measured_key].astype("category")
        missing = [f"measured_in:{name}" for name in datasets.cat.categories if f"measured_in:{name}" not in var]
        if missing:
            raise KeyError(
                f"adata.var lacks the gene-mask columns {missing[:5]} needed by measured_key={measured_key!r}"
            )
        measured = []
        for name in datasets.cat.categories:
            mask = var[f"measured_in:{name}"].to_numpy(dtype=bool) & (column_token_ids >= 0)
            measured.append(column_token_ids[mask])
        return datasets.cat.codes.to_numpy(), measured

    # -- inference -------------------------------------------------------------------------------
    def get_latent_representation(
        self,
        adata: AnnData | None = None,
        indices: np.ndarray | None = None,
        *,
        batch_size: int = 64,
        normalize: bool = True,
        max_len: int | None = None,
        device: str = "auto",
        progress: bool = False,
    ) -> np.ndarray:
        """Cell embeddings (``<cls>`` state or mean over genes, per the config), L2-normalised by default.

        The result is identical whatever ``batch_size`` and cell order: tokens depend on the cell only.
        """
        adata = self._validate_anndata(adata)
        return self._run_cells(
            adata,
            indices,
            "embedding",
            batch_size=batch_size,
            normalize=normalize,
            max_len=max_len,
            device=device,
            progress=progress,
        )

    def _run_cells(
        self,
        adata: AnnData,
        indices: np.ndarray | None,
        output: str,
        *,
        batch_size: int,
        normalize: bool,
        max_len: int | None,
        device: str,
        progress: bool,
    ) -> np.ndarray:
        """Return cell embeddings or classifier logits of ``adata``, streamed through :func:`embed_cells`.

        ``adata`` is aligned to the vocabulary unless it is the training data.
        """
        adata, source, alignment = self._source_and_alignment(adata)
        rows = checked_rows(indices, adata.n_obs)
        batch_codes = None
        if self.config.domain_batchnorm:
            codes = self.batch_codes(adata)
            batch_codes = codes if rows is None else codes[rows]
        target = self._move_to(device)
        result = embed_cells(
            self.module,
            source,
            alignment,
            device=target,
            batch_size=batch_size,
            max_len=max_len,
            normalize=normalize,
            progress=progress,
            rows=rows,
            batch_codes=batch_codes,
            output=output,
        )
        return result.embeddings

    def predict(
        self,
        adata: AnnData | None = None,
        indices: np.ndarray | None = None,
        *,
        batch_size: int = 64,
        max_len: int | None = None,
        device: str = "auto",
        progress: bool = False,
    ) -> pd.DataFrame:
        """Cell-type probabilities from the classification head, one column per ``config.label_categories``.

        ``adata`` (default: the training data) needs the same layer and gene names as the training data but no
        labels and no scvi-tools registration.
        """
        if not self.config.label_categories:
            raise ValueError("this model has no classification head (config.label_categories is empty)")
        adata = self.adata if adata is None else adata
        logits = self._run_cells(
            adata,
            indices,
            "logits",
            batch_size=batch_size,
            normalize=False,
            max_len=max_len,
            device=device,
            progress=progress,
        )
        probabilities = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
        rows = checked_rows(indices, adata.n_obs)
        names = adata.obs_names if rows is None else adata.obs_names[rows]
        return pd.DataFrame(probabilities, index=names, columns=self.config.label_categories)

    @classmethod
    def from_scgpt_checkpoint(
        cls,
        source_dir: str | os.PathLike,
        adata: AnnData,
        *,
        drop: tuple[str, ...] | list[str] = (),
        layer: str | None = None,
        gene_key: str | None = None,
        batch_key: str | None = None,
        labels_key: str | None = None,
        min_genes: int = 50,
        on_duplicate: Literal["error", "first"] = "error",
    ) -> SCGPT:
        """Load a checkpoint of the reference scGPT code (``best_model.pt``, ``args.json``, ``vocab.json``).

        The weights are converted in memory (nothing is written); use ``scfm convert scgpt SRC DEST`` or
        :func:`~scfm.models.scgpt.write_converted_checkpoint` to keep an scfm checkpoint directory.

        Parameters
        ----------
        source_dir
            The reference checkpoint directory (e.g. the published whole-human model).
        adata
            AnnData to align to the checkpoint's vocabulary (registered with :meth:`setup_anndata` if needed).
        drop
            Reference modules to leave out on purpose (``"cls_decoder"``, ``"grad_reverse_discriminator"``,
            ``"flag_encoder"``); any other tensor without an scfm counterpart is an error.
        """
        return cls.from_pretrained(
            pretrained_from_reference(source_dir, drop),
            adata,
            layer=layer,
            gene_key=gene_key,
            batch_key=batch_key,
            labels_key=labels_key,
            min_genes=min_genes,
            on_duplicate=on_duplicate,
        )

    @classmethod
    def for_finetuning(
        cls,
        pretrained: str | os.PathLike | Pretrained | SCGPT | None,
        adata: AnnData,
        *,
        layer: str | None = None,
        gene_key: str | None = None,
        batch_key: str | None = None,
        labels_key: str | None = None,
        use_batch_embeddings: bool = False,
        batch_discriminator: bool = False,
        domain_batchnorm: bool = False,
        label_categories: list[str] | None = None,
        classifier_gene_linear: bool = False,
        min_genes: int = 50,
        on_duplicate: Literal["error", "first"] = "error",
        seed: int = 0,
    ) -> SCGPT:
        """Initialise a model from a checkpoint, with the batch and label parts that fine-tuning needs.

        Every pretrained tensor whose name and shape fit the new architecture is copied; the others (a new
        batch embedding, heads whose input width changes when batch embeddings are concatenated, the batch
        discriminator, batch norms, the classifier) start from random initialisation, drawn from ``seed`` (torch's
        global generator is left as it was), and are listed in ``model.reinitialised_``.

        Parameters
        ----------
        pretrained
            Checkpoint directory or bundled name (``None``: the default), a loaded checkpoint, or a model.
        adata
            Training cells; registered with :meth:`setup_anndata` (``layer``, ``gene_key``, ``batch_key``,
            ``labels_key``) unless already registered.
        use_batch_embeddings, batch_discriminator, domain_batchnorm
            Batch-aware parts (scGPT's integration recipe: batch embeddings concatenated to the transformer
            output, DAR, DSBN); they need ``batch_key``.
        label_categories
            Classes of a classification head (e.g. the reference's cell types).
        classifier_gene_linear
            Add to the classifier a linear term on the cell's gene tokens (a wide-and-deep head: the per-gene evidence
            of a logistic regression beside the cell embedding; see :class:`~scfm.nn.GeneLinearClassifier`). Needs
            ``label_categories``.
        """
        if isinstance(pretrained, SCGPT):
            pretrained = pretrained.pretrained
        elif not isinstance(pretrained, Pretrained):
            pretrained = load_pretrained(pretrained, family="scgpt")
        with cls._registration_undone_on_error(adata):
            cls._register_if_needed(adata, layer=layer, batch_key=batch_key, labels_key=labels_key, gene_key=gene_key)
            base = pretrained.module.config
            uses_batches = use_batch_embeddings or batch_discriminator or domain_batchnorm
            manager = cls._get_most_recent_anndata_manager(adata, required=True)
            if uses_batches and manager.registry["setup_args"].get("batch_key") is None:
                raise ValueError("batch embeddings, the batch discriminator and batch norm need a batch_key")
            batches = []
            if uses_batches:
                batches = [str(b) for b in manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY).categorical_mapping]
            config = dataclasses.replace(
                base,
                n_batches=len(batches),
                batch_categories=batches,
                batch_embedding=use_batch_embeddings,
                batch_discriminator=batch_discriminator,
                domain_batchnorm=domain_batchnorm,
                label_categories=list(label_categories or []),
                classifier_gene_linear=classifier_gene_linear,
                extra={**base.extra, "finetuned_from": pretrained.name},
            )
            with torch.random.fork_rng():  # new parts depend on the seed, not on what ran before
                torch.manual_seed(seed)
                model = cls(
                    adata, vocab=pretrained.vocab, config=config, min_genes=min_genes, on_duplicate=on_duplicate
                )
        source = pretrained.module.state_dict()
        target = model.module.state_dict()
        loaded = {k: v for k, v in source.items() if k in target and target[k].shape == v.shape}
        target.update(loaded)
        model.module.load_state_dict(target)
        model.reinitialised_ = sorted(set(target) - set(loaded))
        model.checkpoint_name = f"{pretrained.name} (fine-tuned)"
        model.checkpoint_sha256 = pretrained.sha256
        model.module.eval()
        return model


def _codes(values: pd.Series, categories: list[str], where: str, what: str) -> np.ndarray:
    """Codes of ``values`` in ``categories``; values outside them are an error that names them."""
    if values.isna().any():
        raise ValueError(f"{where} has {int(values.isna().sum())} missing values")
    strings = values.astype(str)
    unseen = sorted(set(strings) - set(categories))
    if unseen:
        fix = (
            "Map them onto this model with SCGPT.prepare_query_anndata(query, model) and "
            "SCGPT.load_query_data(query, model) (scArches-style: new batch parameters, the rest frozen), then train()"
            if what == "batches"
            else "Fine-tune a model that includes them."
        )
        raise ValueError(
            f"{where} holds {what} the model was not trained on: {unseen[:8]}; the model knows {categories[:8]}"
            f"{' ...' if len(categories) > 8 else ''}. {fix}"
        )
    return pd.Categorical(strings, categories=categories).codes.astype(np.int64)
