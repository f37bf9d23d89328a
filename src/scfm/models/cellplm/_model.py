"""``CellPLM``: the scvi-tools model class of the CellPLM family, and AnnData-free loading of its checkpoints."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.sparse as sp
from anndata import AnnData
from lightning.fabric.utilities.seed import seed_everything
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import LayerField
from scvi.model.base import BaseModelClass

from scfm.data import SentenceCollator, SentenceDataModule, expression_source, sample_codes
from scfm.genes import GeneAlignment, GeneVocab, align_genes
from scfm.tokenize import check_values, detect_input_kind
from scfm.train import WarmupCosineTrainingPlan

from .._base import FoundationModelMixin
from .._checkpoint import (
    Checkpoint,
    load_checkpoint,
    module_from_checkpoint,
    save_checkpoint,
)
from .._device import resolve_device
from ._config import CellPLMConfig
from ._context import sample_labels, sentences_of, spatial_coordinates
from ._inference import cell_features, sentence_latents
from ._module import CellPLMModule

SPECIALS = ("<pad>", "<cls>")
MEASURED_PREFIX = "measured_in:"


@dataclass
class PretrainedCellPLM:
    """A loaded CellPLM-family checkpoint, independent of any AnnData."""

    module: CellPLMModule
    vocab: GeneVocab
    name: str
    path: str
    sha256: str


def _cellplm_vocab_problem(config: CellPLMConfig, vocab: GeneVocab) -> str | None:
    if config.first_gene_id + config.n_genes != len(vocab):
        return (
            f"config.json says {config.n_genes} genes from id {config.first_gene_id} but vocab.json has "
            f"{len(vocab)} tokens"
        )
    return None


def cellplm_from_checkpoint(checkpoint: Checkpoint) -> PretrainedCellPLM:
    """Build the :class:`CellPLMModule` of an already read checkpoint, in eval mode."""
    module = module_from_checkpoint(
        checkpoint,
        family="cellplm",
        label="a CellPLM",
        config_cls=CellPLMConfig,
        module_cls=CellPLMModule,
        vocab_problem=_cellplm_vocab_problem,
    )
    return PretrainedCellPLM(module, checkpoint.vocab, checkpoint.name, str(checkpoint.path), checkpoint.sha256)


def load_pretrained_cellplm(name_or_path: str | os.PathLike = "cellplm") -> PretrainedCellPLM:
    """Load a CellPLM checkpoint directory (or the bundled ``"cellplm"``) without an AnnData. Nothing is downloaded."""
    return cellplm_from_checkpoint(load_checkpoint(name_or_path))


def gene_vocab_of(var, gene_key: str | None) -> GeneVocab:
    """A vocabulary of the genes of ``var`` (``<pad>``, ``<cls>`` then the genes in order, duplicates dropped)."""
    names = var[gene_key] if gene_key is not None else var.index.to_series()
    names = names.dropna().astype(str)
    return GeneVocab(list(dict.fromkeys(names[(names != "") & ~names.str.match(r"^<.*>$")])), specials=SPECIALS)


class CellPLM(FoundationModelMixin, BaseModelClass):
    """CellPLM (Wen et al., ICLR 2024): cells are tokens and a sample or spatial neighbourhood is the sentence.

    Each cell becomes one token, the expression-weighted sum of its genes' embeddings (any gene panel; genes
    outside the vocabulary are ignored and reported). A transformer reads the cells of a sentence (with a 2-D
    positional encoding when coordinates are registered), a Gaussian-mixture VAE latent summarises each cell,
    and a negative-binomial decoder reconstructs its counts over the vocabulary. Pretraining masks cells and
    genes and reconstructs them from the tissue context.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    vocab
        Gene vocabulary (``None``: the AnnData's genes).
    config
        A complete :class:`CellPLMConfig` (used when loading checkpoints); otherwise built from ``config_kwargs``.
    min_genes, on_duplicate
        Passed to :func:`scfm.genes.align_genes`.
    **config_kwargs
        Settings of :class:`CellPLMConfig` (``d_model``, ``n_layers``, ``context``, ``attention``, ...).
    """

    def __init__(
        self,
        adata: AnnData,
        *,
        vocab: GeneVocab | None = None,
        config: CellPLMConfig | None = None,
        min_genes: int = 50,
        on_duplicate: Literal["error", "first"] = "error",
        **config_kwargs,
    ) -> None:
        super().__init__(adata)
        args = self.adata_manager.registry["setup_args"]
        source = expression_source(adata, layer=args.get("layer"))
        vocab = gene_vocab_of(source.var, args.get("gene_key")) if vocab is None else vocab
        self.vocab = vocab
        self.alignment = align_genes(
            source.var, vocab, gene_key=args.get("gene_key"), min_genes=min_genes, on_duplicate=on_duplicate
        )
        first_gene_id = len(vocab.specials)
        if config is None:
            config = CellPLMConfig(n_genes=len(vocab) - first_gene_id, first_gene_id=first_gene_id, **config_kwargs)
        elif config.first_gene_id + config.n_genes != len(vocab):
            raise ValueError(f"config has {config.n_genes} genes but the vocabulary has {len(vocab)} tokens")
        self.config = config
        self.module = CellPLMModule(config)
        self.checkpoint_name = "untrained"
        self.checkpoint_sha256 = ""
        self._min_genes, self._on_duplicate = min_genes, on_duplicate
        self._model_summary_string = (
            f"CellPLM: {config.n_layers} layers ({config.attention} attention), d_model {config.d_model}, "
            f"{config.n_components}-component mixture latent of {config.latent_dim}, {config.n_genes} genes, "
            f"context {config.context} cells; {self.alignment.summary()}"
        )
        self.init_params_ = self._get_init_params(locals())

    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        layer: str | None = None,
        sample_key: str | None = None,
        batch_key: str | None = None,
        spatial_key: str | None = None,
        gene_key: str | None = None,
        **kwargs,
    ) -> None:
        """Register the expression matrix and what groups cells into sentences.

        Parameters
        ----------
        adata
            Cells x genes. Training needs raw counts; embedding also accepts log-normalised values when the
            model normalises library sizes.
        layer
            Layer holding the expression (default ``X``).
        sample_key
            ``obs`` column: cells of one sample form sentences together (default: ``batch_key``, else one sample).
        batch_key
            ``obs`` column of the dataset/batch. When ``var`` has ``measured_in:<batch>`` boolean columns, a gene
            that a batch did not measure is neither input nor reconstruction target for its cells.
        spatial_key
            ``obsm`` key of ``(n_obs, 2)`` coordinates: sentences become spatial neighbourhoods and the model's
            2-D positional encoding sees them.
        gene_key
            ``var`` column with gene symbols (default ``var_names``).

        Nothing is registered when a key is missing or malformed.
        """
        if gene_key is not None and gene_key not in adata.var:
            raise KeyError(f"gene_key={gene_key!r} is not a column of adata.var (columns: {list(adata.var.columns)})")
        sample_labels(adata, batch_key)
        spatial_coordinates(adata, spatial_key, sample_labels(adata, sample_key or batch_key))
        source = expression_source(adata, layer=layer)
        if source.is_backed:
            raise ValueError("CellPLM.setup_anndata needs the matrix in memory; for backed files use scfm.tl.embed")
        check_values(source.matrix, where=source.label)
        setup_method_args = cls._get_setup_method_args(**locals())
        manager = AnnDataManager(
            fields=[LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=False)], setup_method_args=setup_method_args
        )
        manager.register_fields(adata, **kwargs)
        cls.register_manager(manager)

    # -- helpers ----------------------------------------------------------------------------------
    @property
    def _setup_args(self) -> dict:
        return self.adata_manager.registry["setup_args"]

    def _align(self, source) -> GeneAlignment:
        return align_genes(
            source.var,
            self.vocab,
            gene_key=self._setup_args.get("gene_key"),
            min_genes=self._min_genes,
            on_duplicate=self._on_duplicate,
        )

    def _sample_key(self) -> str | None:
        return self._setup_args.get("sample_key") or self._setup_args.get("batch_key")

    def _vocab_counts(self) -> sp.csr_matrix:
        """Training counts as CSR ``(n_obs, n_genes)`` in vocabulary gene order (unmatched genes dropped)."""
        source = expression_source(self.adata, layer=self._setup_args.get("layer"))
        matrix = sp.csr_matrix(source.matrix, dtype=np.float32)
        check_values(matrix, where=source.label)
        kind = detect_input_kind(matrix[: min(matrix.shape[0], 2000)])
        if kind != "counts":
            raise ValueError(
                f"{source.label} does not hold raw counts (values look {kind}); CellPLM pretraining reconstructs "
                "counts with a negative-binomial likelihood: register the raw counts (setup_anndata(layer='counts'))"
            )
        columns = matrix[:, self.alignment.var_index].tocoo()
        gene_index = self.alignment.token_ids - self.config.first_gene_id
        return sp.csr_matrix(
            (columns.data, (columns.row, gene_index[columns.col])), shape=(matrix.shape[0], self.config.n_genes)
        )

    def _measured_masks(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-cell group and per-group gene masks from ``var['measured_in:<batch>']`` columns (else all matched)."""
        n_obs = self.adata.n_obs
        matched = np.zeros(self.config.n_genes, dtype=bool)
        matched[self.alignment.token_ids - self.config.first_gene_id] = True
        batch_key = self._setup_args.get("batch_key")
        if batch_key is None:
            return np.zeros(n_obs, dtype=np.int64), matched[None]
        var = expression_source(self.adata, layer=self._setup_args.get("layer")).var
        batches = sample_labels(self.adata, batch_key)
        categories, groups = np.unique(batches, return_inverse=True)
        masks = np.repeat(matched[None], len(categories), axis=0)
        gene_index = self.alignment.token_ids - self.config.first_gene_id
        for i, category in enumerate(categories):
            column = f"{MEASURED_PREFIX}{category}"
            if column in var:
                measured_columns = np.asarray(var[column], dtype=bool)[self.alignment.var_index]
                masks[i] = False
                masks[i, gene_index[measured_columns]] = True
        empty = [str(c) for c, mask in zip(categories, masks, strict=True) if not mask.any()]
        if empty:
            raise ValueError(
                f"batches {empty[:5]} measure none of the model's genes according to var['{MEASURED_PREFIX}<batch>']; "
                "drop their cells or fix the gene names (e.g. strip a genome prefix such as 'hg19_')"
            )
        return groups.astype(np.int64), masks

    # -- training ---------------------------------------------------------------------------------
    def train(
        self,
        max_epochs: int = 20,
        *,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 50,
        validation_size: float = 0.0,
        seed: int = 0,
        accelerator: str = "auto",
        devices: int | str = "auto",
        num_workers: int = 0,
        **trainer_kwargs,
    ) -> None:
        """Masked-cell / masked-gene pretraining with the Gaussian-mixture KL, one sentence per step.

        Sentences are re-drawn every epoch (spatial samples keep their neighbourhoods). AdamW with a linear
        warm-up and cosine decay; ``trainer_kwargs`` go to Lightning's ``Trainer``.
        """
        seed_everything(seed, verbose=False)
        counts = self._vocab_counts()
        groups, masks = self._measured_masks()
        samples = sample_labels(self.adata, self._sample_key())
        coordinates = spatial_coordinates(self.adata, self._setup_args.get("spatial_key"), samples)
        sample_codes(samples, self.adata.n_obs)
        data_module = SentenceDataModule(
            SentenceCollator(counts, groups, masks, coordinates),
            self.adata.n_obs,
            context=self.config.context,
            samples=samples,
            coordinates=coordinates,
            validation_size=validation_size,
            seed=seed,
            num_workers=num_workers,
        )
        plan = WarmupCosineTrainingPlan(self.module, lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps)
        self._run_training(
            plan,
            data_module,
            max_epochs=max_epochs,
            accelerator=accelerator,
            devices=devices,
            validation_size=validation_size,
            **trainer_kwargs,
        )

    # -- inference --------------------------------------------------------------------------------
    def get_latent_representation(
        self,
        adata: AnnData | None = None,
        indices: np.ndarray | None = None,
        *,
        context: int | None = None,
        seed: int = 0,
        normalize: bool = False,
        device: str = "auto",
        block_size: int = 4096,
        progress: bool = False,
    ) -> np.ndarray:
        """Posterior mean of each cell's latent (most likely mixture component), ``(n_cells, latent_dim)``.

        Cells are grouped into sentences by the registered sample/spatial keys (see
        :func:`scfm.data.plan_sentences`); with ``indices`` only those cells are read and grouped. The result
        does not depend on cell order or ``block_size``; it does depend on ``context`` and ``seed`` (which
        cells share a sentence).
        """
        adata = self.adata if adata is None else adata
        source = expression_source(adata, layer=self._setup_args.get("layer"))
        alignment = self.alignment if adata is self.adata else self._align(source)
        rows = None if indices is None else np.asarray(indices)
        subset = adata if rows is None else adata[rows]
        sentences, coordinates = sentences_of(
            subset,
            sample_key=self._sample_key(),
            spatial_key=self._setup_args.get("spatial_key"),
            context=context or self.config.context,
            seed=seed,
        )
        target = resolve_device(device)
        self.module.to(target)
        stage_one = cell_features(self.module, source, alignment, block_size=block_size, rows=rows)
        latent = sentence_latents(
            self.module, stage_one.features, sentences, coordinates=coordinates, device=target, progress=progress
        )
        if normalize:
            latent /= np.maximum(np.linalg.norm(latent, axis=1, keepdims=True), 1e-12)
        return latent

    # -- persistence ------------------------------------------------------------------------------
    def save(
        self,
        dir_path: str | os.PathLike,
        overwrite: bool = False,
        *,
        model_card: str | None = None,
        half_precision: bool = False,
        **kwargs,
    ) -> Path:
        """Write a checkpoint directory (``config.json``, ``vocab.json``, ``model.safetensors``, ``model_card.md``)."""
        config = self.config
        card = model_card or (
            f"# CellPLM checkpoint\n\nFamily: cellplm. {config.n_layers} layers ({config.attention} attention), "
            f"d_model {config.d_model}, {config.n_genes} genes, context {config.context} cells. "
            f"Source: {self.checkpoint_name}.\n"
        )
        return save_checkpoint(
            dir_path,
            config=config.to_dict(),
            vocab=self.vocab,
            state_dict=self.module.state_dict(),
            model_card=card,
            overwrite=overwrite,
            half_precision=half_precision,
        )

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike | PretrainedCellPLM = "cellplm",
        adata: AnnData | None = None,
        *,
        layer: str | None = None,
        sample_key: str | None = None,
        batch_key: str | None = None,
        spatial_key: str | None = None,
        gene_key: str | None = None,
        min_genes: int = 50,
        on_duplicate: Literal["error", "first"] = "error",
    ) -> CellPLM:
        """Load a CellPLM checkpoint (a directory, the bundled ``"cellplm"``, or an already loaded one) and align
        ``adata`` to its vocabulary; ``adata`` is registered with :meth:`setup_anndata` unless it already is.
        Nothing is downloaded.
        """
        if adata is None:
            raise ValueError(
                "from_pretrained needs the AnnData to align to the checkpoint; for AnnData-free use call "
                "scfm.models.cellplm.load_pretrained_cellplm or scfm.tl.embed(adata, model='cellplm')"
            )
        pretrained = (
            name_or_path if isinstance(name_or_path, PretrainedCellPLM) else load_pretrained_cellplm(name_or_path)
        )
        cls._register_if_needed(
            adata,
            layer=layer,
            sample_key=sample_key,
            batch_key=batch_key,
            spatial_key=spatial_key,
            gene_key=gene_key,
        )
        return cls._from_loaded(pretrained, adata, min_genes=min_genes, on_duplicate=on_duplicate)

    @classmethod
    def load(
        cls,
        dir_path: str | os.PathLike,
        adata: AnnData | None = None,
        *,
        layer: str | None = None,
        sample_key: str | None = None,
        batch_key: str | None = None,
        spatial_key: str | None = None,
        gene_key: str | None = None,
        min_genes: int = 50,
        **kwargs,
    ) -> CellPLM:
        """Load a checkpoint directory written by :meth:`save` and align ``adata`` to its vocabulary."""
        if adata is None:
            raise ValueError("CellPLM.load needs the AnnData to align to the checkpoint")
        return cls.from_pretrained(
            load_pretrained_cellplm(dir_path),
            adata,
            layer=layer,
            sample_key=sample_key,
            batch_key=batch_key,
            spatial_key=spatial_key,
            gene_key=gene_key,
            min_genes=min_genes,
        )
