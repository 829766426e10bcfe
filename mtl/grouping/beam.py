"""Scalable group selection on pairwise scores: agglomerative beam search plus local search.

For ``T`` beyond what the exact searches can enumerate (``2^T - 1`` candidate groups), groups are
built bottom-up. This search is mtl's own heuristic on the selection objective of TAG (Fifty et al.,
NeurIPS 2021) and Standley et al. (ICML 2020), both of which search exactly; agglomerative
clustering with a beam (several merge paths kept per level) and single-element moves are classic
clustering moves, not a published grouping method. It is checked against the exact searches in the
tests: on random scores it finds their optimum in every disjoint case and most overlapping ones.

Every state is a complete partition of the tasks, scored with the selection objective of
`mtl.grouping.selection` (each task's pairwise score in its block, `PairwiseScores`):

1. start from every task alone;
2. each level merges two blocks of every kept partition; of all the children (each parent's
   ``beam_width`` best merges), the ``beam_width`` best distinct partitions are kept;
3. the partitions kept at ``budget`` blocks, and the best one seen with at most ``budget`` blocks,
   are polished by moving single tasks between blocks while that raises the total;
4. for overlapping groups (each task served by its best group), a local search over selections of
   at most ``budget`` groups from the pool of every block the beam kept (add a group, or replace
   one, by the best move while the total rises), then single tasks are added to or taken out of
   groups while that raises the total;
5. the best result over the starting partitions is returned.

A merge is scored in O(1) from block-to-block sums ``X[a, b] = sum_{i in a, j in b} M[i, j]``: a block
``a`` of ``n_a >= 2`` tasks totals ``(sum of M over ordered pairs inside a) / (n_a - 1)``. A level costs
``O(beam_width * m^2)`` for ``m`` blocks; ``T = 100`` takes about half a second on one CPU core.

Hyper-parameters: ``beam_width`` (partitions kept per level; 1 is greedy agglomeration), ``budget``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtl.grouping.scores import PairwiseScores

__all__ = ["beam_search"]

#: Smallest improvement a local-search move must bring (guards against cycling on rounding).
_TOLERANCE = 1e-12


@dataclass
class _Partition:
    blocks: list[tuple[int, ...]]
    internal: np.ndarray  # [m] sum of M over ordered pairs inside each block
    cross: np.ndarray  # [m, m] X[a, b] = sum_{i in a, j in b} M[i, j]
    values: np.ndarray  # [m] each block's total
    total: float

    def key(self) -> frozenset[tuple[int, ...]]:
        return frozenset(self.blocks)


def _merge(parent: _Partition, a: int, b: int, value: float) -> _Partition:
    keep = [i for i in range(len(parent.blocks)) if i not in (a, b)]
    row = parent.cross[a] + parent.cross[b]
    col = parent.cross[:, a] + parent.cross[:, b]
    cross = np.empty((len(keep) + 1, len(keep) + 1))
    cross[:-1, :-1] = parent.cross[np.ix_(keep, keep)]
    cross[-1, :-1] = row[keep]
    cross[:-1, -1] = col[keep]
    cross[-1, -1] = 0.0
    merged = tuple(sorted(parent.blocks[a] + parent.blocks[b]))
    internal = parent.internal[a] + parent.internal[b] + parent.cross[a, b] + parent.cross[b, a]
    values = np.append(parent.values[keep], value)
    return _Partition(
        blocks=[parent.blocks[i] for i in keep] + [merged],
        internal=np.append(parent.internal[keep], internal),
        cross=cross,
        values=values,
        total=float(values.sum()),
    )


def _agglomerate(
    scores: PairwiseScores, budget: int, beam_width: int
) -> tuple[list[list[tuple[int, ...]]], set[tuple[int, ...]]]:
    """Starting partitions for the local searches: those the beam kept at ``budget`` blocks and the best
    one with at most ``budget`` blocks; and every block the beam kept at any level (the candidate
    pool of the overlapping search)."""
    t = scores.num_tasks
    matrix = scores.matrix * (1.0 - np.eye(t))
    alone = scores.alone_scores()
    start = _Partition([(j,) for j in range(t)], np.zeros(t), matrix.copy(), alone.copy(), float(alone.sum()))
    beam = [start]
    pool = set(start.blocks)
    best = start if t <= budget else None
    starts = [start.blocks] if t <= budget else []
    while len(beam[0].blocks) > 1:
        children: list[tuple[float, int, int, int, float]] = []
        rows, cols = np.triu_indices(len(beam[0].blocks), k=1)  # every state of a level has m blocks
        for p, parent in enumerate(beam):
            sizes = np.array([len(b) for b in parent.blocks])
            merged = (parent.internal[:, None] + parent.internal[None, :] + parent.cross + parent.cross.T) / (
                sizes[:, None] + sizes[None, :] - 1
            )
            gains = (merged - parent.values[:, None] - parent.values[None, :])[rows, cols]
            top = np.argpartition(-gains, beam_width - 1)[:beam_width] if len(gains) > beam_width else None
            top = np.arange(len(gains)) if top is None else top
            for i in top.tolist():
                a, b = int(rows[i]), int(cols[i])
                children.append((parent.total + float(gains[i]), p, a, b, float(merged[a, b])))
        children.sort(key=lambda child: (-child[0], child[1:4]))
        kept: dict[frozenset[tuple[int, ...]], _Partition] = {}
        for _, p, a, b, value in children:
            child = _merge(beam[p], a, b, value)
            kept.setdefault(child.key(), child)
            if len(kept) == beam_width:
                break
        beam = list(kept.values())
        pool.update(block for state in beam for block in state.blocks)
        if len(beam[0].blocks) == budget:
            starts = [state.blocks for state in beam]
        if len(beam[0].blocks) <= budget:
            leader = max(beam, key=lambda s: s.total)
            if best is None or leader.total > best.total:
                best = leader
    assert best is not None  # the single-block level always has at most `budget` blocks
    return [best.blocks, *(s for s in starts if s != best.blocks)], pool


def _block_totals(internal: np.ndarray, sizes: np.ndarray, lone: np.ndarray) -> np.ndarray:
    """Blocks' totals from their internal sums and sizes; ``lone``: the alone score a one-task block
    would have (read where ``sizes == 1``); an empty block totals 0."""
    pairs = internal / np.maximum(sizes - 1, 1)
    return np.where(sizes == 1, lone, np.where(sizes == 0, 0.0, pairs))


def _polish_partition(scores: PairwiseScores, blocks: list[tuple[int, ...]], budget: int) -> list[list[int]]:
    """Move single tasks to another block (or to a new one, within the budget), best move first, while
    the total rises. Every move of every task is scored at once from ``Y[j, b]``, the sum of ``M`` over
    the pairs task ``j`` forms with block ``b``."""
    t = scores.num_tasks
    matrix = scores.matrix * (1.0 - np.eye(t))
    both = matrix + matrix.T
    alone = scores.alone_scores()
    labels = np.empty(t, dtype=np.int64)
    for b, block in enumerate(blocks):
        labels[list(block)] = b
    tasks = np.arange(t)
    while True:
        m = int(labels.max()) + 1
        onehot = np.zeros((t, m + 1))  # column m: a new, empty block
        onehot[tasks, labels] = 1.0
        sizes = onehot.sum(axis=0)
        pair_sums = both @ onehot  # [T, m + 1]
        internal = np.einsum("tb,tb->b", onehot, matrix @ onehot)
        index_sums = tasks @ onehot  # a one-task block's member is its index sum
        lone = alone[np.clip(index_sums, 0, t - 1).astype(np.int64)]
        values = _block_totals(internal, sizes, lone)
        own = labels
        # The source block without task j (its last member, when one is left, scores alone).
        rest_sizes = sizes[own] - 1
        rest_lone = alone[np.clip(index_sums[own] - tasks, 0, t - 1).astype(np.int64)]
        source_after = _block_totals(internal[own] - pair_sums[tasks, own], rest_sizes, rest_lone)
        # Every target block with task j added (a new block holds j alone).
        grown = internal[None, :] + pair_sums
        target_after = np.where(sizes[None, :] == 0, alone[:, None], grown / np.maximum(sizes[None, :], 1))
        gains = (source_after - values[own])[:, None] + target_after - values[None, :]
        gains[tasks, own] = -np.inf
        if m >= budget:
            gains[:, m] = -np.inf
        gains[rest_sizes == 0, m] = -np.inf  # moving a lone task to a new block changes nothing
        j, b = np.unravel_index(int(gains.argmax()), gains.shape)
        if not gains[j, b] > _TOLERANCE * (1.0 + float(np.abs(values).sum())):
            break
        labels[j] = b
        _, labels = np.unique(labels, return_inverse=True)  # renumber when a block emptied
    return [tasks[labels == b].tolist() for b in range(int(labels.max()) + 1)]


def _swap_groups(
    table: np.ndarray, pool: list[tuple[int, ...]], groups: list[list[int]], budget: int
) -> list[list[int]]:
    """Local search over selections from the pool (``table``: its ``[P, T]`` scores): add a group
    (within the budget) or replace one, best move first, while the total of every task's best score
    rises."""
    index = {g: c for c, g in enumerate(pool)}
    chosen = [index[tuple(g)] for g in groups]
    while True:
        rows = table[chosen]
        current = float(rows.max(axis=0).sum())
        moves: list[tuple[float, int | None, int]] = []
        if len(chosen) < budget:
            totals = np.maximum(rows.max(axis=0), table).sum(axis=1)
            moves.append((float(totals.max()), None, int(totals.argmax())))
        for position in range(len(chosen)):
            others = np.delete(rows, position, axis=0)
            elsewhere = others.max(axis=0) if len(others) else np.full(table.shape[1], -np.inf)
            totals = np.maximum(elsewhere, table).sum(axis=1)  # -inf where a task would go uncovered
            moves.append((float(totals.max()), position, int(totals.argmax())))
        total, position, candidate = max(moves, key=lambda move: move[0])
        if not total > current + _TOLERANCE * (1.0 + abs(current)):
            return [list(pool[c]) for c in chosen]
        if position is None:
            chosen.append(candidate)
        else:
            chosen[position] = candidate


def _toggle_members(scores: PairwiseScores, groups: list[list[int]]) -> list[list[int]]:
    """Add a task to a group or take one out, best toggle of a group first, while the total of every
    task's best score rises. All ``T`` toggles of a group are scored at once from its column sums."""
    t = scores.num_tasks
    matrix = scores.matrix * (1.0 - np.eye(t))
    alone = scores.alone_scores()
    table = np.full((len(groups), t), -np.inf)
    for g, group in enumerate(groups):
        table[g, group] = scores.member_scores(group)
    improved = True
    while improved:
        improved = False
        for g in range(len(groups)):
            members = np.zeros(t, dtype=bool)
            members[groups[g]] = True
            n = int(members.sum())
            column = matrix[members].sum(axis=0)  # column[k] = sum_{i in g} M[i, k]
            others = np.delete(table, g, axis=0)
            elsewhere = others.max(axis=0) if len(others) else np.full(t, -np.inf)
            current = float(np.maximum(elsewhere, table[g]).sum())
            # Row x: the group's scores after toggling task x (added when outside, removed when inside).
            after = np.full((t, t), -np.inf)
            outside = ~members
            after[np.ix_(outside, members)] = (
                column[members][None, :] + matrix[np.ix_(outside, members)]
            ) / n
            after[outside, np.flatnonzero(outside)] = column[outside] / n
            if n >= 3:
                inside = np.flatnonzero(members)
                shrunk = (column[members][None, :] - matrix[np.ix_(inside, members)]) / (n - 2)
                shrunk[np.arange(len(inside)), np.arange(len(inside))] = -np.inf
                after[np.ix_(inside, members)] = shrunk
            elif n == 2:
                a, b = np.flatnonzero(members)
                after[a, b], after[b, a] = alone[b], alone[a]
            totals = np.maximum(elsewhere[None, :], after).sum(axis=1)  # -inf when a task goes uncovered
            if n == 1:
                totals[members] = -np.inf  # an empty group is no group
            x = int(totals.argmax())
            if totals[x] > current + _TOLERANCE * (1.0 + abs(current)):
                groups[g] = sorted(set(groups[g]) ^ {x})
                table[g] = after[x]
                improved = True
    return groups


