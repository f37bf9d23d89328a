"""scGPT gene networks: gene embeddings (zero-shot) and attention between gene tokens aggregated over cells.

The attention of one transformer layer is recomputed from that layer's input (the query/key projections of its
:class:`~scfm.nn.SelfAttention`), so the model's forward pass is untouched. Cells are read through the shared
streaming loop; each batch's attention is added into two ``n_genes x n_genes`` accumulators and then dropped, so
memory does not grow with the number of cells.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from scfm.data import ExpressionSource
from scfm.genes import GeneAlignment
from scfm.nn import SelfAttention, padding_attention_mask

from ..base import AttentionRequest, AttentionScores, stream_cells
from ._embed import SCGPTBlockTokenizer
from ._module import SCGPTModule


@torch.inference_mode()
def gene_embeddings(module: SCGPTModule, token_ids: np.ndarray) -> np.ndarray:
    """Return the gene encoder's output (token embedding + layer norm) of ``token_ids``, ``(n, d_model)`` float32."""
    module.eval()
    device = next(module.parameters()).device
    ids = torch.as_tensor(np.array(token_ids, dtype=np.int64), device=device)
    return module.gene_embedding(ids).float().cpu().numpy()


def check_attention_layer(module: SCGPTModule, attention_layer: int) -> int:
    """Return the non-negative index of ``attention_layer`` (negative counts from the last layer).

    Raises
    ------
    ValueError
        The layer does not exist, its attention is not softmax attention, or the model normalises per batch.
    """
    n_layers = len(module.transformer.layers)
    if not -n_layers <= attention_layer < n_layers:
        raise ValueError(
            f"attention_layer must be in [-{n_layers}, {n_layers - 1}] for this {n_layers}-layer model, got "
            f"{attention_layer}"
        )
    index = attention_layer % n_layers
    if not isinstance(module.transformer.layers[index].self_attn, SelfAttention):
        raise ValueError("method='attention' needs softmax attention; this model's layers use another kind")
    if module.domain_batchnorm is not None:
        raise ValueError(
            "this model normalises tokens per batch (domain_batchnorm), so attention depends on each cell's batch; "
            "method='attention' does not support it yet, use method='embedding'"
        )
    return index


def layer_attention(module: SCGPTModule, gene_ids: torch.Tensor, values: torch.Tensor, index: int) -> torch.Tensor:
    """Attention probabilities of layer ``index``, averaged over heads: ``(batch, queries, keys)`` float32.

    Runs layers ``0..index-1`` as the model does, then the query/key projections of layer ``index``; padded keys
    get zero attention. Peak memory of this step: about ``3 * batch * length**2`` float32 (one head at a time).
    """
    padding = gene_ids == module.config.pad_id
    x = module._input_embeddings(gene_ids, values, padding, None)
    mask = padding_attention_mask(padding)
    layers = module.transformer.layers
    for layer in layers[:index]:
        x = layer(x, mask)
    layer = layers[index]
    attention: SelfAttention = layer.self_attn
    h = layer.norm1(x) if layer.norm_first else x
    batch, length, d_model = h.shape
    weight, bias = attention.in_proj.weight, attention.in_proj.bias
    q = torch.nn.functional.linear(h, weight[:d_model], None if bias is None else bias[:d_model])
    k = torch.nn.functional.linear(
        h, weight[d_model : 2 * d_model], None if bias is None else bias[d_model : 2 * d_model]
    )
    heads, width = attention.n_heads, attention.head_dim
    q = q.view(batch, length, heads, width).transpose(1, 2).float()
    k = k.view(batch, length, heads, width).transpose(1, 2).float()
    keys_hidden = padding[:, None, :]
    mean = torch.zeros(batch, length, length, dtype=torch.float32, device=h.device)
    for head in range(heads):
        logits = q[:, head] @ k[:, head].transpose(1, 2) / math.sqrt(width)
        logits = logits.masked_fill(keys_hidden, float("-inf"))
        mean += torch.softmax(logits, dim=-1)
    return mean / heads


