"""Choose at most ``K`` groups of tasks (networks) that serve every task best.

The network selection of TAG (Fifty et al., "Efficiently Identifying Task Groupings for Multi-Task
Learning", NeurIPS 2021), itself the formulation of Standley et al. ("Which Tasks Should Be Learned
Together in Multi-task Learning?", ICML 2020): pick a set ``S`` of at most ``K`` candidate groups
that together contain every task; each task is served by the chosen group that scores best for it;
maximise the total ``sum_j max_{G in S, j in G} score(G, j)``. Groups may overlap (a task trained in
several networks is served by its best one), or, with ``disjoint=True``, must partition the tasks.

Searches (``search``):

* ``exhaustive``: every selection of ``K`` candidates (overlapping; adding a group never lowers the
  total, so ``K`` groups suffice), as TAG's released selection does, or every partition into at
  most ``K`` groups (disjoint). Refused beyond ``MAX_EXHAUSTIVE`` selections.
* ``branch_and_bound``: the same optimum (Standley et al.'s search under a budget), depth first over
  partitions: the block that holds the lowest uncovered task is chosen next, and a branch is pruned
  when its total plus every uncovered task's best possible score cannot beat the best partition so
  far. Overlapping selections are solved as partitions too: the tasks each chosen group serves
  partition the tasks, so the best overlapping selection is the best partition into ``K`` blocks
  valued ``w(S) = max_{G ⊇ S} sum_{j in S} score(G, j)`` (`mtl.grouping.exact.serving_sets`).
  For ``T <= 12``.
* ``beam``: the scalable search for ``T`` up to 100 and beyond (`mtl.grouping.beam`), on pairwise
  scores; approximate.
* ``auto``: exhaustive when it is small enough, else branch-and-bound for ``T <= 12``, else beam.

Hyper-parameters: ``budget`` (``K``), ``disjoint``, ``search``, ``beam_width`` (beam search only).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from torch import Tensor

from mtl.grouping.beam import beam_search
from mtl.grouping.exact import branch_and_bound, exhaustive_disjoint, exhaustive_overlapping
from mtl.grouping.scores import MAX_ENUMERATED_TASKS, CandidateScores, PairwiseScores

__all__ = [
    "MAX_EXHAUSTIVE",
    "SEARCHES",
    "Selection",
    "check_budget",
    "count_selections",
    "resolve_search",
    "select_groups",
    "selection_from_memberships",
]

Search = Literal["auto", "exhaustive", "branch_and_bound", "beam"]
SEARCHES: tuple[str, ...] = ("auto", "exhaustive", "branch_and_bound", "beam")

#: The exhaustive search refuses to enumerate more selections (or partitions) than this.
MAX_EXHAUSTIVE = 1_000_000


@dataclass(frozen=True)
class Selection:
    """The chosen groups and how they serve the tasks.

    Attributes:
        task_names: the tasks.
        groups: the chosen groups (task names, in task order; groups ordered by their tasks); every
            group serves at least one task.
        serving: task -> index into ``groups`` of the group that serves it (scores best for it).
        task_scores: task -> its score in its serving group; ``None`` for a task served alone as a last
            resort (``PairwiseScores`` with ``alone=None``).
        score: the sum of the task scores that are not ``None`` (the objective, less any last-resort
            penalties).
        search: the search that found it; disjoint: whether the groups partition the tasks.
    """

    task_names: tuple[str, ...]
    groups: tuple[tuple[str, ...], ...]
    serving: dict[str, int]
    task_scores: dict[str, float | None]
    score: float
    search: str
    disjoint: bool


def _stirling_partitions(n: int, k: int) -> int:
    """The number of partitions of ``n`` items into at most ``k`` non-empty blocks."""
    row = [1] + [0] * k  # S(0, j)
    for _ in range(n):
        row = [0] + [j * row[j] + row[j - 1] for j in range(1, k + 1)]
    return sum(row)


def count_selections(num_candidates: int, num_tasks: int, budget: int, disjoint: bool) -> int:
    """How many selections the exhaustive search enumerates."""
    if disjoint:
        return _stirling_partitions(num_tasks, budget)
    return math.comb(num_candidates, min(budget, num_candidates))


def check_budget(num_tasks: int, budget: int, disjoint: bool, num_candidates: int | None = None) -> None:
    """Raise a clear error for a budget no selection can meet.

    Args:
        num_tasks: ``T``.
        budget: ``K``, the number of networks.
        disjoint: a partition has at most ``T`` groups.
        num_candidates: the number of candidate groups (default: every subset, ``2^T - 1``).
    """
    candidates = (2**num_tasks - 1) if num_candidates is None else num_candidates
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(
            f"Expected `budget` to be a number of networks >= 1, but got {budget!r}. Pass how many networks "
            "(groups) you can afford to train and serve, e.g. `--budget 2`."
        )
    if budget > candidates:
        raise ValueError(
            f"Expected `budget` to be at most the number of candidate groups ({candidates} for {num_tasks} "
            f"task(s)), but got {budget}. Lower the budget."
        )
    if disjoint and budget > num_tasks:
        raise ValueError(
            f"Expected `budget` to be at most the number of tasks ({num_tasks}) for disjoint groups (a "
            f"partition of {num_tasks} task(s) has at most {num_tasks} groups), but got {budget}. Lower the "
            "budget, or allow overlapping groups."
        )


def _selection(
    task_names: tuple[str, ...],
    groups: Sequence[Sequence[int]],
    member_scores: Callable[[tuple[int, ...]], np.ndarray],
    last_resort: Callable[[tuple[int, ...], int], bool],
    search: str,
    disjoint: bool,
) -> Selection:
    """Serve each task by its best chosen group; drop groups that serve no task."""
    t = len(task_names)
    groups = [tuple(sorted(g)) for g in groups]
    table = np.full((len(groups), t), -np.inf)
    for g, group in enumerate(groups):
        table[g, list(group)] = member_scores(group)
    serving = table.argmax(axis=0)  # the first best group on ties
    used = sorted(set(serving.tolist()), key=lambda g: groups[g])  # groups in task order
    renumber = {g: i for i, g in enumerate(used)}
    task_scores: dict[str, float | None] = {}
    for j, name in enumerate(task_names):
        g = int(serving[j])
        task_scores[name] = None if last_resort(groups[g], j) else float(table[g, j])
    return Selection(
        task_names=task_names,
        groups=tuple(tuple(task_names[j] for j in groups[g]) for g in used),
        serving={name: renumber[int(serving[j])] for j, name in enumerate(task_names)},
        task_scores=task_scores,
        score=float(sum(v for v in task_scores.values() if v is not None)),
        search=search,
        disjoint=disjoint,
    )


def selection_from_memberships(task_names: Sequence[str], memberships: Tensor | np.ndarray) -> Selection:
    """The hard clustering of fuzzy memberships ``[T, k]`` (STG-MTL): each task joins, and is served by,
    the cluster of its highest membership; a task's score is that membership; empty clusters are dropped."""
    weights = np.asarray(
        memberships.tolist() if hasattr(memberships, "tolist") else memberships, dtype=np.float64
    )
    names = tuple(task_names)
    if weights.ndim != 2 or weights.shape[0] != len(names) or weights.shape[1] < 1:
        raise ValueError(
            f"Expected memberships of shape [{len(names)}, k] (one row per task), but got {weights.shape}."
        )
    cluster = weights.argmax(axis=1)
    groups = [tuple(np.flatnonzero(cluster == c).tolist()) for c in range(weights.shape[1])]
    groups = [g for g in groups if g]
    index = {j: g for g, group in enumerate(groups) for j in group}
    return Selection(
        task_names=names,
        groups=tuple(tuple(names[j] for j in group) for group in groups),
        serving={name: index[j] for j, name in enumerate(names)},
        task_scores={name: float(weights[j, cluster[j]]) for j, name in enumerate(names)},
        score=float(weights.max(axis=1).sum()),
        search="clustering",
        disjoint=True,
    )


