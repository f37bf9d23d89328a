"""tGPT inference through the shared streaming loop: mean-over-genes sample embeddings."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch

from scfm.data import ExpressionSource
from scfm.genes import GeneAlignment

from ..base import (
    EmbeddingResult,
    TokenizedBlock,
    l2_normalise,
    raise_if_no_known_genes,
    stream_cells,
)
from ..base._device import autocast_context, warn_if_slow_bf16
from ._data import PadTokens
from ._module import TGPTModule
from ._tokenizer import rank_tokenize_csr


class RankBlockTokenizer:
    """``<begin>`` + a sample's expressed known genes ranked by value (ties by token id), cut to the context."""

    def __init__(
        self, module: TGPTModule, alignment: GeneAlignment, obs_names, device: torch.device, precision: str = "fp32"
    ) -> None:
        self.config = module.config
        self.precision = precision
        self.alignment = alignment
        self.column_token_ids = alignment.column_token_ids()
        self.obs_names = obs_names
        self.device = device
        self.pad = PadTokens(self.config.pad_id)

    def encode(self, block: sp.csr_matrix, start: int, stop: int, input_kind: str) -> TokenizedBlock:
        config = self.config
        sequences = rank_tokenize_csr(
            block,
            self.column_token_ids,
            begin_id=config.begin_id,
            end_id=config.end_id,
            max_len=config.max_len,
            end_when_cut=config.end_when_cut,
        )
        lengths = np.array([len(s) for s in sequences])
        raise_if_no_known_genes(
            np.flatnonzero(lengths == 2),
            start,
            stop,
            self.obs_names,
            self.alignment.n_matched,
            noun="samples",
            why="a tGPT embedding averages over expressed genes",
        )
        if config.end_when_cut:  # every sequence ends with <end>: a cut one is the one that fills the context
            known = self._known_genes_per_row(block)
            n_truncated = int((known > config.max_len - 2).sum())
        else:
            n_truncated = int(sum(s[-1] != config.end_id for s in sequences))
        counters = {
            "n_truncated": n_truncated,
            "n_tokens": int(lengths.sum()),
        }
        return TokenizedBlock(sequences, lengths, counters)

    def _known_genes_per_row(self, block) -> np.ndarray:
        csr = sp.csr_matrix(block) if not sp.isspmatrix_csr(block) else block
        expressed = (self.column_token_ids[csr.indices] >= 0) & (csr.data > 0)
        return np.diff(np.concatenate([[0], np.cumsum(expressed)])[csr.indptr])

    def collate(self, items: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        return self.pad(list(items))

    def forward(self, module: TGPTModule, batch: dict[str, torch.Tensor], positions: np.ndarray):
        with autocast_context(self.device, self.precision):
            return {"embedding": module.embed(batch["token_ids"])}


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
    precision: str = "fp32",
) -> EmbeddingResult:
    """Embed every sample of ``source`` (or ``rows`` of it), reading ``block_size`` rows at a time.

    Each sample becomes ``begin`` + its expressed known genes ranked by value (highest first, ties by token id),
    cut to the context; batches group samples of similar length. The result does not depend on
    ``batch_size``, ``block_size`` or sample order. ``precision="bf16"`` runs the forward pass under bf16
    autocast (outputs stay float32).

    Raises
    ------
    NoKnownGenesError
        A sample expresses none of the model's genes (the message names up to five, from ``obs_names``).
    """
    warn_if_slow_bf16(device, precision)
    result = stream_cells(
        module,
        source,
        RankBlockTokenizer(module, alignment, obs_names, device, precision),
        {"embedding": module.config.d_model},
        device=device,
        batch_size=batch_size,
        block_size=block_size,
        rows=rows,
        progress=progress,
        desc="scfm embed (tgpt)",
        precision=precision,
    )
    embeddings = result.outputs["embedding"]
    if normalize:
        l2_normalise(embeddings)
    return EmbeddingResult(
        embeddings, result.input_kind, 0, result.counters.get("n_truncated", 0), result.counters.get("n_tokens", 0)
    )
