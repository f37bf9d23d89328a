"""The tGPT family as the package sees it: loading, and the capabilities the tools dispatch on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..base import Embedding, EmbedsBulk, EmbedsCells, Family, Pretrained, decoder_vocab_problem
from ._config import TGPTConfig
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
    vocab_problem = staticmethod(decoder_vocab_problem("n_tokens"))

    @property
    def model_cls(self) -> type:
        from ._model import TGPT

        return TGPT

    def check_embed_options(self, pretrained: Pretrained, options: Mapping[str, Any]) -> None:
        super().check_embed_options(pretrained, options)
        max_len = options.get("max_len")
        if max_len is not None and max_len != pretrained.config.max_len:
            raise ValueError(
                f"max_len={max_len} cannot be used with a tgpt model: its context is fixed at "
                f"{pretrained.config.max_len} tokens by the checkpoint; leave max_len=None"
            )

    def embed(
        self,
        pretrained: Pretrained,
        adata,
        source,
        alignment,
        *,
        options: Mapping[str, Any],
        device,
        batch_size: int,
        block_size: int,
        normalize: bool,
        progress: bool,
    ) -> Embedding:
        result = embed_ranked(
            pretrained.module,
            source,
            alignment,
            device=device,
            batch_size=batch_size,
            block_size=block_size,
            normalize=normalize,
            progress=progress,
            obs_names=np.asarray(adata.obs_names),
        )
        record = {
            "tokenizer": "rank",
            "max_len": pretrained.config.max_len,
            "n_truncated_cells": result.n_subsampled_cells,
        }
        return Embedding(result.embeddings, result.input_kind, result.n_tokens, record)