def resolve_search(
    num_tasks: int, budget: int, disjoint: bool, search: str = "auto", num_candidates: int | None = None
) -> str:
    """Check a selection problem before any scores exist and return the concrete search ``auto`` means.

    Raises a clear error for a budget below 1 or above the number of candidate groups, an unknown
    search, and an exact search on too many tasks (naming the scalable one).

    Args:
        num_tasks: ``T``.
        budget: ``K``.
        disjoint: whether the groups must partition the tasks.
        search: see the module docstring.
        num_candidates: the number of explicit candidate groups (`CandidateScores`); ``None`` for
            pairwise scores, whose candidates are every subset.
    """
    if search not in SEARCHES:
        raise ValueError(f"Expected `search` to be one of {list(SEARCHES)}, but got {search!r}.")
    pairwise = num_candidates is None
    candidates = 2**num_tasks - 1 if pairwise else num_candidates
    check_budget(num_tasks, budget, disjoint, candidates)
    if search == "auto":
        if pairwise and num_tasks > MAX_ENUMERATED_TASKS:
            return "beam"
        if count_selections(candidates, num_tasks, budget, disjoint) <= MAX_EXHAUSTIVE:
            return "exhaustive"
        return "branch_and_bound"
    if search == "beam" and not pairwise:
        raise ValueError(
            "Expected `PairwiseScores` for the beam search (it scores groups it has not enumerated), but got "
            "`CandidateScores`. Use `search='branch_and_bound'` on explicit candidates."
        )
    if search != "beam" and num_tasks > MAX_ENUMERATED_TASKS:
        raise ValueError(
            f"Expected at most {MAX_ENUMERATED_TASKS} tasks for the {search} search (it enumerates subsets of "
            f"the tasks), but got {num_tasks}. Use the scalable search: `search='beam'` (`--search beam`)."
        )
    if search == "exhaustive":
        count = count_selections(candidates, num_tasks, budget, disjoint)
        if count > MAX_EXHAUSTIVE:
            raise ValueError(
                f"Expected at most {MAX_EXHAUSTIVE:,} selections for the exhaustive search, but {num_tasks} tasks "
                f"with a budget of {budget} give {count:,}. Use `search='branch_and_bound'` (the same optimum) "
                "or the scalable `search='beam'` (`--search beam`)."
            )
    return search


