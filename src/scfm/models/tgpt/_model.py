"""``TGPT``: the scvi-tools model class of the tGPT family, and AnnData-free loading of its checkpoints."""

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

from scfm.data import CellDataModule, PadTokens, RankedSampleDataset, expressed_gene_counts, expression_source
from scfm.genes import GeneAlignment, GeneVocab, align_genes
from scfm.tokenize import check_values
from scfm.train import WarmupCosineTrainingPlan

from .._base import FoundationModelMixin
from .._checkpoint import (
    Checkpoint,
    decoder_vocab_problem,
    load_checkpoint,
    module_from_checkpoint,
    save_checkpoint,
)
from .._device import resolve_device
from ._config import TGPTConfig
from ._embed import embed_ranked
from ._module import TGPTModule


@dataclass
class PretrainedTGPT:
    """A loaded tGPT-family checkpoint, independent of any AnnData."""

    module: TGPTModule
    vocab: GeneVocab
    name: str
    path: str
    sha256: str


def tgpt_from_checkpoint(checkpoint: Checkpoint) -> PretrainedTGPT:
    """Build the :class:`TGPTModule` of an already read checkpoint, in eval mode."""
    module = module_from_checkpoint(
        checkpoint,
        family="tgpt",
        label="a tGPT",
        config_cls=TGPTConfig,
        module_cls=TGPTModule,
        vocab_problem=decoder_vocab_problem("n_tokens"),
    )
    return PretrainedTGPT(module, checkpoint.vocab, checkpoint.name, str(checkpoint.path), checkpoint.sha256)


def load_pretrained_tgpt(name_or_path: str | os.PathLike = "tgpt") -> PretrainedTGPT:
    """Load a tGPT checkpoint directory (or the bundled ``"tgpt"``) without an AnnData. Nothing is downloaded."""
    return tgpt_from_checkpoint(load_checkpoint(name_or_path))