def _total(scores: PairwiseScores, groups: list[list[int]]) -> float:
    """The selection objective: the sum over tasks of the best score among the groups holding them."""
    table = np.full((len(groups), scores.num_tasks), -np.inf)
    for g, group in enumerate(groups):
        table[g, group] = scores.member_scores(group)
    return float(table.max(axis=0).sum())


def beam_search(
    scores: PairwiseScores, budget: int, *, disjoint: bool = False, beam_width: int = 16
) -> list[tuple[int, ...]]:
    """At most ``budget`` groups of task indices (see the module docstring).

    Args:
        scores: the pairwise scores.
        budget: the most groups (>= 1).
        disjoint: return a partition; otherwise groups may overlap.
        beam_width: partitions kept per merge level (>= 1).
    """
    if isinstance(beam_width, bool) or not isinstance(beam_width, int) or beam_width < 1:
        raise ValueError(f"Expected `beam_width` to be an integer >= 1, but got {beam_width!r}.")
    starts, blocks = _agglomerate(scores, budget, beam_width)
    polished = [_polish_partition(scores, start, budget) for start in starts]
    if disjoint:
        candidates = polished
    else:
        pool = sorted(blocks | {tuple(g) for p in polished for g in p})
        table = np.full((len(pool), scores.num_tasks), -np.inf)
        for c, group in enumerate(pool):
            table[c, list(group)] = scores.member_scores(group)
        candidates = [_toggle_members(scores, _swap_groups(table, pool, p, budget)) for p in polished]
    best = max(candidates, key=lambda groups: _total(scores, groups))
    return [tuple(g) for g in best]
