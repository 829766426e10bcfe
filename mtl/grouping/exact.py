"""The exact searches of group selection: exhaustive enumeration and branch-and-bound.

Both work on explicit candidates (`CandidateScores`) and return the indices of the chosen candidates;
`mtl.grouping.selection` states the problem and picks the search.

* Exhaustive, overlapping: every set of ``K`` candidates, as TAG's released selection code does (adding a
  group never lowers the total, so sets of exactly ``K`` suffice). Disjoint: every partition of the
  tasks into at most ``K`` blocks that are all candidates.
* Branch-and-bound (Standley et al., ICML 2020, search under a budget of networks), depth first over
  partitions: the block that holds the lowest uncovered task is chosen next (each partition is met
  once), and a branch is pruned when its total plus every uncovered task's best possible score
  cannot beat the best partition found so far. Overlapping selections are solved as partitions too
  (`serving_sets`).
"""

from __future__ import annotations

from itertools import combinations, islice
from typing import Any

import numpy as np

from mtl.grouping.scores import CandidateScores, group_mask

__all__ = [
    "branch_and_bound",
    "branch_and_bound_partition",
    "exhaustive_disjoint",
    "exhaustive_overlapping",
    "serving_sets",
]


def exhaustive_overlapping(scores: np.ndarray, budget: int) -> list[int]:
    """The best set of ``budget`` candidates (rows of ``scores``, ``[C, T]``) covering every task, by
    enumeration in vectorised chunks; the first best in enumeration order on ties."""
    size = min(budget, len(scores))
    best_value, best = -np.inf, None
    selections = combinations(range(len(scores)), size)
    while chunk := list(islice(selections, 20_000)):
        index = np.array(chunk)
        values = scores[index].max(axis=1).sum(axis=1)  # -inf where a task is uncovered
        top = int(values.argmax())
        if values[top] > best_value:
            best_value, best = float(values[top]), list(chunk[top])
    if best is None:
        raise ValueError(
            f"Expected some {size} candidate groups to cover every task, but none do. Add candidates that "
            "contain the uncovered tasks (e.g. every task alone)."
        )
    return best


def _block_values(scores: np.ndarray) -> np.ndarray:
    """Each candidate's total over its own members (its value as a block of a partition)."""
    return np.where(np.isfinite(scores), scores, 0.0).sum(axis=1)


def exhaustive_disjoint(candidates: CandidateScores, budget: int) -> list[int]:
    """The best partition of the tasks into at most ``budget`` candidate blocks, by enumerating every
    partition (each task joins an open block or opens one) and keeping those made of candidates."""
    t = candidates.num_tasks
    index = {group_mask(g): c for c, g in enumerate(candidates.groups)}
    values = _block_values(candidates.scores)
    best: list[Any] = [-np.inf, None]
    blocks: list[int] = []

    def assign(task: int) -> None:
        if task == t:
            chosen = [index.get(mask) for mask in blocks]
            if None not in chosen:
                value = float(sum(values[c] for c in chosen))
                if value > best[0]:
                    best[:] = [value, chosen]
            return
        for b in range(len(blocks)):
            blocks[b] |= 1 << task
            assign(task + 1)
            blocks[b] &= ~(1 << task)
        if len(blocks) < budget:
            blocks.append(1 << task)
            assign(task + 1)
            blocks.pop()

    assign(0)
    if best[1] is None:
        raise ValueError(
            f"Expected the candidate groups to partition the tasks into at most {budget} groups, but none "
            "do. Add candidates (e.g. every task alone) or raise the budget."
        )
    return best[1]


