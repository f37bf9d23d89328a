"""Streaming, length-sorted inference of tGPT sample embeddings."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from scfm.data import ExpressionSource, PadTokens, iter_row_blocks, length_bucketed_batches
from scfm.genes import GeneAlignment
from scfm.tokenize import detect_input_kind, rank_tokenize_csr

from .._device import autocast_context
from .._embedding import EmbeddingResult, l2_normalise
from ._module import TGPTModule


class EmptySampleError(ValueError):
    """Samples that express none of the model's genes have no tGPT embedding (the mean over zero genes)."""


@torch.inference_mode()
def embed_ranked(
    module: TGPTModule,
    source: ExpressionSource,
    alignment: GeneAlignment,
    *,
    device: torch.device,
    batch_size: int = 64,
    block_size: int = 4096,
    normalize: bool = True,
    progress: bool = True,
    rows: np.ndarray | None = None,
    obs_names: np.ndarray | None = None,
) -> EmbeddingResult:
    """Embed every sample of ``source`` (or ``rows`` of it), reading ``block_size`` rows at a time.

    Each sample becomes ``begin`` + its expressed known genes ranked by value (highest first, ties by token id),
    cut to the context; batches group samples of similar length. The result does not depend on
    ``batch_size``, ``block_size`` or sample order.

    Raises
    ------
    EmptySampleError
        A sample expresses none of the model's genes (the message names up to five, from ``obs_names``).
    """
    config = module.config
    column_token_ids = alignment.column_token_ids()
    n_obs = source.n_obs if rows is None else len(rows)
    embeddings = np.zeros((n_obs, config.d_model), dtype=np.float32)
    collate = PadTokens(config.pad_id)
    input_kind = None
    n_truncated = n_tokens = 0
    module.eval()
    bar = tqdm(total=n_obs, desc="scfm embed (tgpt)", unit="sample", disable=not progress)
    for start, stop, block in iter_row_blocks(source.matrix, block_size, rows):
        if input_kind is None:
            input_kind = detect_input_kind(block)
        sequences = rank_tokenize_csr(
            block, column_token_ids, begin_id=config.begin_id, end_id=config.end_id, max_len=config.max_len
        )
        lengths = np.array([len(s) for s in sequences])
        empty = np.flatnonzero(lengths == 2)
        if empty.size:
            positions = start + empty
            names = positions if obs_names is None else np.asarray(obs_names)[positions]
            raise EmptySampleError(
                f"{empty.size} samples in rows {start}-{stop} express none of the model's {alignment.n_matched} "
                f"matched genes (e.g. {[str(n) for n in names[:5]]}); a tGPT embedding averages over expressed "
                "genes, so remove them first (e.g. sc.pp.filter_cells(adata, min_genes=1) after subsetting to "
                "the matched genes)"
            )
        n_truncated += int(sum(s[-1] != config.end_id for s in sequences))
        n_tokens += int(lengths.sum())
        for batch in length_bucketed_batches(lengths, batch_size):
            token_ids = collate([sequences[i] for i in batch])["token_ids"].to(device)
            with autocast_context(device):
                embeddings[start + batch] = module.embed(token_ids).float().cpu().numpy()
        bar.update(stop - start)
    bar.close()
    if normalize:
        l2_normalise(embeddings)
    return EmbeddingResult(embeddings, input_kind or "counts", 0, n_truncated, n_tokens)