class TGPT(FoundationModelMixin, BaseModelClass):
    """tGPT (Shen et al. 2023): a sample is its expressed genes ranked by expression; a causal decoder predicts
    the next gene; the embedding is the mean of the last hidden states over the gene tokens.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    vocab
        Gene vocabulary with ``<pad>``, ``<cls>`` (begin) and ``<eoc>`` (end). ``None`` builds one from the genes.
    config
        A complete :class:`TGPTConfig` (used when loading checkpoints); otherwise built from ``config_kwargs``.
    min_genes, on_duplicate
        Passed to :func:`scfm.genes.align_genes`.
    **config_kwargs
        Architecture settings of :class:`TGPTConfig` (``d_model``, ``n_layers``, ``max_len``, ...).
    """

    def __init__(
        self,
        adata: AnnData,
        *,
        vocab: GeneVocab | None = None,
        config: TGPTConfig | None = None,
        min_genes: int = 50,
        on_duplicate: Literal["error", "first"] = "error",
        **config_kwargs,
    ) -> None:
        super().__init__(adata)
        gene_key = self.adata_manager.registry["setup_args"].get("gene_key")
        source = expression_source(adata, layer=self.adata_manager.registry["setup_args"].get("layer"))
        if vocab is None:
            names = source.var[gene_key] if gene_key is not None else source.var.index.to_series()
            names = names.dropna().astype(str)
            vocab = GeneVocab(list(dict.fromkeys(names[(names != "") & ~names.str.match(r"^<.*>$")])))
        if vocab.eoc_id is None:
            raise ValueError("the vocabulary has no '<eoc>' token, which tGPT needs to end a ranking")
        self.vocab = vocab
        self.alignment = align_genes(
            source.var, vocab, gene_key=gene_key, min_genes=min_genes, on_duplicate=on_duplicate
        )
        if config is None:
            config = TGPTConfig(
                n_tokens=len(vocab), pad_id=vocab.pad_id, begin_id=vocab.cls_id, end_id=vocab.eoc_id, **config_kwargs
            )
        elif config.n_tokens != len(vocab):
            raise ValueError(f"config.n_tokens={config.n_tokens} does not match the vocabulary size {len(vocab)}")
        self.config = config
        self.module = TGPTModule(config)
        self.checkpoint_name = "untrained"
        self.checkpoint_sha256 = ""
        self._min_genes, self._on_duplicate = min_genes, on_duplicate
        self._model_summary_string = (
            f"TGPT: {config.n_layers} layers, d_model {config.d_model}, {config.n_heads} heads, {len(vocab)} tokens; "
            f"{self.alignment.summary()}"
        )
        self.init_params_ = self._get_init_params(locals())

    @classmethod
    def setup_anndata(cls, adata: AnnData, layer: str | None = None, gene_key: str | None = None, **kwargs) -> None:
        """Register the expression matrix (counts, normalised or log values, TPM; not scaled) and gene names."""
        if gene_key is not None and gene_key not in adata.var:
            raise KeyError(f"gene_key={gene_key!r} is not a column of adata.var (columns: {list(adata.var.columns)})")
        source = expression_source(adata, layer=layer)
        if source.is_backed:
            raise ValueError("TGPT.setup_anndata needs the matrix in memory")
        check_values(source.matrix, where=source.label)
        setup_method_args = cls._get_setup_method_args(**locals())
        manager = AnnDataManager(
            fields=[LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=False)], setup_method_args=setup_method_args
        )
        manager.register_fields(adata, **kwargs)
        cls.register_manager(manager)

    def _training_matrix(self) -> tuple[sp.csr_matrix, np.ndarray]:
        source = expression_source(self.adata, layer=self.adata_manager.registry["setup_args"].get("layer"))
        matrix = sp.csr_matrix(source.matrix, dtype=np.float32)
        check_values(matrix, where=source.label)
        return matrix, self.alignment.column_token_ids()

    def _align(self, source) -> GeneAlignment:
        return align_genes(
            source.var,
            self.vocab,
            gene_key=self.adata_manager.registry["setup_args"].get("gene_key"),
            min_genes=self._min_genes,
            on_duplicate=self._on_duplicate,
        )

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
        **trainer_kwargs,
    ) -> None:
        """Next-gene pretraining (causal language modelling over ranked genes) with AdamW, warm-up and cosine decay."""
        seed_everything(seed, verbose=False)
        matrix, column_token_ids = self._training_matrix()
        config = self.config
        # <begin> + genes + <end>, or the context when the ranking is cut
        lengths = np.minimum(expressed_gene_counts(matrix, column_token_ids) + 2, config.max_len)

        def make_dataset(rows: np.ndarray) -> RankedSampleDataset:
            return RankedSampleDataset(
                matrix, column_token_ids, rows, begin_id=config.begin_id, end_id=config.end_id, max_len=config.max_len
            )

        data_module = CellDataModule(
            make_dataset,
            matrix.shape[0],
            PadTokens(config.pad_id),
            batch_size=batch_size,
            validation_size=validation_size,
            seed=seed,
            num_workers=num_workers,
            lengths=lengths,
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
        """Mean of the last hidden states over each sample's gene tokens, L2-normalised by default.

        Samples are batched by length; a sample's embedding does not depend on the batch size or the order.

        Raises
        ------
        ValueError
            A sample expresses none of the model's genes (its embedding would be undefined).
        """
        adata = self.adata if adata is None else adata
        layer = self.adata_manager.registry["setup_args"].get("layer")
        source = expression_source(adata, layer=layer)
        alignment = self.alignment if adata is self.adata else self._align(source)
        target = resolve_device(device)
        self.module.to(target)
        rows = None if indices is None else np.asarray(indices)
        result = embed_ranked(
            self.module,
            source,
            alignment,
            device=target,
            batch_size=batch_size,
            normalize=normalize,
            progress=progress,
            rows=rows,
            obs_names=np.asarray(adata.obs_names),
        )
        return result.embeddings

    def save(
        self,
        dir_path: str | os.PathLike,
        overwrite: bool = False,
        *,
        model_card: str | None = None,
        half_precision: bool = False,
        **kwargs,
    ) -> Path:
        """Write a checkpoint directory (``config.json``, ``vocab.json``, ``model.safetensors``, ``model_card.md``).

        ``half_precision`` stores float16 weights (half the size; loaded back as float32).
        """
        card = model_card or (
            f"# tGPT checkpoint\n\nFamily: tgpt. {self.config.n_layers} layers, d_model {self.config.d_model}, "
            f"{len(self.vocab)} tokens, context {self.config.max_len}. Source: {self.checkpoint_name}.\n"
        )
        return save_checkpoint(
            dir_path,
            config=self.config.to_dict(),
            vocab=self.vocab,
            state_dict=self.module.state_dict(),
            model_card=card,
            overwrite=overwrite,
            half_precision=half_precision,
        )

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike | PretrainedTGPT = "tgpt",
        adata: AnnData | None = None,
        *,
        layer: str | None = None,
        gene_key: str | None = None,
        min_genes: int = 50,
        on_duplicate: Literal["error", "first"] = "error",
    ) -> TGPT:
        """Load a tGPT checkpoint (a directory, the bundled ``"tgpt"``, or an already loaded one) and align
        ``adata`` to its vocabulary.

        ``adata`` is registered with :meth:`setup_anndata` (``layer``, ``gene_key``) unless it already is.
        Nothing is downloaded.
        """
        if adata is None:
            raise ValueError(
                "from_pretrained needs the AnnData to align to the checkpoint; for AnnData-free use call "
                "scfm.models.tgpt.load_pretrained_tgpt or scfm.tl.embed(adata, model='tgpt')"
            )
        pretrained = name_or_path if isinstance(name_or_path, PretrainedTGPT) else load_pretrained_tgpt(name_or_path)
        cls._register_if_needed(adata, layer=layer, gene_key=gene_key)
        return cls._from_loaded(pretrained, adata, min_genes=min_genes, on_duplicate=on_duplicate)

    @classmethod
    def load(
        cls,
        dir_path: str | os.PathLike,
        adata: AnnData | None = None,
        *,
        layer: str | None = None,
        gene_key: str | None = None,
        min_genes: int = 50,
        **kwargs,
    ) -> TGPT:
        """Load a tGPT checkpoint directory written by :meth:`save` and align ``adata`` to its vocabulary."""
        if adata is None:
            raise ValueError("TGPT.load needs the AnnData to align to the checkpoint")
        return cls.from_pretrained(
            load_pretrained_tgpt(dir_path), adata, layer=layer, gene_key=gene_key, min_genes=min_genes
        )
