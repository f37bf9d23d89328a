"""One streaming pass of scMulan over cells: embeddings and, per metadata key, the generated term's distribution."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from scfm.data import ExpressionSource, iter_row_blocks, length_bucketed_batches
from scfm.genes import GeneAlignment
from scfm.tokenize import cell_gene_words, detect_input_kind

from .._device import autocast_context
from .._embedding import l2_normalise
from ._module import SCMulanModule


class NoKnownGenesError(ValueError):
    """A cell expresses none of the model's genes: its prompt would hold no expression at all."""


@dataclass
class AnnotationPass:
    """Embeddings (mean last hidden state over gene words) and ``probabilities[key]`` (cells x terms of key)."""

    embeddings: np.ndarray
    probabilities: dict[str, np.ndarray]
    input_kind: str
    n_truncated_cells: int


@torch.inference_mode()
def annotation_pass(
    module: SCMulanModule,
    source: ExpressionSource,
    alignment: GeneAlignment,
    keys: Sequence[str],
    *,
    device: torch.device,
    batch_size: int = 64,
    block_size: int = 4096,
    normalize: bool = True,
    progress: bool = False,
    rows: np.ndarray | None = None,
    obs_names: np.ndarray | None = None,
) -> AnnotationPass:
    """Prompt every cell with ``<cls> <annotate> G [<eoc>]`` and one ``<predict:key>`` per key.

    The query tokens share the pass: each sees the genes and itself only, so each key's answer is what the
    model generates after the genes alone. A key's probabilities are the entity head's softmax restricted to
    that key's terms. Results do not depend on ``batch_size``, ``block_size`` or cell order.

    Raises
    ------
    NoKnownGenesError
        A cell expresses none of the model's genes (the message names up to five).
    """
    config = module.config
    vocab = config.sentence_vocab()
    term_ids = {key: torch.as_tensor(vocab.term_ids(key), device=device) for key in keys}
    query_ids = [vocab.query_id(key) for key in keys]
    column_token_ids = alignment.column_token_ids()
    n_obs = source.n_obs if rows is None else len(rows)
    embeddings = np.zeros((n_obs, config.d_model), dtype=np.float32)
    probabilities = {key: np.zeros((n_obs, len(vocab.terms[key])), dtype=np.float32) for key in keys}
    input_kind, n_truncated = None, 0
    module.eval()
    bar = tqdm(total=n_obs, desc="scfm scmulan", unit="cell", disable=not progress)
    for start, stop, block in iter_row_blocks(source.matrix, block_size, rows):
        if input_kind is None:
            input_kind = detect_input_kind(block)
        words = cell_gene_words(
            block,
            column_token_ids,
            scheme=config.level_scheme,
            input_kind=input_kind,
            max_genes=config.max_gene_words,
            seed=config.tokenizer_seed,
        )
        n_genes = np.array([len(w[0]) for w in words])
        empty = np.flatnonzero(n_genes == 0)
        if empty.size:
            positions = start + empty
            names = positions if obs_names is None else np.asarray(obs_names)[positions]
            raise NoKnownGenesError(
                f"{empty.size} cells in rows {start}-{stop} express none of the model's {alignment.n_matched} "
                f"matched genes (e.g. {[str(n) for n in names[:5]]}); scMulan prompts with a cell's genes, so "
                "remove such cells first (e.g. sc.pp.filter_cells(adata, min_genes=1) after subsetting to the "
                "matched genes)"
            )
        n_truncated += int(sum(not w[2] for w in words))
        prefix_lengths = 2 + n_genes + np.array([int(w[2]) for w in words])
        for batch in length_bucketed_batches(prefix_lengths, batch_size):
            entities, values, isolated = _prompts(
                [words[i] for i in batch], query_ids, vocab.annotate_id, config, device
            )
            with autocast_context(device):
                hidden = module.hidden_states(entities, values, isolated).float()
            lengths = torch.as_tensor(prefix_lengths[batch], device=device)
            genes = torch.arange(entities.shape[1], device=device)[None] - 2
            gene_mask = (genes >= 0) & (genes < torch.as_tensor(n_genes[batch], device=device)[:, None])
            pooled = (hidden * gene_mask[..., None]).sum(1) / gene_mask.sum(1, keepdim=True)
            embeddings[start + batch] = pooled.cpu().numpy()
            rows_index = torch.arange(len(batch), device=device)
            for j, key in enumerate(keys):
                query_hidden = hidden[rows_index, lengths + j]
                logits = module.entity_logits(query_hidden)[:, term_ids[key]]
                probabilities[key][start + batch] = torch.softmax(logits, -1).cpu().numpy()
        bar.update(stop - start)
    bar.close()
    if normalize:
        l2_normalise(embeddings)
    return AnnotationPass(embeddings, probabilities, input_kind or "counts", n_truncated)


def _prompts(words, query_ids: list[int], annotate_id: int, config, device):
    """Right-padded ``(entities, values, isolated)`` of annotation prompts followed by the query tokens."""
    prompts = []
    for gene_ids, levels, complete in words:
        tail = [config.end_id] if complete else []
        entities = np.concatenate([[config.begin_id, annotate_id], gene_ids, tail, query_ids])
        values = np.concatenate([[0, 0], levels, np.zeros(len(tail) + len(query_ids))])
        prompts.append((entities.astype(np.int64), values.astype(np.int64)))
    length = max(len(p[0]) for p in prompts)
    entities = torch.full((len(prompts), length), config.pad_id, dtype=torch.long)
    values = torch.zeros((len(prompts), length), dtype=torch.long)
    isolated = torch.zeros((len(prompts), length), dtype=torch.bool)
    for i, (e, v) in enumerate(prompts):
        entities[i, : len(e)] = torch.from_numpy(e)
        values[i, : len(v)] = torch.from_numpy(v)
        isolated[i, len(e) - len(query_ids) : len(e)] = True
    return entities.to(device), values.to(device), isolated.to(device)
