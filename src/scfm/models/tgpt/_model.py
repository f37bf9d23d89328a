"""``TGPT``: the scvi-tools model class of the tGPT family."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from scfm.data import CellDataModule, expressed_gene_counts, expression_neighbours, expression_source
from scfm.genes import GeneVocab
from scfm.tokenize import check_values

from ..base import FoundationModel
from ._config import TGPTConfig
from ._data import NeighbourViewDataset, PadTokens, PadTwoViews, RankedSampleDataset, TwoViewRankedDataset


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

    training_options = (
        "next_gene_weight",
        "contrastive_weight",
        "contrastive_temperature",
        "view_min_keep",
        "contrastive_views",
        "minibatch_key",
    )

    def train(
        self,
        max_epochs: int = 10,
        *,
        next_gene_weight: float = 1.0,
        contrastive_weight: float = 0.0,
        contrastive_temperature: float = 0.1,
        view_min_keep: float = 0.5,
        contrastive_views: str = "thinned",
        minibatch_key: str | None = None,
        **kwargs,
    ) -> None:
        """Pretrain with next-gene prediction (the paper's objective) and, optionally, a contrastive objective.

        Parameters
        ----------
        max_epochs
            Passes over the registered cells.
        next_gene_weight
            Weight of the next-gene cross-entropy.
        contrastive_weight, contrastive_temperature
            Weight and temperature of InfoNCE between two views of each cell (the other cells of the minibatch are
            the negatives).
        view_min_keep
            Each thinned view keeps every count with a probability drawn uniformly from ``[view_min_keep, 1]``.
        contrastive_views
            What the second view of a cell is, with a positive ``contrastive_weight``:

            - ``"thinned"``: the cell ranked twice, each time from its counts thinned binomially (the registered
              matrix must hold integer counts);
            - ``"neighbours"``: one of the cell's 15 nearest cells in HVG+PCA space of log-normalised expression
              (:func:`scfm.data.expression_neighbours`, computed once per category of ``minibatch_key``, or over all
              cells without it), drawn anew each epoch. The objective distills that neighbour graph into the
              embedding (issue 22's experiment; see docs/benchmarks.md).
        minibatch_key
            Column of ``adata.obs``: every minibatch holds cells of one of its categories (e.g. the dataset), so
            contrastive negatives come from the same dataset. ``None``: minibatches mix all cells.
        **kwargs
            Optimisation, split and trainer settings of :meth:`scfm.models.FoundationModel.train`.
        """
        options = {name: value for name, value in locals().items() if name in self.training_options}
        super().train(max_epochs, **options, **kwargs)

    def _training_data(
        self,
        loader: dict,
        *,
        next_gene_weight: float = 1.0,
        contrastive_weight: float = 0.0,
        contrastive_temperature: float = 0.1,
        view_min_keep: float = 0.5,
        contrastive_views: str = "thinned",
        minibatch_key: str | None = None,
    ) -> tuple[CellDataModule, dict]:
        """Next-gene pretraining (causal language modelling over ranked genes), plus the optional contrastive views."""
        matrix, column_token_ids = self._training_matrix()
        config = self.config
        # <begin> + genes + <end>, or the context when the ranking is cut (with or without <end>)
        lengths = np.minimum(expressed_gene_counts(matrix, column_token_ids) + 2, config.max_len)
        if contrastive_views not in ("thinned", "neighbours"):
            raise ValueError(f"contrastive_views must be 'thinned' or 'neighbours', got {contrastive_views!r}")
        two_views = contrastive_weight > 0
        neighbour_views = two_views and contrastive_views == "neighbours"
        if two_views and not neighbour_views and not np.array_equal(matrix.data, np.rint(matrix.data)):
            raise ValueError(
                "contrastive_weight > 0 makes two views of each cell by thinning its counts, but the registered "
                "matrix holds non-integer values; register raw counts (setup_anndata(layer='counts'))"
            )
        if minibatch_key is not None and minibatch_key not in self.adata.obs:
            raise KeyError(
                f"minibatch_key={minibatch_key!r} is not a column of adata.obs "
                f"(columns: {list(self.adata.obs.columns)})"
            )
        groups = None if minibatch_key is None else self.adata.obs[minibatch_key].astype("category").cat.codes
        view_options, dataset_class = {}, RankedSampleDataset
        if neighbour_views:
            neighbours = expression_neighbours(matrix, None if groups is None else groups.to_numpy())
            view_options, dataset_class = {"neighbours": neighbours}, NeighbourViewDataset
        elif two_views:
            view_options, dataset_class = {"min_keep": view_min_keep}, TwoViewRankedDataset

        def make_dataset(rows: np.ndarray) -> RankedSampleDataset:
            return dataset_class(
                matrix,
                column_token_ids,
                rows,
                begin_id=config.begin_id,
                end_id=config.end_id,
                max_len=config.max_len,
                end_when_cut=config.end_when_cut,
                **view_options,
            )

        collator = (PadTwoViews if two_views else PadTokens)(config.pad_id)
        data = CellDataModule(
            make_dataset,
            matrix.shape[0],
            collator,
            lengths=lengths,
            groups=None if groups is None else groups.to_numpy(),
            **loader,
        )
        plan_kwargs = {
            "next_gene_weight": next_gene_weight,
            "contrastive_weight": contrastive_weight,
            "contrastive_temperature": contrastive_temperature,
        }
        return data, plan_kwargs
