"""``CellPLM``: the scvi-tools model class of the CellPLM family."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.data.fields import ObsmField

from scfm.data import expression_source
from scfm.genes import GeneVocab
from scfm.tokenize import check_values, detect_input_kind

from ..base import FoundationModel, ObsCategoryField, checked_rows
from ._config import CellPLMConfig
from ._context import sample_labels, sentences_of, spatial_coordinates
from ._data import SentenceCollator, SentenceDataModule, sample_codes
from ._inference import cell_features, sentence_latents

SPECIALS = ("<pad>", "<cls>")
MEASURED_PREFIX = "measured_in:"


class CellPLM(FoundationModel):
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

    family_name = "cellplm"
    vocab_specials = SPECIALS

    def _new_config(self, vocab: GeneVocab, **config_kwargs) -> CellPLMConfig:
        first_gene_id = len(vocab.specials)
        return CellPLMConfig(n_genes=len(vocab) - first_gene_id, first_gene_id=first_gene_id, **config_kwargs)

    def _summary(self) -> str:
        config = self.config
        return (
            f"CellPLM: {config.n_layers} layers ({config.attention} attention), d_model {config.d_model}, "
            f"{config.n_components}-component mixture latent of {config.latent_dim}, {config.n_genes} genes, "
            f"context {config.context} cells"
        )

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
        **kwargs
            scvi-tools' transfer arguments (``source_registry``), as :meth:`load` passes them.

        ``batch_key`` and ``sample_key`` are registered as categorical ``obs`` fields (``"batch"``, ``"sample"``;
        on a new AnnData, new batches and samples extend the categories), ``spatial_key`` as the ``obsm`` field
        ``"spatial"``. Nothing is registered when a key is missing or malformed.
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        if gene_key is not None and gene_key not in adata.var:
            raise KeyError(f"gene_key={gene_key!r} is not a column of adata.var (columns: {list(adata.var.columns)})")
        sample_labels(adata, batch_key)
        spatial_coordinates(adata, spatial_key, sample_labels(adata, sample_key or batch_key))
        cls._check_expression(adata, layer, gene_key)
        fields = [
            ObsCategoryField(REGISTRY_KEYS.BATCH_KEY, batch_key),
            ObsCategoryField(REGISTRY_KEYS.SAMPLE_KEY, sample_key or batch_key),
        ]
        if spatial_key is not None:
            fields.append(ObsmField("spatial", spatial_key))
        cls._register(adata, setup_method_args, layer, fields, **kwargs)

    # -- helpers ----------------------------------------------------------------------------------
    def _sample_key(self) -> str | None:
        return self._setup_args.get("sample_key") or self._setup_args.get("batch_key")

    def _check_registered_cells(self) -> None:
        sample_codes(sample_labels(self.adata, self._sample_key()), self.adata.n_obs)

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

    def get_normalized_expression(
        self,
        adata: AnnData | None = None,
        indices: np.ndarray | None = None,
        *,
        gene_list: list[str] | None = None,
        library_size: float | Literal["latent"] = "latent",
        context: int | None = None,
        seed: int = 0,
        block_size: int = 4096,
        device: str = "auto",
        progress: bool = False,
        return_numpy: bool = False,
    ) -> pd.DataFrame | np.ndarray:
        """Denoised expression of the cells (scvi-tools' name): the model's expected counts for the matched genes.

        The same values as :func:`scfm.tl.denoise` writes for these cells, genes and ``context``/``seed`` (which
        cells share a sentence); the registered ``layer``, ``sample_key`` and ``spatial_key`` are used.

        Parameters
        ----------
        adata
            AnnData to read (default: the registered one).
        indices
            Cells to return (positions or a boolean mask); default all. Sentences are built among these cells.
        gene_list
            Genes to return (names of ``var_names`` the vocabulary matched); default every matched gene.
        library_size
            ``"latent"``: expected counts at each cell's own depth. A number: each cell's expected counts over the
            matched genes rescaled to sum to it (e.g. ``1e4``).
        context, seed, block_size, device, progress
            As in :meth:`get_latent_representation`.
        return_numpy
            Return a float32 array instead of a DataFrame (cells x genes, named).

        Returns
        -------
        ``(n_cells, n_genes)`` expected counts, as a DataFrame indexed by ``obs_names`` with gene columns unless
        ``return_numpy``.
        """
        from scfm.models.base import resolve_device

        if not (library_size == "latent" or (isinstance(library_size, int | float) and library_size > 0)):
            raise ValueError(f"library_size must be 'latent' or a positive number, got {library_size!r}")
        adata = self.adata if adata is None else adata
        rows = checked_rows(indices, adata.n_obs)
        subset = adata if rows is None else adata[rows]
        source = expression_source(subset, layer=self._setup_args.get("layer"))
        plan = self.family().plan_counts(
            self.pretrained,
            subset,
            source,
            gene_key=self._setup_args.get("gene_key"),
            sample_key=self._sample_key(),
            spatial_key=self._setup_args.get("spatial_key"),
            context=context,
            seed=seed,
            min_genes=self._min_genes,
            on_duplicate=self._on_duplicate,
            device=resolve_device(device),
            gene_rules=self._gene_rules,
        )
        names = np.asarray(source.var.index)[plan.alignment.var_index]
        columns = np.arange(names.size)
        if gene_list is not None:
            position = {name: i for i, name in enumerate(names)}
            unknown = [gene for gene in gene_list if gene not in position]
            if unknown:
                raise ValueError(f"gene_list has genes the model did not match: {unknown[:10]}; see pp.gene_overlap")
            columns = np.array([position[gene] for gene in gene_list], dtype=np.int64)
        expected = np.zeros((subset.n_obs, names.size), dtype=np.float32)
        for cells, values in self.family().iter_expected_counts(
            plan, plan.alignment.token_ids, block_size=block_size, progress=progress
        ):
            expected[cells] = values
        if library_size != "latent":
            totals = expected.sum(axis=1, keepdims=True)
            expected = expected * (float(library_size) / np.maximum(totals, 1e-12))
        expected = expected[:, columns]
        if return_numpy:
            return expected
        return pd.DataFrame(expected, index=np.asarray(subset.obs_names), columns=names[columns])

    # -- training ---------------------------------------------------------------------------------
    def train(self, max_epochs: int = 20, *, warmup_steps: int = 50, **kwargs) -> None:
        """Masked-cell / masked-gene pretraining with the Gaussian-mixture KL, one sentence per step.

        Sentences are re-drawn every epoch (spatial samples keep their neighbourhoods). AdamW with a linear
        warm-up and cosine decay. ``batch_size`` does not apply (one sentence per step); the other ``kwargs`` are
        those of :meth:`scfm.models.FoundationModel.train` (``lr``, ``validation_size``, ``seed``, trainer arguments).
        """
        if "batch_size" in kwargs:
            raise ValueError(
                "CellPLM trains one sentence of cells per step, so batch_size does not apply; the sentence length is "
                "the checkpoint's context (config.context)"
            )
        super().train(max_epochs, warmup_steps=warmup_steps, **kwargs)

    def _training_data(self, loader: dict) -> tuple[SentenceDataModule, dict]:
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
            validation_size=loader["validation_size"],
            seed=loader["seed"],
            num_workers=loader["num_workers"],
        )
        return data_module, {}

    # -- inference --------------------------------------------------------------------------------
    def get_latent_representation(
        self,
        adata: AnnData | None = None,
        indices: np.ndarray | None = None,
        *,
        context: int | None = None,
        seed: int = 0,
        normalize: bool = True,
        device: str = "auto",
        block_size: int = 4096,
        progress: bool = False,
    ) -> np.ndarray:
        """Posterior mean of each cell's latent (most likely mixture component), ``(n_cells, latent_dim)``.

        Cells are grouped into sentences by the registered sample/spatial keys (see
        :func:`scfm.data.plan_sentences`); with ``indices`` only those cells are read and grouped. The result
        does not depend on cell order or ``block_size``; it does depend on ``context`` and ``seed`` (which
        cells share a sentence). ``normalize=True`` (the default, as for every family and :func:`scfm.tl.embed`)
        scales each row to unit length; ``False`` returns the raw posterior means.
        """
        adata, source, alignment = self._source_and_alignment(adata)
        rows = checked_rows(indices, adata.n_obs)
        subset = adata if rows is None else adata[rows]
        sentences, coordinates = sentences_of(
            subset,
            sample_key=self._sample_key(),
            spatial_key=self._setup_args.get("spatial_key"),
            context=context or self.config.context,
            seed=seed,
        )
        target = self._move_to(device)
        stage_one = cell_features(self.module, source, alignment, block_size=block_size, rows=rows)
        latent = sentence_latents(
            self.module, stage_one.features, sentences, coordinates=coordinates, device=target, progress=progress
        )
        if normalize:
            latent /= np.maximum(np.linalg.norm(latent, axis=1, keepdims=True), 1e-12)
        return latent
