"""Expected counts from CellPLM's negative-binomial decoder, renormalised over each cell's measured panel."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
from anndata import AnnData

from scfm.data import ExpressionSource
from scfm.genes import GeneAlignment, GeneRules, align_genes

from ..base import Pretrained, check_finite
from ._context import sentences_of
from ._inference import cell_features, iter_sentences


@dataclass
class CountsPlan:
    """Everything a count prediction needs, validated before anything is computed."""

    pretrained: Pretrained
    source: ExpressionSource
    alignment: GeneAlignment
    sentences: list[np.ndarray]
    coordinates: np.ndarray | None
    context: int
    device: torch.device


def plan_counts(
    pretrained: Pretrained,
    adata: AnnData,
    source: ExpressionSource,
    *,
    gene_key: str | None,
    sample_key: str | None,
    spatial_key: str | None,
    context: int | None,
    seed: int,
    min_genes: int,
    on_duplicate: Literal["error", "first"],
    device: torch.device,
    gene_rules: GeneRules = GeneRules(),
) -> CountsPlan:
    """Return the gene alignment and the sentences of ``adata`` (validated; nothing computed)."""
    alignment = align_genes(
        source.var,
        pretrained.vocab,
        gene_key=gene_key,
        min_genes=min_genes,
        on_duplicate=on_duplicate,
        **gene_rules.as_kwargs(),
    )
    context = pretrained.config.context if context is None else context
    if isinstance(context, bool) or not isinstance(context, int | np.integer):
        raise ValueError(f"context must be an integer number of cells, got {context!r}")
    sentences, coordinates = sentences_of(
        adata, sample_key=sample_key, spatial_key=spatial_key, context=int(context), seed=seed
    )
    return CountsPlan(pretrained, source, alignment, sentences, coordinates, int(context), device)


def iter_expected_counts(
    plan: CountsPlan,
    token_ids: np.ndarray,
    *,
    block_size: int,
    progress: bool,
    on_block: Callable[[int, int, sp.csr_matrix], None] | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(cells, expected counts)`` per sentence for the vocabulary genes ``token_ids``.

    The matrix is read once, checked block by block for raw counts (an error before anything is yielded);
    ``on_block`` sees each raw block on the way (see :func:`~scfm.models.cellplm.cell_features`).

    The decoder's proportions are renormalised over the cell's measured panel (the matched genes): a target gene
    ``g`` gets ``exp(logit_g - logsumexp(logits over the panel)) * library`` with ``library`` the cell's counts
    over the panel. For a panel gene this is ``softmax(panel logits) * library``; for a gene outside the panel it
    is ``p_g / s * library`` with ``s`` the panel's share of the softmax over the whole vocabulary.
    """
    module = plan.pretrained.module
    first = module.config.first_gene_id
    target = plan.device
    module.to(target)
    stage_one = cell_features(
        module, plan.source, plan.alignment, block_size=block_size, require_counts=True, on_block=on_block
    )
    n_panel = plan.alignment.n_matched
    # only the logits of the panel and of the targets are needed: p_g / s = exp(logit_g - logsumexp(panel logits))
    genes = np.concatenate([plan.alignment.token_ids - first, np.asarray(token_ids, dtype=np.int64) - first])
    genes = torch.as_tensor(genes, device=target)
    with torch.inference_mode():
        for cells, z in iter_sentences(
            module, stage_one.features, plan.sentences, coordinates=plan.coordinates, device=target, progress=progress
        ):
            logits = module.decoder(z.float(), genes).float()
            log_share = logits[:, n_panel:] - torch.logsumexp(logits[:, :n_panel], dim=1, keepdim=True)
            proportions = torch.exp(log_share).cpu().numpy().astype(np.float64)
            yield cells, check_finite((proportions * stage_one.library[cells, None]).astype(np.float32), "counts")
