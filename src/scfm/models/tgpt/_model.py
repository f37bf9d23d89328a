"""``TGPT``: the scvi-tools model class of the tGPT family."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from scfm.data import CellDataModule, expressed_gene_counts, expression_source
from scfm.genes import GeneVocab
from scfm.tokenize import check_values

from ..base import FoundationModel
from ._config import TGPTConfig
from ._data import PadTokens, RankedSampleDataset


class TGPT(FoundationModel):
    """tGPT (Shen et al. 2023).

    A sample is its expressed genes ranked by expression; a causal decoder predicts the next gene; the embedding is
    the mean of the last hidden states over the gene tokens.

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
    cells_need_known_genes = ("samples", "a tGPT embedding averages over expressed genes")

    def _check_vocab(self, vocab: GeneVocab) -> None:
        if vocab.eoc_id is None:
            raise ValueError("the vocabulary has no '<eoc>' token, which tGPT needs to end a ranking")

    def _new_config(self, vocab: GeneVocab, **config_kwargs) -> TGPTConfig:
        return TGPTConfig(
            n_tokens=len(vocab), pad_id=vocab.pad_id, begin_id=vocab.cls_id, end_id=vocab.eoc_id, **config_kwargs
        )

    @classmethod
    def setup_anndata(cls, adata: AnnData, layer: str | None = None, gene_key: str | None = None, **kwargs) -> None:
        """Register the expression matrix (counts, normalised or log values, TPM; not scaled) and gene names.

        tGPT reads expression only: ``layer`` is the one scvi-tools field; ``gene_key`` (a ``var`` column with gene
        symbols, default ``var_names``) is kept with the setup arguments. ``kwargs`` are scvi-tools' transfer
        arguments (``source_registry``), as :meth:`load` passes them.
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        cls._check_expression(adata, layer, gene_key)
        cls._register(adata, setup_method_args, layer, **kwargs)

    def _training_matrix(self) -> tuple[sp.csr_matrix, np.ndarray]:
        source = expression_source(self.adata, layer=self._setup_args.get("layer"))
        matrix = sp.csr_matrix(source.matrix, dtype=np.float32)
        check_values(matrix, where=source.label)
        return matrix, self.alignment.column_token_ids()

    def _training_data(self, loader: dict, **options) -> tuple[CellDataModule, dict]:
        """Next-gene pretraining (causal language modelling over ranked genes)."""
        matrix, column_token_ids = self._training_matrix()
        config = self.config
        # <begin> + genes + <end>, or the context when the ranking is cut (with or without <end>)
        lengths = np.minimum(expressed_gene_counts(matrix, column_token_ids) + 2, config.max_len)

        def make_dataset(rows: np.ndarray) -> RankedSampleDataset:
            return RankedSampleDataset(
                matrix,
                column_token_ids,
                rows,
                begin_id=config.begin_id,
                end_id=config.end_id,
                max_len=config.max_len,
                end_when_cut=config.end_when_cut,
            )

        return CellDataModule(make_dataset, matrix.shape[0], PadTokens(config.pad_id), lengths=lengths, **loader), {}
