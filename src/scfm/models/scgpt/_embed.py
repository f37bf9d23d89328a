"""scGPT inference through the shared streaming loop: cell embeddings or classifier logits."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch

from scfm.data import ExpressionSource
from scfm.genes import GeneAlignment

from ..base import EmbeddingResult, TokenizedBlock, bucketed, in_order, l2_normalise, stream_cells
from ..base._device import autocast_context, warn_if_slow_bf16
from ._config import SCGPTConfig
from ._data import pad_cells
from ._module import SCGPTModule
from ._tokenizer import BinningConfig, CellTokens, tokenize_csr


def binning_config(config: SCGPTConfig, max_len: int | None = None) -> BinningConfig:
    """Return the tokenizer settings of a model (``max_len`` overrides the checkpoint's context)."""
    return BinningConfig(
        n_bins=config.n_bins,
        max_len=max_len or config.max_len,
        pad_value=config.pad_value,
        mask_value=config.mask_value,
        seed=config.tokenizer_seed,
    )


class SCGPTBlockTokenizer:
    """``<cls>`` + a cell's expressed known genes with per-cell binned values (see :func:`tokenize_csr`)."""

    def __init__(
        self,
        config: SCGPTConfig,
        column_token_ids: np.ndarray,
        *,
        max_len: int | None,
        device: torch.device,
        output: str = "embedding",
        batch_codes: np.ndarray | None = None,
        pad_to_max_len: bool = False,
        precision: str = "fp32",
    ) -> None:
        self.config = config
        self.binning = binning_config(config, max_len)
        self.column_token_ids = column_token_ids
        self.device = device
        self.output = output
        self.batch_codes = batch_codes
        self.pad_to_max_len = pad_to_max_len
        self.precision = precision

    def encode(self, block: sp.csr_matrix, start: int, stop: int, input_kind: str) -> TokenizedBlock:
        cells = tokenize_csr(block, self.column_token_ids, cls_id=self.config.cls_id, config=self.binning)
        lengths = np.array([len(cell.gene_ids) for cell in cells])
        counters = {
            "n_empty_cells": int((lengths == 1).sum()),
            "n_subsampled_cells": int(sum(cell.n_expressed > len(cell.gene_ids) - 1 for cell in cells)),
            "n_tokens": int(lengths.sum()),
        }
        return TokenizedBlock(cells, lengths, counters)

    def collate(self, items: Sequence[CellTokens]) -> dict[str, torch.Tensor]:
        gene_ids, values = pad_cells(items, pad_id=self.config.pad_id, pad_value=self.config.pad_value)
        extra = self.binning.max_len - gene_ids.shape[1] if self.pad_to_max_len else 0
        if extra > 0:
            gene_ids = torch.nn.functional.pad(gene_ids, (0, extra), value=self.config.pad_id)
            values = torch.nn.functional.pad(values, (0, extra), value=self.config.pad_value)
        return {"gene_ids": gene_ids, "values": values}

    def forward(self, module: SCGPTModule, batch: dict[str, torch.Tensor], positions: np.ndarray):
        codes = None if self.batch_codes is None else torch.as_tensor(self.batch_codes[positions], device=self.device)
        with autocast_context(self.device, self.precision):
            if self.output == "embedding":
                return {"embedding": module.embed(batch["gene_ids"], batch["values"], codes)}
            return {"logits": module.classify(batch["gene_ids"], batch["values"], codes)}


def embed_cells(
    module: SCGPTModule,
    source: ExpressionSource,
    alignment: GeneAlignment,
    *,
    device: torch.device,
    batch_size: int = 64,
    block_size: int = 4096,
    max_len: int | None = None,
    normalize: bool = True,
    bucketing: bool = True,
    progress: bool = True,
    rows: np.ndarray | None = None,
    batch_codes: np.ndarray | None = None,
    output: str = "embedding",
    column_token_ids: np.ndarray | None = None,
    precision: str = "fp32",
) -> EmbeddingResult:
    """Embed every cell of ``source`` (or ``rows`` of it), streaming ``block_size`` rows at a time.

    Within a block, cells are sorted by token count and batched so that padding stays small; with
    ``bucketing=False`` every cell is padded to ``max_len`` (the naive scheme, kept for benchmarks).
    The result does not depend on ``batch_size``, ``block_size`` or cell order.

    ``batch_codes`` (one per row of ``source``, or per entry of ``rows``) are passed to models that normalise
    per batch. ``output="logits"`` returns the classification head's logits instead of embeddings (not
    normalised). ``column_token_ids`` overrides the alignment's (e.g. to hide genes another dataset lacks).
    ``precision="bf16"`` runs the forward pass under bf16 autocast (outputs stay float32; see
    :func:`scfm.models.base._device.compute_dtype`).
    """
    if output not in ("embedding", "logits"):
        raise ValueError(f"output must be 'embedding' or 'logits', got {output!r}")
    warn_if_slow_bf16(device, precision)
    config = module.config
    tokenizer = SCGPTBlockTokenizer(
        config,
        alignment.column_token_ids() if column_token_ids is None else column_token_ids,
        max_len=max_len,
        device=device,
        output=output,
        batch_codes=batch_codes,
        pad_to_max_len=not bucketing,
        precision=precision,
    )
    width = config.d_model if output == "embedding" else len(config.label_categories)
    result = stream_cells(
        module,
        source,
        tokenizer,
        {output: width},
        device=device,
        batch_size=batch_size,
        block_size=block_size,
        rows=rows,
        batching=bucketed if bucketing else in_order,
        progress=progress,
        desc="scfm embed",
        precision=precision,
    )
    embeddings = result.outputs[output]
    if normalize and output == "embedding":
        l2_normalise(embeddings)
    counters = result.counters
    return EmbeddingResult(
        embeddings,
        result.input_kind,
        counters.get("n_empty_cells", 0),
        counters.get("n_subsampled_cells", 0),
        counters.get("n_tokens", 0),
    )
