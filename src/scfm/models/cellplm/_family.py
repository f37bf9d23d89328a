"""The CellPLM family as the package sees it: loading, and the capabilities the tools dispatch on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..base import AnnotatesWithReference, Embedding, EmbedRequest, EmbedsCells, Family, PredictsCounts, Pretrained
from ._config import CellPLMConfig
from ._context import sentences_of
from ._counts import iter_expected_counts, plan_counts
from ._inference import embed_cells_as_tokens
from ._module import CellPLMModule


class CellPLMFamily(Family, EmbedsCells, AnnotatesWithReference, PredictsCounts):
    """CellPLM: cells are tokens and a sample or spatial neighbourhood is the sentence."""

    name = "cellplm"
    label = "CellPLM"
    bundled = "cellplm"
    config_cls = CellPLMConfig
    module_cls = CellPLMModule
    embed_options = frozenset({"sample_key", "spatial_key", "context"})

    @property
    def model_cls(self) -> type:
        from ._model import CellPLM

        return CellPLM

    def vocab_problem(self, config: CellPLMConfig, vocab) -> str | None:
        if config.first_gene_id + config.n_genes != len(vocab):
            return (
                f"config.json says {config.n_genes} genes from id {config.first_gene_id} but vocab.json has "
                f"{len(vocab)} tokens"
            )
        return None

    def check_embed_options(self, pretrained: Pretrained, options: Mapping[str, Any]) -> None:
        if options.get("max_len") is not None:
            raise ValueError("max_len does not apply to a CellPLM model (a cell is one token); use context= (cells)")
        super().check_embed_options(pretrained, options)

    def embed(self, pretrained: Pretrained, adata, source, alignment, request: EmbedRequest) -> Embedding:
        if request.rows is not None:
            raise NotImplementedError("CellPLM embeds whole sentences of cells; subset the AnnData instead of rows")
        context = request.options.get("context") or pretrained.config.context
        sample_key, spatial_key = request.options.get("sample_key"), request.options.get("spatial_key")
        sentences, coordinates = sentences_of(adata, sample_key=sample_key, spatial_key=spatial_key, context=context)
        result = embed_cells_as_tokens(
            pretrained.module,
            source,
            alignment,
            sentences,
            coordinates=coordinates,
            progress=request.progress,
            device=request.device,
            batch_size=request.batch_size,
            block_size=request.block_size,
            normalize=request.normalize,
            precision=request.precision,
        )
        record = {
            "tokenizer": "cell",
            "context": context,
            "n_sentences": len(sentences),
            "sample_key": sample_key,
            "spatial_key": spatial_key,
            "n_empty_cells": result.n_empty_cells,
        }
        return Embedding(result.embeddings, result.input_kind, result.n_tokens, record)

    def annotate_with_reference(self, pretrained, query, reference, request):
        from ._annotate import annotate_with_reference

        return annotate_with_reference(pretrained, query, reference, request)

    plan_counts = staticmethod(plan_counts)
    iter_expected_counts = staticmethod(iter_expected_counts)