class AttentionAccumulator(SCGPTBlockTokenizer):
    """The scGPT tokenizer whose forward pass adds each batch's attention between network genes into accumulators.

    ``sums[i, j]`` collects the attention that gene ``j``'s token pays to gene ``i``'s token, times the cell's
    number of tokens; ``counts[i, j]`` the cells whose tokens hold both genes. The sums are float64, so the result
    does not depend on the batch size beyond rounding far below float32 precision.
    """

    def __init__(self, config, column_token_ids, token_ids: np.ndarray, index: int, *, max_len, device) -> None:
        super().__init__(config, column_token_ids, max_len=max_len, device=device)
        n_genes = len(token_ids)
        lookup = np.full(config.n_tokens, -1, dtype=np.int64)
        lookup[np.asarray(token_ids, dtype=np.int64)] = np.arange(n_genes)
        self.lookup = torch.as_tensor(lookup, device=device)
        self.n_genes = n_genes
        self.index = index
        self.sums = torch.zeros(n_genes * n_genes, dtype=torch.float64, device=device)
        self.counts = torch.zeros(n_genes * n_genes, dtype=torch.int32, device=device)
        self.n_cells_without_network_genes = 0

    def forward(self, module: SCGPTModule, batch: dict[str, torch.Tensor], positions: np.ndarray):
        gene_ids = batch["gene_ids"]
        attention = layer_attention(module, gene_ids, batch["values"], self.index)
        tokens = (gene_ids != self.config.pad_id).sum(1).to(torch.float32)
        attention = attention * tokens[:, None, None]
        genes = self.lookup[gene_ids]
        genes[:, 0] = -1  # <cls>
        genes[gene_ids == self.config.pad_id] = -1
        present = genes >= 0
        self.n_cells_without_network_genes += int((~present.any(1)).sum())
        pair = present[:, :, None] & present[:, None, :]  # (batch, query, key)
        flat = (genes[:, None, :] * self.n_genes + genes[:, :, None])[pair]  # key row, query column
        self.sums.index_add_(0, flat, attention[pair].to(torch.float64))
        self.counts.index_add_(0, flat, torch.ones_like(flat, dtype=torch.int32))
        return {}


def attention_scores(
    module: SCGPTModule,
    source: ExpressionSource,
    alignment: GeneAlignment,
    token_ids: np.ndarray,
    request: AttentionRequest,
) -> AttentionScores:
    """Aggregate one layer's attention between the genes ``token_ids`` over the cells of ``source``.

    Memory: ``12 * n_genes**2`` bytes of accumulators plus about ``3 * batch_size * max_len**2`` float32 for one
    batch's attention; it does not grow with the number of cells. Every cell's tokens are all its expressed known
    genes (cut to ``max_len`` by the tokenizer's per-cell seeded subsampling), so genes outside ``token_ids`` still
    take part in attention; only pairs of network genes are recorded.
    """
    index = check_attention_layer(module, request.attention_layer)
    accumulator = AttentionAccumulator(
        module.config,
        alignment.column_token_ids(),
        token_ids,
        index,
        max_len=request.max_len,
        device=request.device,
    )
    result = stream_cells(
        module,
        source,
        accumulator,
        {},
        device=request.device,
        batch_size=request.batch_size,
        block_size=request.block_size,
        rows=request.rows,
        progress=request.progress,
        desc="scfm gene_network",
    )
    n_genes = len(token_ids)
    sums = accumulator.sums.view(n_genes, n_genes).cpu().numpy()
    counts = accumulator.counts.view(n_genes, n_genes).cpu().numpy()
    scores = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0).astype(np.float32)
    np.fill_diagonal(scores, 0.0)
    n_cells = source.n_obs if request.rows is None else len(request.rows)
    record = {
        "attention_layer": index,
        "heads": "mean",
        "max_len": request.max_len or module.config.max_len,
        "n_cells_without_network_genes": accumulator.n_cells_without_network_genes,
        "n_subsampled_cells": result.counters.get("n_subsampled_cells", 0),
        "input_kind": result.input_kind,
    }
    return AttentionScores(scores, counts.astype(np.int32), n_cells, record)
