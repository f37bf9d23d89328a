"""tGPT network: a causal decoder over a sample's genes ranked by expression, trained to predict the next gene."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scvi.module.base import BaseModuleClass, LossOutput
from torch import nn

from scfm.nn import TransformerStack
from scfm.nn._losses import paired_view_contrastive

from ._config import TGPTConfig
from ._data import TOKEN_IDS, VIEW_TOKEN_IDS


def causal_padding_mask(padding: torch.Tensor) -> torch.Tensor:
    """``(batch, 1, length, length)`` boolean: query ``i`` sees keys ``j <= i`` that are not padding.

    Sequences are right-padded and start with a real token, so every query row sees at least one key.
    """
    length = padding.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=padding.device).tril()
    return causal[None, None] & (~padding)[:, None, None, :]


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU with the tanh approximation (GPT-2's ``gelu_new``)."""
    return F.gelu(x, approximate="tanh")


class TGPTModule(BaseModuleClass):
    """The tGPT network.

    Token and learned position embeddings, a pre-norm causal :class:`~scfm.nn.TransformerStack`, and a next-gene head
    tied to the token embedding (``config.tied_head=False``: a separate bias-free linear head). This is GPT-2's
    layout (pre-norm blocks, a final norm, learned positions), so a reference tGPT checkpoint maps onto it tensor
    for tensor (:mod:`scfm.models.tgpt._convert`).

    The sample embedding is the mean of the last hidden states over the gene tokens (``begin``, ``end`` and
    padding excluded), as in the paper.

    Training objectives: next-gene cross-entropy (the paper's) and, optionally, a contrastive term (InfoNCE between
    the embeddings of two thinned views of each cell; through a projection head when ``config.contrastive_dim``).
    """

    def __init__(self, config: TGPTConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.token_embedding = nn.Embedding(config.n_tokens, d, padding_idx=config.pad_id)
        self.position_embedding = nn.Embedding(config.max_len, d)
        self.dropout = nn.Dropout(config.dropout)
        activation = "gelu" if config.activation == "gelu_tanh" else config.activation
        self.transformer = TransformerStack(
            config.n_layers, d, config.n_heads, config.d_hidden, config.dropout, activation, norm_first=True
        )
        if config.activation == "gelu_tanh":  # the activation is a plain function of each layer: no weights change
            for layer in self.transformer.layers:
                layer.activation = gelu_tanh
        if not config.tied_head:
            self.next_token_head = nn.Linear(d, config.n_tokens, bias=False)
        if config.contrastive_dim:
            self.projection = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, config.contrastive_dim))
        # Small embeddings keep the tied head's initial logits near zero (unit-variance rows would give
        # logits of size sqrt(d_model) and a first loss several times log(n_tokens)).
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding.weight, std=0.02)
        with torch.no_grad():
            self.token_embedding.weight[config.pad_id].zero_()

    def hidden_states(self, token_ids: torch.Tensor) -> torch.Tensor:
        """``(batch, length, d_model)`` last hidden states of right-padded ``(batch, length)`` token ids."""
        if token_ids.shape[1] > self.config.max_len:
            raise ValueError(f"sequences of {token_ids.shape[1]} tokens exceed max_len={self.config.max_len}")
        padding = token_ids == self.config.pad_id
        positions = torch.arange(token_ids.shape[1], device=token_ids.device)
        x = self.token_embedding(token_ids) + self.position_embedding(positions)[None]
        if self.config.token_type_id is not None:  # GPT-2 embeds token_type_ids with the token embedding
            x = x + self.token_embedding.weight[self.config.token_type_id]
        x = self.dropout(x)
        if padding.any():
            return self.transformer(x, causal_padding_mask(padding))
        return self.transformer(x, is_causal=True)

    def next_token_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over the vocabulary for the token after each position (head tied to the token embedding)."""
        if not self.config.tied_head:
            return self.next_token_head(hidden)
        return hidden @ self.token_embedding.weight.T

    def next_gene_loss(self, token_ids: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        """Mean next-token cross-entropy over the real (non-padding) targets."""
        if logits is None:
            logits = self.next_token_logits(self.hidden_states(token_ids))
        targets = token_ids[:, 1:].masked_fill(token_ids[:, 1:] == self.config.pad_id, -100)
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)

    def embed(self, token_ids: torch.Tensor) -> torch.Tensor:
        """``(batch, d_model)`` mean of the last hidden states over gene tokens."""
        return self.pool(self.hidden_states(token_ids), token_ids)

    def pool(self, hidden: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        """Mean of ``hidden`` over the gene tokens of ``token_ids`` (begin, end and padding excluded)."""
        config = self.config
        genes = (token_ids != config.pad_id) & (token_ids != config.begin_id) & (token_ids != config.end_id)
        weights = genes.to(hidden.dtype)
        count = weights.sum(1, keepdim=True).clamp_min(1.0)
        return (hidden * weights[..., None]).sum(1) / count

    # -- scvi-tools module protocol --------------------------------------------------------------
    def _get_inference_input(self, tensors: dict[str, torch.Tensor], **kwargs) -> dict[str, torch.Tensor]:
        return {"token_ids": tensors[TOKEN_IDS]}

    def inference(self, token_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"hidden": self.hidden_states(token_ids)}

    def _get_generative_input(self, tensors, inference_outputs, **kwargs) -> dict[str, torch.Tensor]:
        return {"hidden": inference_outputs["hidden"]}

    def generative(self, hidden: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.next_token_logits(hidden)}

    def loss(
        self,
        tensors,
        inference_outputs,
        generative_outputs,
        next_gene_weight: float = 1.0,
        contrastive_weight: float = 0.0,
        contrastive_temperature: float = 0.1,
    ) -> LossOutput:
        token_ids = tensors[TOKEN_IDS]
        terms = {"next_gene": self.next_gene_loss(token_ids, generative_outputs["logits"])}
        total = next_gene_weight * terms["next_gene"]
        if contrastive_weight > 0:
            if VIEW_TOKEN_IDS not in tensors:
                raise ValueError("contrastive_weight > 0 needs two views per cell (train with contrastive_weight > 0)")
            first = self.pool(inference_outputs["hidden"], token_ids)
            second = self.embed(tensors[VIEW_TOKEN_IDS])
            if self.config.contrastive_dim:
                first, second = self.projection(first), self.projection(second)
            terms["contrastive"] = paired_view_contrastive(first, second, contrastive_temperature)
            total = total + contrastive_weight * terms["contrastive"]
        n = token_ids.shape[0]
        return LossOutput(
            loss=total,
            reconstruction_loss={name: value.detach().expand(n) for name, value in terms.items()},
            n_obs_minibatch=n,
        )
