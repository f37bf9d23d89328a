"""Which cells each DDP rank and DataLoader worker trains on, in which batches, in every epoch.

The plan is a pure function of the sources' sizes, their per-row value counts, the seed and the epoch, so every
process computes the same plan without talking to the others, and a resumed run can skip the batches it already
trained on without reading their data.

Per epoch:

1. every source (shard) is cut into row blocks, and the blocks of all sources are shuffled together;
2. the blocks are dealt to ``n_slots = world_size * num_workers`` slots, each block to the slot holding the fewest
   cells so far, so the slots' shares are disjoint and differ by at most one block;
3. a slot reads its blocks in windows of ``buffer_blocks`` blocks; the cells of a window plus the cells left over
   from the previous window are shuffled and, with length bucketing, ordered by length; full batches of
   ``batch_size`` cells are cut, the remainder is carried into the next window, and the batch order within the
   window is shuffled;
4. every slot yields the same number of batches (the smallest slot's), so DDP ranks stay in step.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Block:
    """Rows ``start:stop`` of source ``source``."""

    source: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Window:
    """The batches one window yields and the cells it carries into the next.

    Cells are keyed ``position * block_size + offset``: ``position`` indexes the slot's block list and ``offset``
    the row within the block.
    """

    batches: list[np.ndarray]
    leftover: np.ndarray


def epoch_blocks(n_obs: Sequence[int], block_size: int, seed: int, epoch: int) -> list[Block]:
    """Every source's rows cut into blocks, the blocks of all sources shuffled together.

    A window of consecutive blocks therefore mixes sources in proportion to their size, so batches mix datasets.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    blocks = [
        Block(source, start, min(start + block_size, n))
        for source, n in enumerate(int(n) for n in n_obs)
        for start in range(0, n, block_size)
    ]
    order = np.random.default_rng([seed, epoch, 0]).permutation(len(blocks))
    return [blocks[i] for i in order]


def deal_blocks(blocks: Sequence[Block], n_slots: int) -> list[list[Block]]:
    """Deal blocks in order, each to the slot with the fewest cells so far (ties: the lowest slot)."""
    if n_slots < 1:
        raise ValueError(f"n_slots must be >= 1, got {n_slots}")
    shares: list[list[Block]] = [[] for _ in range(n_slots)]
    heap = [(0, slot) for slot in range(n_slots)]
    for block in blocks:
        cells, slot = heapq.heappop(heap)
        shares[slot].append(block)
        heapq.heappush(heap, (cells + block.size, slot))
    return shares


def batches_per_slot(shares: Sequence[Sequence[Block]], batch_size: int) -> int:
    """Return the number of batches every slot yields: what the smallest share fills."""
    return min(sum(block.size for block in share) for share in shares) // batch_size


def iter_windows(
    share: Sequence[Block],
    row_lengths: Callable[[Block], np.ndarray],
    *,
    block_size: int,
    batch_size: int,
    buffer_blocks: int,
    bucketing: bool,
    seed: int,
    epoch: int,
    slot: int,
) -> Iterator[Window]:
    """Yield the windows of one slot's share, in order (see the module docstring).

    ``row_lengths(block)`` returns the token length estimate of each row of the block; it is only called when
    ``bucketing`` is true.
    """
    if buffer_blocks < 1:
        raise ValueError(f"buffer_blocks must be >= 1, got {buffer_blocks}")
    carried = np.zeros(0, dtype=np.int64)
    carried_lengths = np.zeros(0, dtype=np.int64)
    for index, first in enumerate(range(0, len(share), buffer_blocks)):
        positions = range(first, min(first + buffer_blocks, len(share)))
        keys = [position * block_size + np.arange(share[position].size) for position in positions]
        pool = np.concatenate([carried, *keys])
        rng = np.random.default_rng([seed, epoch, 1, slot, index])
        order = rng.permutation(len(pool))
        if bucketing:
            lengths = np.concatenate([carried_lengths, *(row_lengths(share[p]) for p in positions)])
            order = order[np.argsort(-lengths[order], kind="stable")]
            carried_lengths = lengths[order[len(order) - len(order) % batch_size :]]
        n_full = len(order) // batch_size
        batches = [pool[order[b * batch_size : (b + 1) * batch_size]] for b in range(n_full)]
        batches = [batches[i] for i in rng.permutation(n_full)]
        carried = pool[order[n_full * batch_size :]]
        yield Window(batches, carried)
