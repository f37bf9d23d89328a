"""``SCMulan``: the scvi-tools model class of the scMulan family."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from scfm.data import CellDataModule, expressed_gene_counts, expression_source
from scfm.genes import GeneVocab
from scfm.tokenize import check_values, detect_input_kind, normalised_log_values

from ..base import FoundationModel, ObsCategoryField, Pretrained, checked_rows
from ._config import SCMulanConfig
from ._data import CellWordsDataset, CSentenceCollator
from ._tasks import TermPrediction, generate_anndata, predict_terms

MISSING_TERMS = frozenset({"", "nan", "none", "unknown", "na", "n/a"})


def is_missing_term(value: str) -> bool:
    """Whether an ``obs`` value stands for "no term" (missing, empty, ``"unknown"``, ...)."""
    return value.strip().lower() in MISSING_TERMS


def metadata_terms_of(obs: pd.DataFrame, metadata_keys: Mapping[str, str]) -> dict[str, list[str]]:
    """Sorted distinct terms of each registered ``obs`` column, missing values and ``"unknown"`` left out."""
    terms = {}
    for key, column in metadata_keys.items():
        values = obs[column].dropna().astype(str)
        terms[key] = sorted(v for v in values.unique() if not is_missing_term(v))
    return terms


def _names(adata: AnnData, indices: np.ndarray | None) -> np.ndarray:
    names = np.asarray(adata.obs_names)
    rows = checked_rows(indices, adata.n_obs)
    return names if rows is None else names[rows]


class SCMulan(FoundationModel):
    """scMulan (Bian et al. 2024).

    A cell is a c-sentence of (entity, value) words (its expressed genes with expression levels, its metadata terms,
    task tokens); a causal decoder predicts the next entity and its value.

    It is pretrained on three tasks at once: metadata from expression (annotation sentences), expression from
    metadata (generation sentences) and genes from the other genes (every gene word of both). It annotates cells
    zero-shot by generating their terms (:meth:`predict_metadata`, :func:`scfm.tl.annotate`) and generates cells
    for metadata prompts (:meth:`generate`, :func:`scfm.tl.generate`).

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    vocab
        Gene vocabulary with ``<pad>``, ``<cls>`` and ``<eoc>``. ``None`` builds one from the genes.
    config
        A complete :class:`SCMulanConfig` (used when loading checkpoints); otherwise built from the registered
        metadata columns and ``config_kwargs``.
    min_genes, on_duplicate
        Passed to :func:`scfm.genes.align_genes`.
    **config_kwargs
        Settings of :class:`SCMulanConfig` (``d_model``, ``n_layers``, ``max_len``, ``n_levels``, ...).
    """

    family_name = "scmulan"
    cells_need_known_genes = ("cells", "scMulan prompts with a cell's genes")

    def _check_vocab(self, vocab: GeneVocab) -> None:
        if vocab.eoc_id is None:
            raise ValueError("the vocabulary has no '<eoc>' token, which scMulan needs to close a cell's genes")

    def _new_config(self, vocab: GeneVocab, **config_kwargs) -> SCMulanConfig:
        metadata_keys = dict(self._setup_args.get("metadata_keys") or {})
        return SCMulanConfig(
            n_gene_tokens=len(vocab),
            metadata_terms=metadata_terms_of(self.adata.obs, metadata_keys),
            pad_id=vocab.pad_id,
            begin_id=vocab.cls_id,
            end_id=vocab.eoc_id,
            **config_kwargs,
        )

    def _summary(self) -> str:
        config = self.config
        keys = ", ".join(f"{k} ({len(config.metadata_terms[k])} terms)" for k in config.metadata_keys) or "none"
        return (
            f"SCMulan: {config.n_layers} layers, d_model {config.d_model}, {config.n_heads} heads, {len(self.vocab)} "
            f"gene tokens, context {config.max_len} words, {config.n_levels} expression levels, metadata keys: {keys}"
        )

    @classmethod
    def _check_pretrained_for(cls, pretrained: Pretrained, adata: AnnData) -> None:
        registered = dict(cls._get_most_recent_anndata_manager(adata).registry["setup_args"].get("metadata_keys") or {})
        unknown = sorted(set(registered) - set(pretrained.config.metadata_terms))
        if unknown:
            raise KeyError(
                f"metadata_keys {unknown} are not keys of the checkpoint (keys: {pretrained.config.metadata_keys})"
            )

    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        layer: str | None = None,
        metadata_keys: Mapping[str, str] | None = None,
        gene_key: str | None = None,
        **kwargs,
    ) -> None:
        """Register the expression matrix (counts or log-normalised; not scaled), the metadata columns and gene names.

        Parameters
        ----------
        layer
            Layer with the expression values (default ``X``).
        metadata_keys
            Metadata key -> ``obs`` column, e.g. ``{"cell_type": "cell_type", "tissue": "organ"}``. Each key's
            distinct values become its terms; missing values, ``""`` and ``"unknown"`` are no term.
        gene_key
            ``var`` column with gene symbols (default: ``var_names``).
        **kwargs
            scvi-tools' transfer arguments (``source_registry``), as :meth:`load` passes them.

        Each metadata column is registered as the categorical ``obs`` field ``"metadata_<key>"`` (missing values
        allowed; on a new AnnData, new values extend the categories).
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        metadata_keys = dict(metadata_keys or {})
        missing = {k: c for k, c in metadata_keys.items() if c not in adata.obs}
        if missing:
            raise KeyError(
                f"metadata_keys name obs columns that do not exist: {missing}; obs columns: {list(adata.obs.columns)}"
            )
        bad_keys = [k for k in metadata_keys if not isinstance(k, str) or not k or "<" in k or ">" in k]
        if bad_keys:
            raise ValueError(f"metadata keys must be non-empty strings without '<' or '>', got {bad_keys}")
        cls._check_expression(adata, layer, gene_key)
        fields = [ObsCategoryField(f"metadata_{key}", column) for key, column in sorted(metadata_keys.items())]
        cls._register(adata, setup_method_args, layer, fields, **kwargs)

    # -- training ------------------------------------------------------------------------------
    def _term_ids(self) -> np.ndarray:
        """``(n_obs, n_keys)`` term entity ids of the registered metadata (``-1``: no term or unknown term)."""
        metadata_keys = dict(self._setup_args.get("metadata_keys") or {})
        vocab = self.config.sentence_vocab()
        ids = np.full((self.adata.n_obs, len(vocab.keys)), -1, dtype=np.int64)
        for j, key in enumerate(vocab.keys):
            if key not in metadata_keys:
                continue
            lookup = {term: vocab.term_id(key, term) for term in vocab.terms[key]}
            values = self.adata.obs[metadata_keys[key]].astype(object).astype(str).to_numpy()
            ids[:, j] = [lookup.get(v, -1) for v in values]
            unseen = sorted(v for v in set(values) - set(lookup) if not is_missing_term(v))
            if unseen:
                warnings.warn(
                    f"{len(unseen)} {key!r} values are not terms of this model and train as missing: {unseen[:5]}",
                    stacklevel=3,
                )
        unregistered = sorted(set(metadata_keys) - set(vocab.keys))
        if unregistered:
            raise KeyError(f"metadata keys {unregistered} are not keys of this model (keys: {vocab.keys})")
        return ids

    def _level_values(self, matrix: sp.csr_matrix, column_token_ids: np.ndarray, input_kind: str) -> list[float]:
        """Mean ``log1p`` value of the training cells' known genes at each level (the bin middle where empty)."""
        scheme = self.config.level_scheme
        bounds = zip(matrix.indptr[:-1], matrix.indptr[1:], strict=True)
        log_values = np.concatenate(
            [np.zeros(0), *(normalised_log_values(matrix.data[a:b], input_kind, scheme.target_sum) for a, b in bounds)]
        )
        keep = (column_token_ids[matrix.indices] >= 0) & (log_values > 0)
        levels = scheme.levels(log_values[keep])
        sums = np.bincount(levels - 1, weights=log_values[keep], minlength=scheme.n_levels)
        counts = np.bincount(levels - 1, minlength=scheme.n_levels)
        midpoints = scheme.midpoints()
        return [float(sums[b] / counts[b]) if counts[b] else float(midpoints[b]) for b in range(scheme.n_levels)]

    training_options = ("annotate_fraction", "condition_dropout", "metadata_weight")

    def train(
        self,
        max_epochs: int = 10,
        *,
        annotate_fraction: float = 0.5,
        condition_dropout: float = 0.3,
        metadata_weight: float = 1.0,
        **kwargs,
    ) -> None:
        """Multitask generative pretraining with AdamW, warm-up and cosine decay.

        Each cell becomes, per batch, an annotation sentence (with probability ``annotate_fraction``; its terms
        are targets after its genes) or a generation sentence (its terms, each dropped with probability
        ``condition_dropout``, prompt its genes). Gene words are next-entity and value targets in both. The loss
        is the gene-entity and value cross-entropies plus ``metadata_weight`` times the term cross-entropy.

        Parameters
        ----------
        max_epochs
            Passes over the registered cells.
        annotate_fraction, condition_dropout, metadata_weight
            See above.
        **kwargs
            Optimisation, split and trainer settings of :meth:`scfm.models.FoundationModel.train` (``batch_size``,
            ``lr``, ``weight_decay``, ``warmup_steps``, ``validation_size``, ``seed``, ...).
        """
        super().train(
            max_epochs,
            annotate_fraction=annotate_fraction,
            condition_dropout=condition_dropout,
            metadata_weight=metadata_weight,
            **kwargs,
        )

    def _training_data(
        self, loader: dict, *, annotate_fraction: float, condition_dropout: float, metadata_weight: float
    ) -> tuple[CellDataModule, dict]:
        seed = loader["seed"]
        setup = self.adata_manager.registry["setup_args"]
        source = expression_source(self.adata, layer=setup.get("layer"))
        matrix = sp.csr_matrix(source.matrix, dtype=np.float32)
        check_values(matrix, where=source.label)
        term_ids = self._term_ids()
        column_token_ids = self.alignment.column_token_ids()
        input_kind = detect_input_kind(matrix.data[: 1 << 20])
        config = self.config
        config.level_values = self._level_values(matrix, column_token_ids, input_kind)
        self.module.metadata_weight = metadata_weight
        n_known = expressed_gene_counts(matrix, column_token_ids)
        lengths = 3 + np.minimum(n_known, config.max_gene_words) + 2 * (term_ids >= 0).sum(1)

        def make_dataset(rows: np.ndarray) -> CellWordsDataset:
            return CellWordsDataset(
                matrix,
                column_token_ids,
                term_ids,
                rows,
                scheme=config.level_scheme,
                input_kind=input_kind,
                max_genes=config.max_gene_words,
                seed=config.tokenizer_seed,
            )

        collator = CSentenceCollator(
            config.sentence_vocab(),
            begin_id=config.begin_id,
            end_id=config.end_id,
            pad_id=config.pad_id,
            annotate_fraction=annotate_fraction,
            condition_dropout=condition_dropout,
            seed=seed,
        )
        return CellDataModule(make_dataset, matrix.shape[0], collator, lengths=lengths, **loader), {}

    # -- inference -----------------------------------------------------------------------------
    def predict_metadata(
        self,
        adata: AnnData | None = None,
        keys: Sequence[str] | None = None,
        *,
        candidates: Mapping[str, Sequence[str]] | None = None,
        top_k: int = 3,
        indices: np.ndarray | None = None,
        batch_size: int = 64,
        device: str = "auto",
        progress: bool = False,
    ) -> dict[str, TermPrediction]:
        """Zero-shot metadata terms of each cell, by generation after ``<predict:key>`` (one pass for all keys).

        Parameters
        ----------
        adata
            Cells to annotate (default: the registered AnnData); aligned to the model's genes.
        keys
            Metadata keys to predict (default: every key of the model).
        candidates
            Per key, the labels allowed; those the model does not know are reported in the result's
            ``out_of_vocabulary`` and never predicted.
        top_k
            Alternatives listed per cell.
        """
        if candidates is not None and not isinstance(candidates, Mapping):
            raise TypeError(
                "predict_metadata: candidates are given per metadata key, e.g. {'cell_type': ['B cell', 'NK cell']}; "
                f"got a {type(candidates).__name__}"
            )
        adata, source, alignment = self._source_and_alignment(adata)
        keys = list(self.config.metadata_keys) if keys is None else list(keys)
        predictions, _ = predict_terms(
            self.pretrained,
            source,
            alignment,
            keys,
            candidates=candidates,
            top_k=top_k,
            device=self._move_to(device),
            batch_size=batch_size,
            progress=progress,
            rows=checked_rows(indices, adata.n_obs),
            obs_names=_names(adata, indices),
        )
        for prediction in predictions.values():
            prediction.table.index = _names(adata, indices)
        return predictions

    def generate(
        self,
        n_cells: int,
        conditions: Mapping[str, str] | None = None,
        *,
        seed: int = 0,
        temperature: float = 1.0,
        top_k: int | None = None,
        batch_size: int = 64,
        device: str = "auto",
    ) -> AnnData:
        """Generate ``n_cells`` cells for the metadata prompt ``conditions`` (key -> term).

        See :func:`scfm.tl.generate`.
        """
        return generate_anndata(
            self.pretrained,
            n_cells,
            conditions,
            seed=seed,
            temperature=temperature,
            top_k=top_k,
            batch_size=batch_size,
            device=self._move_to(device),
        )
