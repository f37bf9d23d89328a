"""Reference mapping of query data with new batches (scArches, Lotfollahi et al. 2022), as scvi-tools' ``ArchesMixin``.

A reference model fine-tuned with batch-specific parts (batch embeddings, per-batch normalisation, a batch
discriminator) has parameters indexed by batch. :meth:`ArchesMixin.load_query_data` builds a model whose batch
categories are the reference's followed by the query's new ones, copies every reference tensor, appends rows (or
per-batch modules) for the new batches, and freezes everything else, so that ``train()`` fits only the new batches'
parameters and the reference's embedding space stays as it was.

A family declares its batch-indexed parts with three class attributes and one hook:

- ``arches_batch_tensors``: state-dict keys of tensors whose first axis is the batch (embedding tables, the output
  layer of a batch classifier);
- ``arches_batch_modules``: prefixes of ``ModuleList``s holding one module per batch (``prefix.<i>.<name>``);
- ``arches_classifier_prefixes``: parameters that ``freeze_classifier=False`` unfreezes;
- ``_query_config(config, categories, reference_name)``: the reference's configuration with the extended categories.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS

from ._checkpoint import SETUP_FILE
from ._device import resolve_device
from ._fields import registry_from_json, registry_to_json
from ._pretrained import Pretrained

logger = logging.getLogger(__name__)

#: Below this fraction of the reference's genes in the query, :meth:`ArchesMixin.prepare_query_anndata` warns (as
#: scvi-tools does).
MIN_GENE_FRACTION = 0.8
#: Boolean ``var`` column written by :meth:`ArchesMixin.prepare_query_anndata`: genes the query did not measure,
#: padded with zeros. Training never uses them as zero targets.
PADDED_COLUMN = "scfm_padded"


@dataclass
class ArchesReference:
    """What reference mapping needs of a reference model: weights, setup, registry, genes."""

    pretrained: Pretrained
    setup_args: dict[str, Any]
    fields: dict[str, Any] | None
    var_names: pd.Index | None


class ArchesMixin:
    """scArches-style mapping of query data with new batches onto a fine-tuned reference model."""

    arches_batch_tensors: ClassVar[tuple[str, ...]] = ()
    arches_batch_modules: ClassVar[tuple[str, ...]] = ()
    arches_classifier_prefixes: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def _query_config(cls, config: Any, categories: list[str], reference_name: str) -> Any:
        """Return the reference's configuration with the batch ``categories`` (reference batches first)."""
        raise NotImplementedError

    # -- the reference ---------------------------------------------------------------------------------------------
    @classmethod
    def _arches_reference(cls, reference_model: Any) -> ArchesReference:
        """Resolve ``reference_model`` (a model of this class, a checkpoint directory or a :class:`Pretrained`)."""
        from ._model import FoundationModel
        from ._resolve import load_pretrained

        if isinstance(reference_model, FoundationModel):
            if not isinstance(reference_model, cls):
                raise TypeError(
                    f"reference_model is a {type(reference_model).__name__}; {cls.__name__}.load_query_data needs a "
                    f"{cls.__name__} model or its checkpoint directory"
                )
            setup_args = {k: v for k, v in reference_model._setup_args.items() if _plain_value(v)}
            return ArchesReference(
                reference_model.pretrained,
                setup_args,
                registry_to_json(reference_model.adata_manager.registry),
                pd.Index(reference_model.adata.var_names.astype(str)),
            )
        if isinstance(reference_model, Pretrained):
            pretrained = reference_model
            if pretrained.family != cls.family_name:
                raise ValueError(f"{pretrained.name} is a {pretrained.family!r} model, not a {cls.__name__} one")
        elif isinstance(reference_model, str | os.PathLike):
            pretrained = load_pretrained(reference_model, family=cls.family_name)
        else:
            raise TypeError(
                f"reference_model must be a {cls.__name__} model or a checkpoint directory, got "
                f"{type(reference_model).__name__}"
            )
        saved: dict[str, Any] = {}
        setup_path = Path(pretrained.path) / SETUP_FILE if pretrained.path != "in-memory model" else None
        if setup_path is not None and setup_path.is_file():
            saved = json.loads(setup_path.read_text())
        genes = saved.get("var_names", pretrained.genes)
        return ArchesReference(
            pretrained,
            dict(saved.get("setup_args", {})),
            saved.get("fields"),
            None if genes is None else pd.Index([str(g) for g in genes]),
        )

    @classmethod
    def _reference_batches(cls, reference: ArchesReference) -> list[str]:
        config = reference.pretrained.config
        batches = [str(b) for b in getattr(config, "batch_categories", []) or []]
        if getattr(config, "n_batches", 0) == 0 or not batches:
            raise ValueError(
                f"the reference model {reference.pretrained.name!r} was not fine-tuned with batch-specific parts "
                "(batch embeddings, domain-specific batch norm or a batch discriminator), so there is nothing to "
                "extend for new batches: embed the query directly with get_latent_representation(query) or "
                "scfm.tl.embed (its encoder is shared by all batches), or fine-tune a reference with "
                "scfm.tl.integrate(reference, batch_key, method='finetune', return_model=True)"
            )
        return batches

    # -- genes -----------------------------------------------------------------------------------------------------
    @classmethod
    def prepare_query_anndata(
        cls,
        adata: AnnData,
        reference_model: Any,
        return_reference_var_names: bool = False,
        inplace: bool = True,
    ) -> AnnData | pd.Index | None:
        """Put the query's genes in the reference's order, padding the genes it lacks with zeros (as scvi-tools does).

        Genes are matched by ``var_names``. Genes of the query that the reference was not trained on are dropped;
        reference genes missing from the query are added as zero columns (in ``X`` and every layer) and flagged in
        ``var["scfm_padded"]``, so that query training never treats them as measured zeros. ``obs``, ``obsm``,
        ``obsp``, ``uns`` and ``raw`` are kept; ``varm`` and ``varp`` are dropped.

        Parameters
        ----------
        adata
            The query cells (in memory).
        reference_model
            A fine-tuned model of this class or its checkpoint directory (saved by this version of scfm, which
            records its genes).
        return_reference_var_names
            Only return the reference's genes (a :class:`pandas.Index`).
        inplace
            Rearrange ``adata`` itself and return ``None``; ``False`` returns a new AnnData and leaves ``adata``
            unchanged.

        Returns
        -------
        ``None`` with ``inplace=True``, else the prepared AnnData; the reference's genes with
        ``return_reference_var_names=True``.
        """
        reference = cls._arches_reference(reference_model)
        genes = reference.var_names
        if genes is None:
            raise ValueError(
                f"the reference {reference.pretrained.name!r} does not record the genes it was trained on (a "
                "checkpoint saved before scfm recorded them); pass the reference model itself, or save it again"
            )
        if return_reference_var_names:
            return genes
        new = _pad_and_sort(adata, genes)
        if not inplace:
            return new
        adata._init_as_actual(new)  # as scvi-tools does: the same object now holds the prepared data
        return None

    # -- the query model -------------------------------------------------------------------------------------------
    @classmethod
    def load_query_data(
        cls,
        adata: AnnData,
        reference_model: Any,
        *,
        inplace_subset_query_vars: bool = False,
        accelerator: str = "auto",
        device: str = "auto",
        unfrozen: bool = False,
        freeze_dropout: bool = False,
        freeze_classifier: bool = True,
        min_genes: int = 50,
    ):
        """Map query cells with new batches onto a fine-tuned reference (scArches; scvi-tools' ``load_query_data``).

        The returned model's batch categories are the reference's followed by the query's new batches (sorted).
        Every reference tensor is copied. The new batches get their own rows in the batch embedding and the
        batch discriminator's output layer, and their own domain-specific batch norms; each starts as the mean of
        the reference batches' entries (the "average" reference batch). By default everything else is frozen:
        ``train()`` then fits only the new batches' parameters (with ``weight_decay=0``), and the reference's
        batch norm statistics stay fixed, so reference cells embed exactly as before.

        Parameters
        ----------
        adata
            Query cells with the reference's batch column (``setup_anndata`` is not needed: the query is registered
            with the reference's setup, and new batch and label values extend its categories). Ideally prepared by
            :meth:`prepare_query_anndata` (the reference's genes in its order).
        reference_model
            The fine-tuned reference (a model of this class) or its checkpoint directory.
        inplace_subset_query_vars
            Subset and reorder ``adata``'s genes in place to the reference's (every reference gene must be present;
            otherwise use :meth:`prepare_query_anndata`, which pads).
        accelerator, device
            Where the weights go, as in :meth:`load`.
        unfrozen
            Train every parameter (no freezing), as scvi-tools' ``unfrozen=True``.
        freeze_dropout
            Set the dropout probability of every dropout layer to 0 for query training.
        freeze_classifier
            Keep a cell-type classification head frozen (``False`` trains it too).
        min_genes
            Fewest vocabulary genes the query must share with the model.

        Returns
        -------
        The query model, not yet trained (``is_trained_`` is ``False``): call ``train()``, then
        ``get_latent_representation()``.
        """
        return cls._query_model(
            adata,
            cls._arches_reference(reference_model),
            inplace_subset_query_vars=inplace_subset_query_vars,
            accelerator=accelerator,
            device=device,
            unfrozen=unfrozen,
            freeze_dropout=freeze_dropout,
            freeze_classifier=freeze_classifier,
            min_genes=min_genes,
        )

    @classmethod
    def _query_model(
        cls,
        adata: AnnData,
        reference: ArchesReference,
        *,
        inplace_subset_query_vars: bool,
        accelerator: str,
        device: str,
        unfrozen: bool,
        freeze_dropout: bool,
        freeze_classifier: bool,
        min_genes: int,
    ):
        """:meth:`load_query_data` on a resolved reference."""
        reference_batches = cls._reference_batches(reference)
        batch_key = reference.setup_args.get("batch_key")
        if batch_key is None:
            raise ValueError(
                f"the reference {reference.pretrained.name!r} records no batch_key (a checkpoint saved without its "
                "setup); pass the reference model itself"
            )
        if batch_key not in adata.obs:
            raise KeyError(
                f"the reference was set up with batch_key={batch_key!r}, which is not a column of the query's "
                f"adata.obs (columns: {list(adata.obs.columns)}); add each query cell's batch under that name"
            )
        if adata.obs[batch_key].isna().any():
            raise ValueError(f"adata.obs[{batch_key!r}] has {int(adata.obs[batch_key].isna().sum())} missing values")
        _check_query_genes(adata, reference.var_names, inplace_subset_query_vars)
        setup_args = {key: value for key, value in reference.setup_args.items() if key != "kwargs"}
        for key in ("labels_key", "perturbation_key"):
            if setup_args.get(key) is not None and setup_args[key] not in adata.obs:
                setup_args[key] = None  # the query need not be labelled
        if setup_args.get("perturbation_key") is None:
            setup_args.pop("control", None)
        fields = reference.fields or {
            REGISTRY_KEYS.BATCH_KEY: {"categorical_mapping": reference_batches, "original_key": batch_key}
        }
        with cls._registration_undone_on_error(adata):
            cls.setup_anndata(adata, **setup_args, source_registry=registry_from_json(fields))
            manager = cls._get_most_recent_anndata_manager(adata, required=True)
            categories = [str(c) for c in manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY).categorical_mapping]
            if categories[: len(reference_batches)] != reference_batches:
                raise ValueError(
                    f"the reference's registry lists the batches {categories[:8]}, its weights "
                    f"{reference_batches[:8]}; the checkpoint is inconsistent (re-save the reference model)"
                )
            config = cls._query_config(reference.pretrained.config, categories, reference.pretrained.name)
            model = cls(adata, vocab=reference.pretrained.vocab, config=config, min_genes=min_genes)
        n_reference = len(reference_batches)
        model.module.load_state_dict(
            _extended_state(
                reference.pretrained.module.state_dict(),
                model.module.state_dict(),
                n_reference,
                cls.arches_batch_tensors,
                cls.arches_batch_modules,
            )
        )
        new_batches = categories[n_reference:]
        if not new_batches:
            logger.warning(
                "the query holds no batch the reference was not trained on; its cells can be embedded without "
                "training (get_latent_representation)"
            )
        trainable = model._freeze_for_query(n_reference, unfrozen, freeze_dropout, freeze_classifier)
        model.arches_ = {
            "reference": reference.pretrained.name,
            "reference_batches": reference_batches,
            "new_batches": new_batches,
            "unfrozen": unfrozen,
            "trainable": trainable,
        }
        model.module.to(torch.device("cpu") if accelerator == "cpu" else resolve_device(device))
        model.module.eval()
        model.is_trained_ = False
        model.checkpoint_name = f"{reference.pretrained.name} + query"
        model.checkpoint_sha256 = ""
        return model

    def _freeze_for_query(
        self, n_reference: int, unfrozen: bool, freeze_dropout: bool, freeze_classifier: bool
    ) -> list[str]:
        """Freeze the reference's parameters; return the names of the parameters that stay trainable.

        Batch-indexed tensors stay trainable, with a gradient hook that zeroes their reference rows; batch norms
        outside the new per-batch modules get ``momentum=0`` so that their running statistics do not move.
        """
        module = self.module
        if freeze_dropout:
            for layer in module.modules():
                if isinstance(layer, torch.nn.Dropout):
                    layer.p = 0.0
        if unfrozen:
            self._query_partial_tensors = ()
            return [name for name, _ in module.named_parameters()]
        new_prefixes = tuple(
            f"{prefix}.{index}."
            for prefix in self.arches_batch_modules
            for index in range(n_reference, self.config.n_batches)
        )
        unfrozen_prefixes = new_prefixes + (() if freeze_classifier else tuple(self.arches_classifier_prefixes))
        parameters = dict(module.named_parameters())
        trainable, partial = [], []
        for name, parameter in parameters.items():
            if name in self.arches_batch_tensors and parameter.shape[0] > n_reference:
                parameter.requires_grad_(True)
                parameter.register_hook(_zero_rows_hook(n_reference))
                trainable.append(name)
                partial.append(name)
            elif name.startswith(unfrozen_prefixes):
                parameter.requires_grad_(True)
                trainable.append(name)
            else:
                parameter.requires_grad_(False)
        for name, layer in module.named_modules():
            if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm) and not f"{name}.".startswith(
                unfrozen_prefixes
            ):
                layer.momentum = 0.0  # running statistics of reference batches (and frozen heads) stay fixed
        self._query_partial_tensors = tuple(partial)
        return trainable

    def _arches_training_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """``train()``'s keyword arguments for a query model: no weight decay on tensors with frozen rows."""
        if not getattr(self, "arches_", None) or self.arches_["unfrozen"]:
            return kwargs
        if not self.arches_["trainable"]:
            raise ValueError(
                "nothing to train: every parameter of this query model is frozen (the query holds no new batch); "
                "embed it with get_latent_representation(), or pass unfrozen=True to load_query_data"
            )
        plan_decay = dict(kwargs.get("plan_kwargs") or {}).get("weight_decay")
        decay = kwargs.get("weight_decay", plan_decay)
        if decay is None:
            return {**kwargs, "weight_decay": 0.0}
        if decay != 0 and self._query_partial_tensors:
            raise ValueError(
                f"train: weight_decay={decay} would shrink the frozen reference rows of "
                f"{list(self._query_partial_tensors)}; query training uses weight_decay=0 (leave it unset), or pass "
                "unfrozen=True to load_query_data"
            )
        return kwargs

    def _padded_gene_sets(self, column_token_ids: np.ndarray) -> tuple[np.ndarray | None, list | None]:
        """Measured-gene sets for training when ``prepare_query_anndata`` padded genes (else ``(None, None)``).

        One group holding every cell; its measured genes are the registered genes that were not padded, so a
        padded gene is never a zero target.
        """
        var = self.adata.var
        if PADDED_COLUMN not in var or not var[PADDED_COLUMN].to_numpy(dtype=bool).any():
            return None, None
        measured = ~var[PADDED_COLUMN].to_numpy(dtype=bool) & (column_token_ids >= 0)
        return np.zeros(self.adata.n_obs, dtype=np.int64), [column_token_ids[measured]]


