"""scGPT's pretraining recipe: what ``scfm pretrain`` needs to stream-train an SCGPT (masked-value GEP, GEPC, ECS)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from scfm.genes import GeneVocab
from scfm.train import PretrainConfig, PretrainRecipe

from ..base import load_pretrained, load_weights_strict, save_checkpoint
from ._config import FAMILY, SCGPTConfig
from ._data import MaskedValueCollator
from ._embed import binning_config
from ._module import SCGPTModule
from ._stream import SCGPTCellEncoder

MODES = ("masked", "generative")


@dataclass
class SCGPTObjectives:
    """The ``objectives`` section of an SCGPT pretraining config.

    Masked-value GEP, GEPC from the cell embedding and ECS (see :meth:`scfm.models.SCGPT.train`).

    ``mode``: ``"masked"`` (values of ``mask_ratio`` of the genes are hidden) or ``"generative"``;
    ``n_zero_queries``: unexpressed measured genes added to each cell's GEPC queries.
    """

    mode: str = "masked"
    mask_ratio: float = 0.4
    gep_weight: float = 1.0
    gepc_weight: float = 1.0
    ecs_weight: float = 0.0
    ecs_threshold: float = 0.6
    n_zero_queries: int = 0


class SCGPTPretrainRecipe(PretrainRecipe):
    """:class:`~scfm.train.PretrainRecipe` of :class:`~scfm.models.SCGPT`.

    Binned-value tokens streamed through :class:`SCGPTCellEncoder` with a :class:`MaskedValueCollator`, objectives
    :class:`SCGPTObjectives`.
    """

    family = FAMILY
    label = "SCGPT"
    objectives_cls = SCGPTObjectives

    def check(self, config: PretrainConfig) -> list[str]:
        if config.objectives.mode not in MODES:
            return ["objectives.mode must be 'masked' or 'generative'"]
        return []

    def new_module(self, vocab: GeneVocab, config: PretrainConfig) -> SCGPTModule:
        architecture = {"max_len": config.model.max_len, **config.model.architecture}
        try:
            model_config = SCGPTConfig(n_tokens=len(vocab), pad_id=vocab.pad_id, cls_id=vocab.cls_id, **architecture)
        except TypeError as err:
            raise ValueError(f"model.architecture: {err}") from err
        return SCGPTModule(model_config)

    def module_from_checkpoint(self, init_from: str) -> tuple[SCGPTModule, GeneVocab]:
        pretrained = load_pretrained(init_from, family=FAMILY)
        pretrained.module.train()
        return pretrained.module, pretrained.vocab

    def module_from_config(
        self, model_config: dict[str, Any], state_dict: dict[str, torch.Tensor] | None = None, *, source: str = ""
    ) -> SCGPTModule:
        module = SCGPTModule(SCGPTConfig.from_dict(model_config))
        if state_dict is not None:
            load_weights_strict(module, state_dict, source, config_file="model_config.json")
        return module

    def cell_encoder(self, module: SCGPTModule, vocab: GeneVocab, config: PretrainConfig) -> SCGPTCellEncoder:
        objectives, data = config.objectives, config.data
        collator = MaskedValueCollator(
            pad_id=vocab.pad_id,
            pad_value=module.config.pad_value,
            mask_value=module.config.mask_value,
            mask_ratio=objectives.mask_ratio,
            mode=objectives.mode,
            n_zero_queries=objectives.n_zero_queries,
            pad_to_length=config.model.max_len if data.pad_to_max_len else 0,
        )
        return SCGPTCellEncoder(
            vocab,
            binning=binning_config(module.config, config.model.max_len),
            collator=collator,
            gene_key=data.gene_key,
            min_genes=data.min_genes,
        )

    def loss_kwargs(self, objectives: SCGPTObjectives) -> dict[str, Any]:
        return {
            "gep_weight": objectives.gep_weight,
            "gepc_weight": objectives.gepc_weight,
            "ecs_weight": objectives.ecs_weight,
            "ecs_threshold": objectives.ecs_threshold,
        }

    def describe(self, module: SCGPTModule) -> str:
        config = module.config
        return (
            f"d_model {config.d_model}, {config.n_layers} layers, {config.n_heads} heads; inference max_len "
            f"{config.max_len}, cell embedding {config.cell_embedding}"
        )

    def save(
        self,
        destination: str | os.PathLike,
        module: SCGPTModule,
        vocab: GeneVocab,
        *,
        model_card: str,
        overwrite: bool,
        half_precision: bool,
    ) -> Path:
        return save_checkpoint(
            destination,
            config=module.config.to_dict(),
            vocab=vocab,
            state_dict=module.state_dict(),
            model_card=model_card,
            overwrite=overwrite,
            half_precision=half_precision,
        )