def select_groups(
    scores: PairwiseScores | CandidateScores,
    budget: int,
    *,
    disjoint: bool = False,
    search: Search = "auto",
    beam_width: int = 16,
) -> Selection:
    """Choose at most ``budget`` groups that maximise the total of each task's best score.

    Args:
        scores: `PairwiseScores` (TAG affinities, HOA) or explicit `CandidateScores`.
        budget: ``K``, the most groups (networks); in ``[1, number of candidate groups]``.
        disjoint: require the groups to partition the tasks.
        search: ``auto``, ``exhaustive``, ``branch_and_bound`` or ``beam`` (see the module docstring).
        beam_width: partitions kept per level of the beam search.
    """
    pairwise = isinstance(scores, PairwiseScores)
    num_candidates = None if pairwise else len(scores.groups)
    search = resolve_search(scores.num_tasks, budget, disjoint, search, num_candidates)
    if search == "beam":
        assert isinstance(scores, PairwiseScores)  # resolve_search refuses candidates for the beam
        groups = beam_search(scores, budget, disjoint=disjoint, beam_width=beam_width)
        alone_is_last_resort = scores.alone is None
        return _selection(
            scores.task_names,
            groups,
            scores.member_scores,
            lambda group, j: alone_is_last_resort and len(group) == 1,
            "beam",
            disjoint,
        )
    candidates = scores.candidates() if pairwise else scores
    if search == "exhaustive":
        chosen = (
            exhaustive_disjoint(candidates, budget)
            if disjoint
            else exhaustive_overlapping(candidates.scores, budget)
        )
    else:
        chosen = branch_and_bound(candidates, budget, disjoint)
    rows = {g: c for c, g in enumerate(candidates.groups)}
    return _selection(
        candidates.task_names,
        [candidates.groups[c] for c in chosen],
        lambda group: candidates.scores[rows[group], list(group)],
        lambda group, j: bool(candidates.last_resort[rows[group], j]),
        search,
        disjoint,
    )
