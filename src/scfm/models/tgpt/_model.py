"""``TGPT``: the scvi-tools model class of the tGPT family."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from anndata import AnnData
from lightning.fabric.utilities.seed import seed_everything

from scfm.data import CellDataModule, expressed_gene_counts, expression_source
from scfm.genes import GeneVocab
from scfm.tokenize import check_values
from scfm.train import WarmupCosineTrainingPlan

from ..base import FoundationModel
from ._config import TGPTConfig
from ._data import PadTokens, RankedSampleDataset
from ._embed import embed_ranked


class TGPT(FoundationModel):
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

    family_name = "tgpt"

    def _check_vocab(self, vocab: GeneVocab) -> None:
        if vocab.eoc_id is None:
            raise ValueError("the vocabulary has no '<eoc>' token, which tGPT needs to end a ranking")

    def _new_config(self, vocab: GeneVocab, **config_kwargs) -> TGPTConfig:
        return TGPTConfig(
            n_tokens=len(vocab), pad_id=vocab.pad_id, begin_id=vocab.cls_id, end_id=vocab.eoc_id, **config_kwargs
        )

    @classmethod
    def setup_anndata(cls, adata: AnnData, layer: str | None = None, gene_key: str | None = None, **kwargs) -> None:
        """Register the expression matrix (counts, normalised or log values, TPM; not scaled) and gene names."""
        setup_method_args = cls._get_setup_method_args(**locals())
        cls._check_expression(adata, layer, gene_key)
        cls._register(adata, setup_method_args, layer, **kwargs)

    def _training_matrix(self) -> tuple[sp.csr_matrix, np.ndarray]:
        source = expression_source(self.adata, layer=self._setup_args.get("layer"))
        matrix = sp.csr_matrix(source.matrix, dtype=np.float32)
        check_values(matrix, where=source.label)
        return matrix, self.alignment.column_token_ids()

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
        adata, source, alignment = self._source_and_alignment(adata)
        target = self._move_to(device)
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
