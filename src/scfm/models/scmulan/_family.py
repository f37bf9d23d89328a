"""The scMulan family as the package sees it: loading, and the capabilities the tools dispatch on."""

from __future__ import annotations

import numpy as np

from ..base import (
    AnnotatesZeroShot,
    Embedding,
    EmbedRequest,
    EmbedsCells,
    Family,
    Generates,
    Pretrained,
    TermPrediction,
    decoder_vocab_problem,
)
from ._config import SCMulanConfig
from ._infer import annotation_pass
from ._module import SCMulanModule
from ._reference import reference_pass
from ._tasks import generate_anndata, predict_terms


class SCMulanFamily(Family, EmbedsCells, AnnotatesZeroShot, Generates):
    """scMulan: c-sentences of (entity, value) words, one causal decoder for annotation and generation."""

    name = "scmulan"
    label = "scMulan"
    article = "an"
    bundled = "scmulan"
    config_cls = SCMulanConfig
    module_cls = SCMulanModule
    embed_options = frozenset({"max_len"})
    fixed_context = True
    vocab_problem = staticmethod(decoder_vocab_problem("n_gene_tokens"))

    @property
    def model_cls(self) -> type:
        from ._model import SCMulan

        return SCMulan

    def recognises(self, path) -> bool:
        from ._convert import is_reference_scmulan_dir

        return is_reference_scmulan_dir(path)

    def from_reference(self, path) -> Pretrained:
        from ._convert import pretrained_from_reference

        return pretrained_from_reference(path)

    def embed(self, pretrained: Pretrained, adata, source, alignment, request: EmbedRequest) -> Embedding:
        config = pretrained.config
        if config.layout == "reference":
            found = reference_pass(
                pretrained.module, source, alignment, **request.loop_arguments(), obs_names=request.obs_names(adata)
            )
            record = {"tokenizer": "scMulan reference prompt", "n_levels": config.n_levels, "n_truncated_cells": 0}
            return Embedding(found.embeddings, found.input_kind, found.n_tokens, record)
        found = annotation_pass(
            pretrained.module,
            source,
            alignment,
            [],
            **request.loop_arguments(),
            obs_names=request.obs_names(adata),
        )
        record = {
            "tokenizer": "c-sentence",
            "max_len": config.max_len,
            "n_levels": config.n_levels,
            "n_truncated_cells": found.n_truncated_cells,
        }
        return Embedding(found.embeddings, found.input_kind, 0, record)

    def annotate_zero_shot(
        self,
        pretrained: Pretrained,
        source,
        alignment,
        key: str,
        *,
        candidates: list[str] | None,
        top_k: int,
        device,
        batch_size: int,
        progress: bool,
        obs_names: np.ndarray,
    ) -> TermPrediction:
        predictions, _ = predict_terms(
            pretrained,
            source,
            alignment,
            [key],
            candidates=None if candidates is None else {key: candidates},
            top_k=top_k,
            device=device,
            batch_size=batch_size,
            progress=progress,
            obs_names=obs_names,
        )
        return predictions[key]

    def generate(self, pretrained: Pretrained, n_cells: int, conditions, **kwargs):
        return generate_anndata(pretrained, n_cells, conditions, **kwargs)
