"""The scGPT family as the package sees it: loading, and the capabilities the tools dispatch on."""

from __future__ import annotations

import os

from ..base import (
    AnnotatesWithReference,
    AttentionRequest,
    AttentionScores,
    Embedding,
    EmbedRequest,
    EmbedsCells,
    Family,
    InfersGeneNetworks,
    IntegratesBatches,
    IntegratesModalities,
    PerturbationRequest,
    PredictsPerturbation,
    Pretrained,
)
from ._config import SCGPTConfig
from ._convert import is_reference_checkpoint_dir, pretrained_from_reference
from ._embed import embed_cells
from ._module import SCGPTModule


class SCGPTFamily(
    Family,
    EmbedsCells,
    AnnotatesWithReference,
    IntegratesBatches,
    InfersGeneNetworks,
    PredictsPerturbation,
    IntegratesModalities,
):
    """scGPT: gene tokens with per-cell binned values and a ``<cls>`` cell token."""

    name = "scgpt"
    label = "scGPT"
    article = "an"
    bundled = "scgpt"
    config_cls = SCGPTConfig
    module_cls = SCGPTModule
    embed_options = frozenset({"max_len"})
    network_methods = ("embedding", "attention")

    @property
    def model_cls(self) -> type:
        from ._model import SCGPT

        return SCGPT

    def vocab_problem(self, config: SCGPTConfig, vocab) -> str | None:
        if config.n_tokens != len(vocab):
            return f"config.json says n_tokens={config.n_tokens} but vocab.json has {len(vocab)} tokens"
        if (config.pad_id, config.cls_id) != (vocab.pad_id, vocab.cls_id):
            return "pad/cls ids in config.json and vocab.json disagree"
        return None

    def recognises(self, path: str | os.PathLike) -> bool:
        return is_reference_checkpoint_dir(path)

    def from_reference(self, path: str | os.PathLike) -> Pretrained:
        return pretrained_from_reference(path)

    def embed(self, pretrained: Pretrained, adata, source, alignment, request: EmbedRequest) -> Embedding:
        config = pretrained.config
        max_len = request.options.get("max_len")
        result = embed_cells(
            pretrained.module,
            source,
            alignment,
            max_len=max_len,
            **request.loop_arguments(),
        )
        record = {
            "tokenizer": "binned",
            "max_len": max_len or config.max_len,
            "n_bins": config.n_bins,
            "cell_embedding": config.cell_embedding,
            "tokenizer_seed": config.tokenizer_seed,
            "n_empty_cells": result.n_empty_cells,
            "n_subsampled_cells": result.n_subsampled_cells,
        }
        return Embedding(result.embeddings, result.input_kind, result.n_tokens, record)

    def annotate_with_reference(self, pretrained, query, reference, request):
        from ._annotate import annotate_with_reference

        return annotate_with_reference(pretrained, query, reference, request)

    def integrate(self, pretrained, adata, settings):
        from ._integrate import integrate_batches

        return integrate_batches(pretrained, adata, settings)

    def maps_queries(self, pretrained):
        config = pretrained.config
        return config.n_batches > 0 and bool(config.batch_categories)

    def integrate_modalities(self, pretrained, mdata, request):
        from ._multiome_integrate import integrate_modalities

        return integrate_modalities(pretrained, mdata, request)

    def gene_embeddings(self, pretrained: Pretrained, token_ids) -> object:
        from ._gene_network import gene_embeddings

        return gene_embeddings(pretrained.module, token_ids)

    def attention_scores(
        self, pretrained: Pretrained, source, alignment, token_ids, request: AttentionRequest
    ) -> AttentionScores:
        from ._gene_network import attention_scores

        return attention_scores(pretrained.module, source, alignment, token_ids, request)

    def finetune_perturbation(self, pretrained: Pretrained, adata, request: PerturbationRequest):
        from ._perturb import finetune_perturbation

        return finetune_perturbation(pretrained, adata, request)

    def load_perturbation_model(self, path: str | os.PathLike):
        from ._perturb import SCGPTPerturbation

        return SCGPTPerturbation.load(path)
