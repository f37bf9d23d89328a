"""scMulan network.

Summed entity and value embeddings, a causal decoder, and heads for the next entity and its value.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scvi.module.base import BaseModuleClass, LossOutput
from torch import nn

from scfm.nn import TransformerStack

from ._config import SCMulanConfig
from ._data import ENTITIES, ENTITY_TARGET, METADATA_TARGET, VALUE_TARGET, VALUES


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU's tanh approximation (nanoGPT's ``new_gelu``, which the public scMulan uses)."""
    return F.gelu(x, approximate="tanh")


def sentence_attention_mask(padding: torch.Tensor, isolated: torch.Tensor | None = None) -> torch.Tensor:
    """``(batch, 1, length, length)`` boolean mask: query ``i`` sees keys ``j <= i`` that are not padding.

    An ``isolated`` position is seen by no other position, so several prompts that end differently (one query
    token per metadata key) can share one forward pass over their common prefix.
    """
    length = padding.shape[1]
    positions = torch.arange(length, device=padding.device)
    allowed = (positions[None, :] <= positions[:, None])[None] & (~padding)[:, None, :]
    if isolated is not None:
        allowed = allowed & (~isolated[:, None, :] | torch.eye(length, dtype=torch.bool, device=padding.device)[None])
    return allowed[:, None]


class SCMulanModule(BaseModuleClass):
    """The scMulan network.

    Entity and value embeddings (summed), a pre-norm causal :class:`~scfm.nn.TransformerStack`, an entity head
    tied to the entity embedding, and a value head that reads the hidden state together with the embedding of the
    entity whose value it predicts: ``p(entity, value | prefix) = p(entity | prefix) p(value | prefix, entity)``.

    No position embedding: a c-sentence is ordered by expression level, which the value embeddings carry.

    ``config.layout == "reference"`` (a converted public scMulan checkpoint, :mod:`scfm.models.scmulan._convert`)
    replaces the tied entity head and the value head by the reference's untied ``entity_head`` and its regression
    ``level_head`` (one output per token), and uses GELU's tanh approximation when ``config.activation`` says so.
    """

    def __init__(self, config: SCMulanConfig, metadata_weight: float = 1.0) -> None:
        super().__init__()
        self.config = config
        self.metadata_weight = metadata_weight
        d = config.d_model
        reference = config.layout == "reference"
        self.n_entities = config.n_gene_tokens if reference else config.sentence_vocab().n_entities
        self.entity_embedding = nn.Embedding(self.n_entities, d, padding_idx=config.pad_id)
        self.value_embedding = nn.Embedding(config.n_levels + 1, d)
        activation = "gelu" if config.activation == "gelu_tanh" else config.activation
        self.transformer = TransformerStack(
            config.n_layers, d, config.n_heads, config.d_hidden, config.dropout, activation, norm_first=True
        )
        if config.activation == "gelu_tanh":  # a plain function of each layer: no weights change
            for layer in self.transformer.layers:
                layer.activation = gelu_tanh
        if reference:
            # the public checkpoint: an untied next-entity head and a regression head of every entity's level
            self.entity_head = nn.Linear(d, config.n_reference_tokens, bias=False)
            self.level_head = nn.Linear(d, config.n_reference_tokens, bias=False)
        else:
            self.value_head = nn.Sequential(
                nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d), nn.Linear(d, config.n_levels + 1)
            )
        nn.init.normal_(self.entity_embedding.weight, std=0.02)
        nn.init.normal_(self.value_embedding.weight, std=0.02)
        with torch.no_grad():
            self.entity_embedding.weight[config.pad_id].zero_()

    def embed_words(self, entities: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        return self.entity_embedding(entities) + self.value_embedding(values)

    def hidden_states(
        self, entities: torch.Tensor, values: torch.Tensor, isolated: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``(batch, length, d_model)`` last hidden states of right-padded sentences."""
        if entities.shape[1] > self.config.max_len + (0 if isolated is None else len(self.config.metadata_terms)):
            raise ValueError(f"sentences of {entities.shape[1]} words exceed max_len={self.config.max_len}")
        padding = entities == self.config.pad_id
        x = self.embed_words(entities, values)
        if padding.any() or isolated is not None:
            return self.transformer(x, sentence_attention_mask(padding, isolated))
        return self.transformer(x, is_causal=True)

    def entity_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over all entities for the word after each position (head tied to the entity embedding).

        The ``"reference"`` layout's untied head covers the reference tokens; the appended ``<pad>``, ``<cls>``
        and ``<eoc>`` get ``-inf``.
        """
        if self.config.layout == "reference":
            logits = self.entity_head(hidden)
            return F.pad(logits, (0, self.n_entities - logits.shape[-1]), value=float("-inf"))
        return hidden @ self.entity_embedding.weight.T

    def value_logits(self, hidden: torch.Tensor, next_entities: torch.Tensor) -> torch.Tensor:
        """Logits over value ids ``0..n_levels`` of the next word, given which entity it is."""
        if self.config.layout == "reference":
            raise ValueError("a converted reference scMulan predicts levels by regression (reference_levels)")
        return self.value_head(hidden + self.entity_embedding(next_entities))

    def reference_levels(self, hidden: torch.Tensor, next_entities: torch.Tensor) -> torch.Tensor:
        """Return the level of the next entity (``"reference"`` layout): ``round(level_head(h)[entity])``, 0..10.

        The reference clamps to 10 whatever its number of levels; scfm clamps to ``min(10, n_levels)`` so that the
        level stays a row of the value embedding.
        """
        raw = self.level_head(hidden).gather(-1, next_entities[..., None])[..., 0]
        return torch.clamp(torch.round(raw), 0, min(10, self.config.n_levels)).long()

    def sentence_losses(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Mean cross-entropies of gene/``<eoc>`` entities, metadata terms and gene values over their targets."""
        entities, values = tensors[ENTITIES], tensors[VALUES]
        hidden = self.hidden_states(entities, values)[:, :-1]
        next_entities = entities[:, 1:]
        metadata = tensors[METADATA_TARGET][:, 1:]
        genes = tensors[ENTITY_TARGET][:, 1:] & ~metadata
        valued = tensors[VALUE_TARGET][:, 1:]
        logits = self.entity_logits(hidden)
        zero = hidden.sum() * 0.0
        losses = {
            "entity": F.cross_entropy(logits[genes], next_entities[genes]) if genes.any() else zero,
            "metadata": F.cross_entropy(logits[metadata], next_entities[metadata]) if metadata.any() else zero,
        }
        if valued.any():
            value_logits = self.value_logits(hidden[valued], next_entities[valued])
            losses["value"] = F.cross_entropy(value_logits, values[:, 1:][valued])
        else:
            losses["value"] = zero
        return losses

    # -- scvi-tools module protocol --------------------------------------------------------------
    def _get_inference_input(self, tensors, **kwargs):
        return {"tensors": tensors}

    def inference(self, tensors):
        return {"losses": self.sentence_losses(tensors)}

    def _get_generative_input(self, tensors, inference_outputs, **kwargs):
        return {}

    def generative(self):
        return {}

    def loss(self, tensors, inference_outputs, generative_outputs, **kwargs) -> LossOutput:
        losses = inference_outputs["losses"]
        total = losses["entity"] + losses["value"] + self.metadata_weight * losses["metadata"]
        return LossOutput(loss=total, reconstruction_loss=losses, n_obs_minibatch=tensors[ENTITIES].shape[0])
