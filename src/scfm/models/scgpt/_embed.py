"""Streaming, length-bucketed inference of cell embeddings."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from scfm.data import ExpressionSource, iter_row_blocks, length_bucketed_batches, pad_cells
from scfm.genes import GeneAlignment
from scfm.tokenize import BinningConfig, detect_input_kind, tokenize_csr

from .._device import autocast_context
from .._embedding import EmbeddingResult, l2_normalise
from ._config import SCGPTConfig
from ._module import SCGPTModule


def binning_config(config: SCGPTConfig, max_len: int | None = None) -> BinningConfig:
    return BinningConfig(
        n_bins=config.n_bins,
        max_len=max_len or config.max_len,
        pad_value=config.pad_value,
        mask_value=config.mask_value,
        seed=config.tokenizer_seed,
    )


@torch.inference_mode()
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
) -> EmbeddingResult:
    """Embed every cell of ``source`` (or ``rows`` of it), streaming ``block_size`` rows at a time.

    Within a block, cells are sorted by token count and batched so that padding stays small; with
    ``bucketing=False`` every cell is padded to ``max_len`` (the naive scheme, kept for benchmarks).
    The result does not depend on ``batch_size``, ``block_size`` or cell order.

    ``batch_codes`` (one per row of ``source``, or per entry of ``rows``) are passed to models that normalise
    per batch. ``output="logits"`` returns the classification head's logits instead of embeddings (not
    normalised). ``column_token_ids`` overrides the alignment's (e.g. to hide genes another dataset lacks).
    """
    if output not in ("embedding", "logits"):
        raise ValueError(f"output must be 'embedding' or 'logits', got {output!r}")
    config = module.config
    tokenizer = binning_config(config, max_len)
    if column_token_ids is None:
        column_token_ids = alignment.column_token_ids()
    n_obs = source.n_obs if rows is None else len(rows)
    width = config.d_model if output == "embedding" else len(config.label_categories)
    embeddings = np.zeros((n_obs, width), dtype=np.float32)
    input_kind = None
    n_empty = n_subsampled = n_tokens = 0
    module.eval()
    bar = tqdm(total=n_obs, desc="scfm embed", unit="cell", disable=not progress)
    for start, stop, block in iter_row_blocks(source.matrix, block_size, rows):
        if input_kind is None:
            input_kind = detect_input_kind(block)
        cells = tokenize_csr(block, column_token_ids, cls_id=config.cls_id, config=tokenizer)
        lengths = np.array([len(cell.gene_ids) for cell in cells])
        n_empty += int((lengths == 1).sum())
        n_subsampled += sum(cell.n_expressed > len(cell.gene_ids) - 1 for cell in cells)
        n_tokens += int(lengths.sum())
        batches = (
            length_bucketed_batches(lengths, batch_size)
            if bucketing
            else [np.arange(i, min(i + batch_size, len(cells))) for i in range(0, len(cells), batch_size)]
        )
        for batch in batches:
            chosen = [cells[i] for i in batch]
            gene_ids, values = pad_cells(chosen, pad_id=config.pad_id, pad_value=config.pad_value)
            if not bucketing:
                gene_ids, values = _pad_to(gene_ids, values, tokenizer.max_len, config)
            codes = None if batch_codes is None else torch.as_tensor(batch_codes[start + batch], device=device)
            with autocast_context(device):
                if output == "embedding":
                    result = module.embed(gene_ids.to(device), values.to(device), codes)
                else:
                    result = module.classify(gene_ids.to(device), values.to(device), codes)
            embeddings[start + batch] = result.float().cpu().numpy()
        bar.update(stop - start)
    bar.close()
    if normalize and output == "embedding":
        l2_normalise(embeddings)
    return EmbeddingResult(embeddings, input_kind or "counts", n_empty, int(n_subsampled), n_tokens)


def _pad_to(gene_ids: torch.Tensor, values: torch.Tensor, length: int, config: SCGPTConfig):
    extra = length - gene_ids.shape[1]
    if extra <= 0:
        return gene_ids, values
    gene_ids = torch.nn.functional.pad(gene_ids, (0, extra), value=config.pad_id)
    values = torch.nn.functional.pad(values, (0, extra), value=config.pad_value)
    return gene_ids, values
