"""``SCGPTMultiome``: scGPT's multi-omic integration (paired and mosaic RNA+ATAC, RNA+protein), an scvi-tools model."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from lightning.pytorch import seed_everything
from scvi import REGISTRY_KEYS
from scvi.model.base import BaseModelClass

from scfm.data import HEAD_LR_FACTOR, CellDataModule
from scfm.data._mudata import (
    MODALITY_KINDS,
    Modality,
    check_mudata,
    measured_by_group,
    read_modalities,
    select_features,
)
from scfm.genes import GeneRules, GeneVocab, align_genes

from ..base import CheckpointError, Pretrained, l2_normalise, load_checkpoint, resolve_device, save_checkpoint
from ..base._resolve import load_pretrained
from ._multiome_data import ModalityColumns, MultiomeCellDataset, MultiomeCollator, embed_dataset
from ._multiome_module import MULTIOME_FAMILY, SCGPTMultiomeConfig, SCGPTMultiomeModule, copy_pretrained_weights
from ._multiome_setup import MuDataSetupMixin

FEATURES_FILE = "multiome.json"
TOKEN_PREFIX = {"rna": "rna:", "atac": "atac:", "protein": "protein:"}
DEFAULT_TOP = {"rna": 1000, "atac": 4000, "protein": None}
DEFAULT_MAX_TOKENS = {"rna": 256, "atac": 256, "protein": 512}


class SCGPTMultiome(MuDataSetupMixin, BaseModelClass):
    """scGPT multi-omic integration (Cui et al. 2024) for paired and mosaic MuData.

    Every selected feature is a token of one extended vocabulary: genes (initialised from the pretrained scGPT
    checkpoint when they match its vocabulary, ``gene_tokens="pretrained"``, or all new, ``gene_tokens="new"``),
    ATAC peaks and proteins (new tokens, trained from scratch). The transformer and the value embedding start from
    the checkpoint. The modality of each token and the cell's batch are embedded, summed and concatenated to the
    transformer output for the GEP and GEPC heads; they never enter attention. Training: GEP + GEPC on all input
    tokens (non-zero and sampled zeros), plus DAR (a batch discriminator behind gradient reversal) on mosaic data.

    This is a dedicated model class rather than a mixin on :class:`~scfm.models.SCGPT`: its vocabulary, module and
    registration (a MuData, features chosen per modality) differ from the single-modality model's, whose gene
    alignment of ``adata.var`` to a fixed vocabulary does not apply.

    Parameters
    ----------
    mdata
        MuData registered with :meth:`setup_mudata`.
    pretrained
        Starting checkpoint (a name, directory or loaded :class:`~scfm.models.Pretrained`; ``None``: the bundled
        scGPT).
    gene_tokens
        ``"pretrained"``: genes matching the checkpoint's vocabulary (with ``gene_rules``) start from its
        embeddings, others are new tokens; ``"new"``: every gene is a new token.
    n_top_features
        Kind -> features to select (``None``: all): highly variable genes (Seurat flavour, per batch), highly
        variable binarised TF-IDF peaks, all proteins. Defaults: 1000 genes, 4000 peaks.
    max_tokens
        Kind -> most non-zero tokens per cell in that modality (defaults: 256 genes, 256 peaks, 512 proteins).
    zero_fraction
        Zero-valued tokens added per modality as a fraction of its non-zero tokens.
    batch_discriminator
        Build the DAR discriminator (``None``: when the data are mosaic and have at least two batches).
    gene_rules
        How gene names meet the checkpoint vocabulary (``species="mouse"`` for mouse symbols).
    """

    def __init__(
        self,
        mdata,
        pretrained: str | os.PathLike | Pretrained | None = None,
        *,
        gene_tokens: Literal["pretrained", "new"] = "pretrained",
        n_top_features: Mapping[str, int | None] | None = None,
        max_tokens: Mapping[str, int] | None = None,
        zero_fraction: float = 0.25,
        batch_discriminator: bool | None = None,
        gene_rules: GeneRules = GeneRules(),
        _checkpoint=None,
    ) -> None:
        super().__init__(mdata)
        if gene_tokens not in ("pretrained", "new"):
            raise ValueError(f"gene_tokens must be 'pretrained' or 'new', got {gene_tokens!r}")
        setup = self.adata_manager.registry["setup_args"]
        self.modality_keys: dict[str, str] = dict(setup["modalities"])
        data = self._read(mdata)
        batch_codes = self._registered_batch_codes()
        categories = self._registered_batch_names()
        self.mosaic = not all(m.present.all() for m in data.values())
        if _checkpoint is not None:
            self._from_checkpoint(_checkpoint)
        else:
            self._initialise(
                data, batch_codes, categories, pretrained, gene_tokens, n_top_features, max_tokens, zero_fraction,
                batch_discriminator, gene_rules,
            )  # fmt: skip
        self.columns_ = self._columns(data)
        self.train_seconds_: list[float] = []
        self._model_summary_string = (
            f"SCGPTMultiome: {self.config.modalities}, {self.config.n_tokens} tokens "
            f"({', '.join(f'{k}: {len(v)}' for k, v in self.features_.items())} features), "
            f"{self.config.n_batches} batches, mosaic={self.mosaic}"
        )
        self.init_params_ = self._get_init_params(locals())

    # -- construction ----------------------------------------------------------------------------
    def _read(self, mdata) -> dict[str, Modality]:
        setup = self.adata_manager.registry["setup_args"]
        layers = {kind: setup.get(f"{kind}_layer") for kind in self.modality_keys}
        return read_modalities(mdata, self.modality_keys, layers)

    def _registered_batch_names(self) -> list[str]:
        mapping = self.adata_manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY).categorical_mapping
        return [str(name) for name in mapping]

    def _registered_batch_codes(self) -> np.ndarray:
        return np.asarray(self.adata_manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY)).ravel().astype(np.int64)

    def _initialise(
        self, data, batch_codes, categories, pretrained, gene_tokens, n_top, max_tokens, zero_fraction,
        batch_discriminator, gene_rules,
    ) -> None:  # fmt: skip
        if not isinstance(pretrained, Pretrained):
            pretrained = load_pretrained(pretrained, family="scgpt")
        base = pretrained.module.config
        top = {**DEFAULT_TOP, **dict(n_top or {})}
        unknown = sorted(set(dict(n_top or {})) - set(MODALITY_KINDS))
        if unknown:
            raise ValueError(f"n_top_features has unknown modality kinds {unknown}; use {list(MODALITY_KINDS)}")
        features, feature_tokens, tokens, token_map, kinds = {}, {}, [], {}, []
        specials = pretrained.vocab.specials
        n_matched = 0
        for kind, modality in data.items():
            keep = select_features(modality, top.get(kind), batch_codes)
            names = modality.features[keep]
            features[kind] = list(names)
            matched = {}
            if kind == "rna" and gene_tokens == "pretrained":
                alignment = align_genes(
                    pd.DataFrame(index=names), pretrained.vocab, min_genes=0, **gene_rules.as_kwargs()
                )
                matched = dict(zip(alignment.var_index.tolist(), alignment.token_ids.tolist(), strict=True))
                n_matched = len(matched)
            for position, name in enumerate(names):
                if position in matched:
                    token = pretrained.vocab.token(matched[position])
                    token_map[len(specials) + len(tokens)] = matched[position]
                else:
                    token = TOKEN_PREFIX[kind] + str(name)
                tokens.append(token)
                feature_tokens.setdefault(kind, []).append(token)
                kinds.append(list(data).index(kind) + 1)
        for position, special in enumerate(specials):
            token_map[position] = pretrained.vocab[special]
        vocab = GeneVocab(tokens, specials=specials)
        n_batches = len(categories) if len(categories) > 1 else 0
        if batch_discriminator is None:
            batch_discriminator = self.mosaic and n_batches >= 2
        if batch_discriminator and n_batches < 2:
            raise ValueError("batch_discriminator needs setup_mudata(batch_key=...) with at least two batches")
        config = SCGPTMultiomeConfig(
            n_tokens=len(vocab),
            pad_id=vocab.pad_id,
            cls_id=vocab.cls_id,
            modalities=list(data),
            d_model=base.d_model,
            n_heads=base.n_heads,
            n_layers=base.n_layers,
            d_hidden=base.d_hidden,
            dropout=base.dropout,
            n_bins=base.n_bins,
            pad_value=base.pad_value,
            mask_value=base.mask_value,
            input_style=base.input_style,
            cell_embedding=base.cell_embedding,
            norm_first=base.norm_first,
            activation=base.activation,
            predict_zero=base.predict_zero,
            n_batches=n_batches,
            batch_categories=categories if n_batches else [],
            batch_discriminator=bool(batch_discriminator),
            max_tokens={**DEFAULT_MAX_TOKENS, **dict(max_tokens or {})},
            zero_fraction=zero_fraction,
            tokenizer_seed=base.tokenizer_seed,
            extra={"finetuned_from": pretrained.name, "gene_tokens": gene_tokens},
        )
        self.config = config
        self.vocab = vocab
        self.features_ = features
        self.feature_tokens_ = feature_tokens
        self.module = SCGPTMultiomeModule(config, torch.tensor([0] * len(specials) + kinds))
        with torch.no_grad():
            if gene_tokens == "new":
                token_map = {k: v for k, v in token_map.items() if k < len(specials)}
            _, self.reinitialised_ = copy_pretrained_weights(self.module, pretrained.module, token_map)
        self.n_genes_from_checkpoint_ = n_matched if gene_tokens == "pretrained" else 0
        panels = {}
        if "protein" in data:
            chosen = data["protein"].subset(_positions(data["protein"].features, features["protein"]))
            groups = batch_codes if n_batches else np.zeros(len(batch_codes), dtype=np.int64)
            panels = {"protein": measured_by_group(chosen, groups).tolist()}
        self.panels_ = panels
        self.checkpoint_name = f"{pretrained.name} (multiome fine-tuned)"
        self.checkpoint_sha256 = pretrained.sha256
        self.module.eval()

    def _from_checkpoint(self, checkpoint) -> None:
        extra = json.loads((checkpoint.path / FEATURES_FILE).read_text())
        self.config = SCGPTMultiomeConfig.from_dict(checkpoint.config)
        self.vocab = checkpoint.vocab
        self.features_ = {k: list(v) for k, v in extra["features"].items()}
        self.feature_tokens_ = {k: list(v) for k, v in extra["feature_tokens"].items()}
        self.panels_ = extra.get("panels", {})
        self.n_genes_from_checkpoint_ = int(extra.get("n_genes_from_checkpoint", 0))
        self.reinitialised_ = []
        if list(self.features_) != self.config.modalities or set(self.features_) != set(self.modality_keys):
            raise CheckpointError(
                f"{checkpoint.path} was trained on modalities {self.config.modalities}; the MuData was set up with "
                f"{list(self.modality_keys)}"
            )
        self.module = SCGPTMultiomeModule(self.config)
        state = checkpoint.state_dict
        expected = set(self.module.state_dict())
        if set(state) != expected:
            raise CheckpointError(
                f"{checkpoint.path}: weights do not match the architecture (missing "
                f"{sorted(expected - set(state))[:3]}, unexpected {sorted(set(state) - expected)[:3]})"
            )
        self.module.load_state_dict(state, strict=True)
        self.checkpoint_name = checkpoint.name
        self.checkpoint_sha256 = checkpoint.sha256
        self.module.eval()

    def _columns(self, data: dict[str, Modality]) -> list[ModalityColumns]:
        """Return the model's features of each modality of ``data`` (a feature the data lack is never a token)."""
        out = []
        for kind in self.config.modalities:
            modality = data[kind]
            wanted = [str(name) for name in self.features_[kind]]
            token_ids = np.array([self.vocab[token] for token in self.feature_tokens_[kind]], dtype=np.int64)
            where = pd.Index(modality.features).get_indexer(pd.Index(wanted))
            found = where >= 0
            if not found.any():
                raise ValueError(
                    f"modality {modality.key!r} shares none of the model's {len(wanted)} {kind} features "
                    f"(e.g. {wanted[:3]}); it needs the features the model was trained on"
                )
            measured = None
            if kind in self.panels_:
                measured = np.asarray(self.panels_[kind], dtype=bool)[:, found]
            sub = modality.subset(where[found])
            out.append(ModalityColumns(kind, sub.matrix, modality.present, token_ids[found], measured))
        return out

    # -- batches ---------------------------------------------------------------------------------
    def batch_codes(self, mdata) -> np.ndarray:
        """Batch index of every cell of ``mdata`` in the model's batch categories (all zero without batches).

        Raises
        ------
        ValueError
            ``mdata`` holds batches the model was not trained on.
        """
        if self.config.n_batches == 0:
            return np.zeros(mdata.n_obs, dtype=np.int64)
        batch_key = self.adata_manager.registry["setup_args"]["batch_key"]
        if batch_key not in mdata.obs:
            raise KeyError(f"the model needs mdata.obs[{batch_key!r}] (the batch_key it was set up with)")
        values = mdata.obs[batch_key]
        if values.isna().any():
            raise ValueError(f"mdata.obs[{batch_key!r}] has {int(values.isna().sum())} missing values")
        strings = values.astype(str)
        unseen = sorted(set(strings) - set(self.config.batch_categories))
        if unseen:
            raise ValueError(
                f"mdata.obs[{batch_key!r}] holds batches the model was not trained on: {unseen[:8]}; the model knows "
                f"{self.config.batch_categories[:8]}. Fine-tune a model that includes them."
            )
        return pd.Categorical(strings, categories=self.config.batch_categories).codes.astype(np.int64)

    # -- training --------------------------------------------------------------------------------
    def _dataset(
        self, columns, rows, batch_codes, *, training: bool, only: str | None = None, modality_dropout: float = 0.0
    ) -> MultiomeCellDataset:
        config = self.config
        return MultiomeCellDataset(
            columns,
            rows,
            batch_codes,
            cls_id=config.cls_id,
            pad_value=config.pad_value,
            n_bins=config.n_bins,
            max_tokens=config.max_tokens,
            zero_fraction=config.zero_fraction,
            seed=config.tokenizer_seed,
            training=training,
            only=only,
            token_modality=self.module.token_modality.cpu().numpy(),
            modality_dropout=modality_dropout,
        )

    def train(
        self,
        max_epochs: int = 10,
        *,
        batch_size: int = 32,
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        warmup_steps: int = 200,
        mask_ratio: float = 0.4,
        gep_weight: float = 1.0,
        gepc_weight: float = 1.0,
        ecs_weight: float = 0.0,
        ecs_threshold: float = 0.8,
        dar_weight: float | None = None,
        modality_dropout: float | None = None,
        validation_size: float = 0.0,
        seed: int = 0,
        accelerator: str = "auto",
        devices: int | str = "auto",
        progress: bool = True,
        **trainer_kwargs,
    ) -> None:
        """GEP + GEPC on every input token (+ ECS) + DAR, AdamW with warm-up and cosine decay.

        Parameters
        ----------
        max_epochs, batch_size, lr, weight_decay, warmup_steps
            Optimisation settings; the discriminator learns at ``10 * lr``.
        mask_ratio
            Fraction of each cell's tokens whose values are masked for GEP.
        gep_weight, gepc_weight, ecs_weight, ecs_threshold
            Objective weights (ECS is off by default, as in scGPT's multi-omic recipe).
        dar_weight
            Weight of the batch discriminator's loss (``None``: 1 when the model has one, else 0).
        modality_dropout
            Probability that a cell measured in several modalities hides one of them from its input while GEPC still
            predicts it (cross-modal prediction; an scfm addition to the paper's recipe). ``None``: 0.3 on mosaic
            data, 0 on paired data.
        validation_size
            Fraction of cells held out to log ``validation_loss``.
        seed
            Seeds initial shuffling, masks and subsamples.
        accelerator, devices, progress
            Lightning settings and the progress bar; other keywords go to the Lightning trainer.
        """
        from scvi.train import TrainRunner

        from scfm.train import WarmupCosineTrainingPlan

        if max_epochs < 1 or batch_size < 2:
            raise ValueError(f"max_epochs must be >= 1 and batch_size >= 2, got {max_epochs} and {batch_size}")
        if dar_weight is None:
            dar_weight = 1.0 if self.config.batch_discriminator else 0.0
        if dar_weight > 0 and not self.config.batch_discriminator:
            raise ValueError("dar_weight > 0 needs a model built with batch_discriminator=True (and two batches)")
        if modality_dropout is None:
            modality_dropout = 0.3 if self.mosaic else 0.0
        if not 0.0 <= modality_dropout < 1.0:
            raise ValueError(f"modality_dropout must be in [0, 1), got {modality_dropout}")
        seed_everything(seed, verbose=False)
        self.dar_weight_ = dar_weight
        self.modality_dropout_ = modality_dropout
        columns = self.columns_
        codes = self._registered_batch_codes() if self.config.n_batches else np.zeros(self.adata.n_obs, np.int64)
        lengths = self._dataset(columns, np.arange(self.adata.n_obs), codes, training=False).lengths()
        data_module = CellDataModule(
            lambda rows: self._dataset(columns, rows, codes, training=True, modality_dropout=modality_dropout),
            self.adata.n_obs,
            MultiomeCollator(
                pad_id=self.config.pad_id,
                pad_value=self.config.pad_value,
                mask_value=self.config.mask_value,
                mask_ratio=mask_ratio,
            ),
            batch_size=batch_size,
            validation_size=validation_size,
            seed=seed,
            lengths=lengths,
        )
        plan = WarmupCosineTrainingPlan(
            self.module,
            lr=lr,
            weight_decay=weight_decay,
            warmup_steps=warmup_steps,
            head_lr_factor=HEAD_LR_FACTOR,
            head_prefixes=("batch_discriminator.",),
            gep_weight=gep_weight,
            gepc_weight=gepc_weight,
            ecs_weight=ecs_weight,
            ecs_threshold=ecs_threshold,
            dar_weight=dar_weight,
        )
        trainer_kwargs.setdefault("check_val_every_n_epoch", 1 if validation_size > 0 else None)
        trainer_kwargs.setdefault("enable_progress_bar", progress)
        runner = TrainRunner(
            self,
            training_plan=plan,
            data_splitter=data_module,
            max_epochs=max_epochs,
            accelerator=accelerator,
            devices=devices,
            **trainer_kwargs,
        )
        self.module.train()
        start = time.perf_counter()
        try:
            runner()
        finally:
            self.module.eval()
        self.train_seconds_.append(time.perf_counter() - start)
        self.seconds_per_epoch_ = self.train_seconds_[-1] / max_epochs
        self.is_trained_ = True

    # -- inference -------------------------------------------------------------------------------
    def get_latent_representation(
        self,
        mdata=None,
        *,
        modality: str | None = None,
        batch_size: int = 64,
        normalize: bool = True,
        device: str = "auto",
    ) -> np.ndarray:
        """Joint cell embeddings ``(n_obs, d_model)`` of ``mdata`` (default: the training MuData).

        ``modality`` (``"rna"``, ``"atac"``, ``"protein"``) embeds each cell from that modality's tokens alone;
        cells without it get ``NaN`` rows. ``mdata`` needs the modality keys and layers of the training MuData and
        only batches the model was trained on.
        """
        if mdata is None or mdata is self.adata:
            mdata = self.adata
            columns = self.columns_
        else:
            check_mudata(mdata)
            missing = [key for key in self.modality_keys.values() if key not in mdata.mod]
            if missing:
                raise KeyError(f"mdata lacks the modalities {missing} the model was trained on (has {list(mdata.mod)})")
            columns = self._columns(self._read(mdata))
        if modality is not None and modality not in self.config.modalities:
            raise ValueError(f"modality must be one of {self.config.modalities}, got {modality!r}")
        codes = self.batch_codes(mdata)
        target = resolve_device(device)
        self.module.to(target)
        dataset = self._dataset(columns, np.arange(mdata.n_obs), codes, training=False, only=modality)
        embedding = embed_dataset(self.module, dataset, batch_size=batch_size, device=target)
        if normalize:
            embedding = l2_normalise(embedding)
        if modality is not None:
            present = next(c.present for c in columns if c.kind == modality)
            embedding[~present] = np.nan
        return embedding.astype(np.float32)

    # -- persistence -----------------------------------------------------------------------------
    def save(self, dir_path: str | os.PathLike, overwrite: bool = False, **kwargs) -> Path:
        """Write a checkpoint directory.

        It holds ``config.json``, ``vocab.json``, ``model.safetensors``, ``model_card.md`` and ``multiome.json`` (the
        selected features and their tokens, protein panels and the ``setup_mudata`` arguments).
        """
        setup = dict(self.adata_manager.registry["setup_args"])
        extra = {
            "features": self.features_,
            "feature_tokens": self.feature_tokens_,
            "panels": self.panels_,
            "setup_args": setup,
            "n_genes_from_checkpoint": self.n_genes_from_checkpoint_,
        }
        card = (
            f"# SCGPTMultiome\n\nscGPT multi-omic integration model fine-tuned from {self.checkpoint_name}.\n"
            f"Modalities: {self.config.modalities}; batches: {self.config.batch_categories}.\n"
            "Load with `scfm.models.scgpt.SCGPTMultiome.load(path, mdata)`.\n"
        )
        return save_checkpoint(
            dir_path,
            config=self.config.to_dict(),
            vocab=self.vocab,
            state_dict=self.module.state_dict(),
            model_card=card,
            overwrite=overwrite,
            extra_files={FEATURES_FILE: lambda path: path.write_text(json.dumps(extra, indent=2) + "\n")},
        )

    @classmethod
    def load(cls, dir_path: str | os.PathLike, mdata=None, **kwargs) -> SCGPTMultiome:
        """Load a saved model; ``mdata`` is registered with the saved ``setup_mudata`` arguments if needed."""
        if mdata is None:
            raise ValueError("SCGPTMultiome.load needs the MuData to attach the model to (load(path, mdata))")
        checkpoint = load_checkpoint(dir_path)
        if checkpoint.family != MULTIOME_FAMILY:
            raise CheckpointError(f"{checkpoint.path} holds a {checkpoint.family!r} model, not an SCGPTMultiome one")
        if not (checkpoint.path / FEATURES_FILE).is_file():
            raise CheckpointError(f"{checkpoint.path} lacks {FEATURES_FILE}")
        setup = json.loads((checkpoint.path / FEATURES_FILE).read_text())["setup_args"]
        if cls._get_most_recent_anndata_manager(mdata) is None:
            cls.setup_mudata(mdata, **setup)
        return cls(mdata, _checkpoint=checkpoint)


def _positions(index: pd.Index, names) -> np.ndarray:
    return pd.Index(index).get_indexer(pd.Index([str(n) for n in names]))