def _zero_rows_hook(n_rows: int):
    def hook(grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        grad[:n_rows] = 0
        return grad

    return hook


def _extended_state(
    source: dict[str, torch.Tensor],
    target: dict[str, torch.Tensor],
    n_reference: int,
    batch_tensors: tuple[str, ...],
    batch_modules: tuple[str, ...],
) -> dict[str, torch.Tensor]:
    """Return the reference's tensors in the query module's shapes; new batches start at the reference's mean."""
    state = {}
    for key, value in target.items():
        if key in source and source[key].shape == value.shape:
            state[key] = source[key].detach().clone()
        elif key in source and key in batch_tensors:
            old = source[key].detach()
            extra = value.shape[0] - old.shape[0]
            if extra < 0 or old.shape[1:] != value.shape[1:]:
                raise ValueError(f"cannot extend {key} from {tuple(old.shape)} to {tuple(value.shape)}")
            mean = old.float().mean(dim=0, keepdim=True).to(old.dtype)
            state[key] = torch.cat([old, mean.expand(extra, *old.shape[1:])], dim=0).clone()
        else:
            prefix = next((p for p in batch_modules if key.startswith(f"{p}.")), None)
            if prefix is None or key in source:
                raise ValueError(
                    f"the reference's weights do not fit the query model at {key!r} (reference shape "
                    f"{tuple(source[key].shape) if key in source else 'missing'}, query {tuple(value.shape)})"
                )
            name = key[len(prefix) + 1 :].split(".", 1)[1]
            entries = [source[f"{prefix}.{i}.{name}"] for i in range(n_reference)]
            if entries[0].is_floating_point():
                state[key] = torch.stack([e.detach().float() for e in entries]).mean(dim=0).to(entries[0].dtype)
            else:
                state[key] = torch.zeros_like(entries[0])  # counters (num_batches_tracked) start afresh
    return state


def _check_query_genes(adata: AnnData, genes: pd.Index | None, inplace_subset: bool) -> None:
    if genes is None:
        if inplace_subset:
            raise ValueError("inplace_subset_query_vars=True needs a reference that records its genes")
        return
    names = pd.Index(adata.var_names.astype(str))
    shared = genes.isin(names)
    if not shared.any():
        raise ValueError(
            f"none of the reference's {len(genes)} genes (e.g. {list(genes[:3])}) is in the query's var_names (e.g. "
            f"{list(names[:3])}); name the query's genes as the reference's (symbols or Ensembl ids), then call "
            "prepare_query_anndata(query, reference)"
        )
    if names.equals(genes):
        return
    if inplace_subset:
        if not shared.all():
            raise ValueError(
                f"the query lacks {int((~shared).sum())} of the reference's {len(genes)} genes, so it cannot be "
                "subset to them; call prepare_query_anndata(query, reference) first (it pads them with zeros)"
            )
        adata._inplace_subset_var(names.get_indexer(genes))
        return
    warnings.warn(
        "the query's var_names differ from the genes the reference was trained on; call "
        "prepare_query_anndata(query, reference) first (or pass inplace_subset_query_vars=True)",
        UserWarning,
        stacklevel=3,
    )


def _pad_and_sort(adata: AnnData, genes: pd.Index) -> AnnData:
    """Return a new AnnData with ``genes`` as columns, in order; genes ``adata`` lacks are zero columns."""
    if not isinstance(adata, AnnData):
        raise TypeError(f"adata must be an AnnData, got {type(adata).__name__}")
    if adata.isbacked:
        raise ValueError("prepare_query_anndata needs the query in memory; load it without backed mode")
    names = pd.Index(adata.var_names.astype(str))
    if names.has_duplicates:
        duplicated = sorted(set(names[names.duplicated()]))[:5]
        raise ValueError(f"the query's var_names are duplicated ({duplicated}); call adata.var_names_make_unique()")
    positions = names.get_indexer(genes)
    present = positions >= 0
    if not present.any():
        raise ValueError(
            f"none of the reference's {len(genes)} genes (e.g. {list(genes[:3])}) is in the query's var_names (e.g. "
            f"{list(names[:3])}); name the query's genes as the reference's (symbols or Ensembl ids)"
        )
    fraction = present.mean()
    logger.info("the query holds %.1f%% of the reference's %d genes", 100 * fraction, len(genes))
    if fraction < MIN_GENE_FRACTION:
        warnings.warn(
            f"the query holds only {100 * fraction:.0f}% of the reference's {len(genes)} genes (the other "
            f"{int((~present).sum())} are padded with zeros); the mapping may be poor",
            UserWarning,
            stacklevel=3,
        )

    def columns(matrix: Any) -> Any:
        if sp.issparse(matrix):
            wide = sp.hstack([sp.csr_matrix(matrix), sp.csr_matrix((adata.n_obs, 1), dtype=matrix.dtype)], "csr")
        else:
            matrix = np.asarray(matrix)
            wide = np.concatenate([matrix, np.zeros((adata.n_obs, 1), dtype=matrix.dtype)], axis=1)
        return wide[:, np.where(present, positions, names.size)]

    var = adata.var.reindex(genes)
    var[PADDED_COLUMN] = ~present
    new = AnnData(
        X=None if adata.X is None else columns(adata.X),
        obs=adata.obs.copy(),
        var=var,
        layers={name: columns(layer) for name, layer in adata.layers.items()},
        obsm={key: value.copy() for key, value in adata.obsm.items()},
        obsp={key: value.copy() for key, value in adata.obsp.items()},
        uns=copy.deepcopy(dict(adata.uns)),
    )
    if adata.raw is not None:
        new.raw = adata.raw.to_adata()
    return new


def _plain_value(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True
