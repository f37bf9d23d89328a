"""The tGPT family as the package sees it: loading, and the capabilities the tools dispatch on."""

from __future__ import annotations

import os

from ..base import Embedding, EmbedRequest, EmbedsBulk, EmbedsCells, Family, Pretrained, decoder_vocab_problem
from ._config import TGPTConfig
from ._convert import is_reference_tgpt_dir, pretrained_from_reference
from ._embed import embed_ranked
from ._module import TGPTModule


class TGPTFamily(Family, EmbedsCells, EmbedsBulk):
    """tGPT: a sample is its expressed genes ranked by expression, read by a causal next-gene decoder."""

    name = "tgpt"
    label = "tGPT"
    bundled = "tgpt"
    config_cls = TGPTConfig
    module_cls = TGPTModule
    embed_options = frozenset({"max_len"})
    fixed_context = True
    vocab_problem = staticmethod(decoder_vocab_problem("n_tokens"))

    @property
    def model_cls(self) -> type:
        from ._model import TGPT

        return TGPT

    def recognises(self, path: str | os.PathLike) -> bool:
        return is_reference_tgpt_dir(path)

    def from_reference(self, path: str | os.PathLike) -> Pretrained:
        return pretrained_from_reference(path)

    def embed(self, pretrained: Pretrained, adata, source, alignment, request: EmbedRequest) -> Embedding:
        result = embed_ranked(
            pretrained.module,
            source,
            alignment,
            **request.loop_arguments(),
            obs_names=request.obs_names(adata),
        )
        record = {
            "tokenizer": "rank",
            "max_len": pretrained.config.max_len,
            "n_truncated_cells": result.n_subsampled_cells,
        }
        return Embedding(result.embeddings, result.input_kind, result.n_tokens, record)