def serving_sets(candidates: CandidateScores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every set ``S`` of tasks that some candidate contains: ``w(S) = max_{G ⊇ S} sum_{j in S}
    score(G, j)`` and the ``G`` attaining it.

    In an overlapping selection every task is served by one chosen group, so the served sets
    partition the tasks and the total is ``sum_i sum_{j in S_i} score(G_i, j) <= sum_i w(S_i)``;
    conversely any partition into sets ``S_i`` is met by choosing each one's best superset. The best
    overlapping selection of ``K`` groups is therefore the best partition into ``K`` blocks valued by
    ``w``, which the disjoint branch-and-bound solves. Costs ``sum_G 2^|G|`` (``3^T`` for every subset).

    Returns: (masks ``[B]``, values ``[B]``, group index ``[B]``) of the sets with a superset.
    """
    t = candidates.num_tasks
    values = np.full(1 << t, -np.inf)
    argbest = np.full(1 << t, -1, dtype=np.int64)
    for c, group in enumerate(candidates.groups):
        sums, masks = np.zeros(1), np.zeros(1, dtype=np.int64)
        for j in group:  # subset sums of the members' scores, doubling per member
            sums = np.concatenate([sums, sums + candidates.scores[c, j]])
            masks = np.concatenate([masks, masks | (1 << j)])
        better = sums[1:] > values[masks[1:]]
        values[masks[1:][better]] = sums[1:][better]
        argbest[masks[1:][better]] = c
    found = np.flatnonzero(argbest >= 0)
    return found.astype(np.int64), values[found], argbest[found]


def branch_and_bound_partition(
    masks: np.ndarray, values: np.ndarray, task_best: np.ndarray, num_tasks: int, budget: int
) -> list[int]:
    """The best partition of the tasks into at most ``budget`` blocks chosen among ``masks``.

    Depth first: the block holding the lowest uncovered task is chosen next (so every partition is
    met once); a branch is pruned when its total plus every uncovered task's best score
    (``task_best``, an upper bound on what any block gives that task) cannot beat the best so far.
    """
    member_best = np.array(
        [sum(task_best[j] for j in range(num_tasks) if m >> j & 1) for m in masks.tolist()]
    )
    lowest_bit = masks & -masks
    by_lowest = [np.flatnonzero(lowest_bit == (1 << j)) for j in range(num_tasks)]
    full = (1 << num_tasks) - 1
    best: list[Any] = [-np.inf, None]

    def search(covered: int, chosen: list[int], total: float, left: int) -> None:
        if covered == full:
            if total > best[0]:
                best[:] = [total, list(chosen)]
            return
        if left == 0:
            return
        uncovered = full & ~covered
        options = by_lowest[(uncovered & -uncovered).bit_length() - 1]
        options = options[(masks[options] & covered) == 0]
        if left == 1:
            options = options[masks[options] == uncovered]
        rest = float(sum(task_best[j] for j in range(num_tasks) if uncovered >> j & 1))
        bounds = total + values[options] + rest - member_best[options]
        for i in np.argsort(-bounds, kind="stable"):
            if bounds[i] <= best[0]:
                break  # sorted: no later option can do better
            option = int(options[i])
            chosen.append(option)
            search(covered | int(masks[option]), chosen, total + float(values[option]), left - 1)
            chosen.pop()

    search(0, [], 0.0, budget)
    if best[1] is None:
        raise ValueError(
            f"Expected the candidate groups to cover the tasks with at most {budget} groups, but none do. Add "
            "candidates (e.g. every task alone) or raise the budget."
        )
    return best[1]


def branch_and_bound(candidates: CandidateScores, budget: int, disjoint: bool) -> list[int]:
    """The optimum of the selection (see the module docstring) by branch-and-bound."""
    task_best = candidates.scores.max(axis=0)
    if disjoint:
        masks = np.array([group_mask(g) for g in candidates.groups], dtype=np.int64)
        chosen = branch_and_bound_partition(
            masks, _block_values(candidates.scores), task_best, candidates.num_tasks, budget
        )
        return chosen
    masks, values, groups = serving_sets(candidates)
    chosen = branch_and_bound_partition(masks, values, task_best, candidates.num_tasks, budget)
    return sorted({int(groups[b]) for b in chosen})
