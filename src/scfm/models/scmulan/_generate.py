"""Conditional generation of cells with scMulan.

Genes and their levels are sampled word by word after a metadata prompt, with a key/value cache.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from ._module import SCMulanModule


def cell_generator(seed: int, cell: int) -> torch.Generator:
    """Return the random stream of generated cell number ``cell``: one per cell, so cells do not depend on batching."""
    state = np.random.SeedSequence([int(seed), int(cell)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _sample(probabilities: torch.Tensor, generator: torch.Generator) -> int:
    """Inverse-CDF draw from one row of probabilities (float64, CPU)."""
    cumulative = probabilities.cumsum(0)
    u = torch.rand((), generator=generator, dtype=torch.float64) * cumulative[-1]
    return int(torch.searchsorted(cumulative, u.reshape(1), right=True).clamp_max(len(cumulative) - 1))


def _filter(logits: torch.Tensor, temperature: float, top_k: int | None) -> torch.Tensor:
    """Probabilities of ``logits / temperature`` kept to the ``top_k`` highest (rows of ``-inf`` stay excluded)."""
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.softmax(logits.double(), dim=-1)


@torch.inference_mode()
def generate_cells(
    module: SCMulanModule,
    prompt: np.ndarray,
    gene_ids: np.ndarray,
    *,
    n_cells: int,
    seed: int,
    first_cell: int = 0,
    temperature: float = 1.0,
    top_k: int | None = None,
    batch_size: int = 64,
    device: torch.device,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Generate ``n_cells`` cells after ``prompt`` (``<cls> <generate> conditions``).

    Each step samples the next entity among the genes not generated yet and ``<eoc>``, then its level given
    that gene, at most the previous gene's level (sentences are ordered by level). A cell ends at ``<eoc>`` or
    after ``max_gene_words`` genes (as many as a training sentence holds). Cell ``i`` draws from its own seeded
    stream (``seed``, ``first_cell + i``).

    Returns
    -------
    ``(gene_ids, levels)`` per cell.
    """
    config = module.config
    module.eval()
    allowed = torch.zeros(module.n_entities, dtype=torch.bool)
    allowed[torch.as_tensor(gene_ids)] = True
    allowed[config.end_id] = True
    results: list[tuple[np.ndarray, np.ndarray]] = []
    for batch_start in range(0, n_cells, batch_size):
        size = min(batch_size, n_cells - batch_start)
        generators = [cell_generator(seed, first_cell + batch_start + i) for i in range(size)]
        entities = torch.as_tensor(prompt, device=device).repeat(size, 1)
        values = torch.zeros_like(entities)
        hidden, cache = module.transformer.forward_incremental(module.embed_words(entities, values))
        last = hidden[:, -1]
        open_entities = allowed.repeat(size, 1)
        ceiling = torch.full((size,), config.n_levels, dtype=torch.long)
        done = torch.zeros(size, dtype=torch.bool)
        genes: list[list[int]] = [[] for _ in range(size)]
        levels: list[list[int]] = [[] for _ in range(size)]
        for _ in range(config.max_gene_words):  # at most as many genes as a training sentence holds
            logits = module.entity_logits(last).float().cpu().masked_fill(~open_entities, float("-inf"))
            entity_probabilities = _filter(logits, temperature, top_k)
            next_entities = torch.tensor(
                [config.end_id if done[i] else _sample(entity_probabilities[i], generators[i]) for i in range(size)]
            )
            done |= next_entities == config.end_id
            value_logits = module.value_logits(last, next_entities.to(device)).float().cpu()
            level_range = torch.arange(config.n_levels + 1)
            value_logits = value_logits.masked_fill(
                (level_range[None] < 1) | (level_range[None] > ceiling[:, None]), float("-inf")
            )
            value_probabilities = _filter(value_logits, temperature, None)
            next_values = torch.zeros(size, dtype=torch.long)
            for i in range(size):
                if not done[i]:
                    next_values[i] = _sample(value_probabilities[i], generators[i])
                    genes[i].append(int(next_entities[i]))
                    levels[i].append(int(next_values[i]))
                    open_entities[i, next_entities[i]] = False
            ceiling = torch.where(done, ceiling, next_values)
            if bool(done.all()):
                break
            words = module.embed_words(next_entities.to(device)[:, None], next_values.to(device)[:, None])
            hidden, cache = module.transformer.forward_incremental(words, cache)
            last = hidden[:, -1]
        for cell_genes, cell_levels in zip(genes, levels, strict=True):
            results.append((np.asarray(cell_genes, dtype=np.int64), np.asarray(cell_levels, dtype=np.int64)))
    return results


def prompt_terms(vocab, conditions: Mapping[str, str]) -> dict[str, int]:
    """Term entity ids of ``conditions`` (key -> term), with errors that name unknown keys and terms."""
    return {key: vocab.term_id(key, term) for key, term in conditions.items()}
