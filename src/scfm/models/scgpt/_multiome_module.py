"""scGPT's multi-omic model (Cui et al. 2024).

One extended vocabulary of gene, peak and protein tokens; modality and batch embeddings combined with the transformer
output for the heads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from scvi.module.base import BaseModuleClass, LossOutput
from torch import nn

from scfm.nn import (
    BatchDiscriminator,
    CategoryValueEmbedding,
    CellToGeneHead,
    ConditionEmbedding,
    ContinuousValueEmbedding,
    ExpressionHead,
    GeneEmbedding,
    TransformerStack,
    padding_attention_mask,
)
from scfm.nn._losses import elastic_cell_similarity, masked_mse, masked_zero_bce

from ._module import weighted_loss
from ._shape import SCGPTShape, raise_if_invalid

MULTIOME_FAMILY = "scgpt-multiome"


@dataclass(kw_only=True)
class SCGPTMultiomeConfig(SCGPTShape):
    """Architecture of :class:`~scfm.models.scgpt.SCGPTMultiome` (stored as ``config.json``).

    Besides its own fields below, it has the fields of :class:`~scfm.models.SCGPTConfig` that describe the
    vocabulary ids, transformer and value input (copied from the starting checkpoint), batches, ``tokenizer_seed``
    and ``extra``: same names, meanings and checks, documented there. The ids refer to the extended vocabulary
    (specials, genes, peaks, proteins); the batch embedding (``n_batches > 0``) is added to the modality embedding
    at the heads, and ``batch_discriminator`` works on the cell embedding. Every field but ``n_tokens, pad_id,
    cls_id`` is keyword-only.

    Parameters
    ----------
    modalities
        Modality kinds in token order (``"rna"``, ``"atac"``, ``"protein"``); token modality ``i + 1`` is
        ``modalities[i]`` (``0``: special tokens).
    max_tokens
        Modality kind -> most non-zero tokens of one cell in that modality (deterministic per-cell subsample).
    zero_fraction
        Zero-valued tokens added per modality, as a fraction of the cell's non-zero tokens in it (GEP and GEPC
        then learn zeros too).
    """

    modalities: list[str] = field(default_factory=list)
    max_tokens: dict[str, int] = field(default_factory=dict)
    zero_fraction: float = 0.25
    family: str = MULTIOME_FAMILY

    def __post_init__(self) -> None:
        problems = self.shape_problems()
        if not self.modalities or len(set(self.modalities)) != len(self.modalities):
            problems.append(f"modalities must be distinct and non-empty, got {self.modalities}")
        if not 0.0 <= self.zero_fraction <= 4.0:
            problems.append(f"zero_fraction must be in [0, 4], got {self.zero_fraction}")
        if self.family != MULTIOME_FAMILY:
            problems.append(f"family is {self.family!r}, expected {MULTIOME_FAMILY!r}")
        raise_if_invalid("SCGPTMultiome", problems)


class SCGPTMultiomeModule(BaseModuleClass):
    """Feature tokens + binned values -> transformer -> cell embedding; heads see ``[h, e_batch + e_modality]``.

    The token, value and transformer parameters have the names of :class:`~scfm.models.scgpt.SCGPTModule`, so a
    pretrained scGPT checkpoint initialises them. The modality of each token (buffer ``token_modality``) and the
    cell's batch are embedded, summed and concatenated to each hidden state before the GEP head, and to the cell
    embedding before the GEPC head (one condition per query token), never fed into attention.

    Objectives: GEP (masked values of every input token, zero or not), GEPC (every input token's value from the
    cell embedding, with a zero-probability logit), optional ECS, and DAR (a batch discriminator behind gradient
    reversal; used for mosaic data).
    """

    def __init__(self, config: SCGPTMultiomeConfig, token_modality: torch.Tensor | None = None) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.gene_embedding = GeneEmbedding(config.n_tokens, d, padding_idx=config.pad_id)
        if config.input_style == "continuous":
            self.value_embedding = ContinuousValueEmbedding(d, config.dropout)
        else:
            self.value_embedding = CategoryValueEmbedding(config.n_bins, d)
        self.transformer = TransformerStack(
            config.n_layers, d, config.n_heads, config.d_hidden, config.dropout, config.activation, config.norm_first
        )
        if token_modality is None:
            token_modality = torch.zeros(config.n_tokens, dtype=torch.long)
        self.register_buffer("token_modality", token_modality.to(torch.long).clone())
        self.modality_embedding = ConditionEmbedding(len(config.modalities) + 1, d)
        self.batch_embedding = ConditionEmbedding(config.n_batches, d) if config.n_batches > 0 else None
        self.batch_discriminator = BatchDiscriminator(d, config.n_batches) if config.batch_discriminator else None
        self.expression_head = ExpressionHead(2 * d, predict_zero=config.predict_zero, d_hidden=d)
        self.cell_to_gene_head = CellToGeneHead(d, 2 * d, predict_zero=config.predict_zero)

    # -- encoder ---------------------------------------------------------------------------------
    def encode(self, gene_ids: torch.Tensor, values: torch.Tensor) -> dict[str, torch.Tensor]:
        """Hidden states ``(batch, length, d)``, padding mask and cell embedding ``(batch, d)``."""
        padding = gene_ids == self.config.pad_id
        x = self.gene_embedding(gene_ids) + self.value_embedding(values)
        hidden = self.transformer(x, padding_attention_mask(padding))
        return {"hidden": hidden, "padding": padding, "cell_embedding": self.pool(hidden, padding)}

    def pool(self, hidden: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """Pool the ``<cls>`` state, or the mean over feature tokens (per ``config.cell_embedding``)."""
        if self.config.cell_embedding == "cls":
            return hidden[:, 0]
        weight = (~padding[:, 1:]).to(hidden.dtype).unsqueeze(-1)
        return (hidden[:, 1:] * weight).sum(1) / weight.sum(1).clamp(min=1.0)

    def embed(self, gene_ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Cell embeddings ``(batch, d)``."""
        return self.encode(gene_ids, values)["cell_embedding"]

    def condition(self, token_ids: torch.Tensor, batch_index: torch.Tensor | None) -> torch.Tensor:
        """``e_modality(token) + e_batch(cell)`` per token, ``(batch, length, d)``."""
        out = self.modality_embedding(self.token_modality[token_ids])
        if self.batch_embedding is not None:
            if batch_index is None:
                raise ValueError("this model was built with batch embeddings; batch_index is required")
            out = out + self.batch_embedding(batch_index.reshape(-1).long())[:, None, :]
        return out

    # -- scvi-tools module protocol --------------------------------------------------------------
    def _get_inference_input(self, tensors: dict[str, torch.Tensor], **kwargs) -> dict[str, torch.Tensor]:
        return {"gene_ids": tensors["gene_ids"], "values": tensors["values"]}

    def inference(self, gene_ids, values) -> dict[str, torch.Tensor]:
        return self.encode(gene_ids, values)

    def _get_generative_input(self, tensors, inference_outputs, **kwargs) -> dict[str, torch.Tensor | None]:
        return {
            "hidden": inference_outputs["hidden"],
            "cell_embedding": inference_outputs["cell_embedding"],
            "gene_ids": tensors["gene_ids"],
            "query_gene_ids": tensors.get("query_gene_ids"),
            "batch_index": tensors.get("batch_index"),
        }

    def generative(self, hidden, cell_embedding, gene_ids, query_gene_ids=None, batch_index=None) -> dict[str, Any]:
        out = {"gep": self.expression_head(torch.cat([hidden, self.condition(gene_ids, batch_index)], dim=-1))}
        if query_gene_ids is None:
            query_gene_ids = gene_ids[:, 1:]
        condition = self.condition(query_gene_ids, batch_index)
        head = self.cell_to_gene_head
        cell = torch.cat([cell_embedding[:, None, :].expand(-1, query_gene_ids.shape[1], -1), condition], dim=-1)
        query = torch.sigmoid(head.gene_to_query(self.gene_embedding(query_gene_ids)))
        gepc = {"value": (head.value_proj(query) * cell).sum(-1)}
        if head.zero_proj is not None:
            gepc["zero_logit"] = (head.zero_proj(query) * cell).sum(-1)
        out["gepc"] = gepc
        if self.batch_discriminator is not None:
            out["dar"] = self.batch_discriminator(cell_embedding)
        return out

    def loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict[str, torch.Tensor],
        generative_outputs: dict[str, Any],
        gep_weight: float = 1.0,
        gepc_weight: float = 1.0,
        ecs_weight: float = 0.0,
        ecs_threshold: float = 0.8,
        dar_weight: float = 0.0,
    ) -> LossOutput:
        masked = tensors["masked"]
        targets = tensors["target_values"]
        if "query_gene_ids" in tensors:
            query_targets = tensors["query_values"]
            queries = tensors["query_gene_ids"] != self.config.pad_id
        else:
            query_targets = targets[:, 1:]
            queries = tensors["gene_ids"][:, 1:] != self.config.pad_id
        terms = {}
        if gep_weight > 0:
            terms["gep"] = masked_mse(generative_outputs["gep"]["value"], targets, masked)
        if gepc_weight > 0:
            gepc = generative_outputs["gepc"]
            terms["gepc"] = masked_mse(gepc["value"], query_targets, queries)
            if "zero_logit" in gepc:
                terms["gepc_zero"] = masked_zero_bce(gepc["zero_logit"], query_targets, queries)
        if ecs_weight > 0:
            terms["ecs"] = elastic_cell_similarity(inference_outputs["cell_embedding"], ecs_threshold)
        if dar_weight > 0:
            if "dar" not in generative_outputs:
                raise ValueError("dar_weight > 0 needs a model with a batch discriminator (batch_discriminator=True)")
            terms["dar"] = F.cross_entropy(generative_outputs["dar"], tensors["batch_index"].reshape(-1).long())
        if not terms:
            raise ValueError("every objective weight is zero; nothing to train")
        weights = {"gep": gep_weight, "gepc": gepc_weight, "gepc_zero": gepc_weight, "ecs": ecs_weight}
        weights["dar"] = dar_weight
        return weighted_loss(terms, weights, masked.shape[0])

    @torch.inference_mode()
    def sample(self, *args, **kwargs):
        """Raise: generation is not part of multi-omic integration."""
        raise NotImplementedError("SCGPTMultiome does not generate cells")


def copy_pretrained_weights(
    module: SCGPTMultiomeModule, source: nn.Module, token_map: dict[int, int]
) -> tuple[list[str], list[str]]:
    """Copy the transformer and value embedding of a pretrained scGPT module, and its gene embedding rows.

    ``token_map`` maps new token ids to ids in the source vocabulary (specials and pretrained-initialised genes).
    Returns ``(copied, reinitialised)`` parameter names.
    """
    state = module.state_dict()
    src = source.state_dict()
    copied = []
    for key, value in src.items():
        if key.startswith(("transformer.", "value_embedding.")) and key in state and state[key].shape == value.shape:
            state[key] = value.clone()
            copied.append(key)
    if token_map:
        weight = state["gene_embedding.embedding.weight"] if "gene_embedding.embedding.weight" in state else None
        if weight is not None and "gene_embedding.embedding.weight" in src:
            rows = torch.tensor(sorted(token_map), dtype=torch.long)
            weight[rows] = src["gene_embedding.embedding.weight"][torch.tensor([token_map[int(r)] for r in rows])]
            copied.append("gene_embedding.embedding.weight (rows)")
        for key in src:
            if key.startswith("gene_embedding.") and key != "gene_embedding.embedding.weight" and key in state:
                if state[key].shape == src[key].shape:
                    state[key] = src[key].clone()
                    copied.append(key)
    module.load_state_dict(state)
    reinitialised = sorted(k for k in state if k not in copied and not k.startswith("token_modality"))
    return copied, reinitialised
