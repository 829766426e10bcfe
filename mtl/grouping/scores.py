"""Group scores: how well a candidate group of tasks serves each of its members.

Group selection (`mtl.grouping.selection`) maximises, over a set of at most ``K`` groups, the sum
over tasks of the best score any chosen group gives that task. Two structures feed it:

* `CandidateScores`: an explicit list of candidate groups and a ``[C, T]`` score matrix, e.g. the
  per-task results of groups that were actually trained (Standley et al., ICML 2020).
* `PairwiseScores`: scores derived from pairwise values only. A task ``j`` in a group ``G`` of two or
  more tasks scores the mean over the other members ``i`` of ``M[i, j]``: the TAG approximation of
  a group's inter-task affinity onto ``j`` (Fifty et al., NeurIPS 2021) and Standley
  et al.'s higher-order approximation (HOA) of a group's performance from pairwise runs. Both are the
  same formula on different ``M``; `PairwiseScores.candidates` enumerates every subset for the exact
  searches, and the beam search (`mtl.grouping.beam`) scores groups without enumerating them.

A task alone in a group scores ``alone[j]`` (HOA: its single-task result). TAG's released network
selection gives a one-task group a score below every group's (a task trains alone only when no
chosen group can serve it); ``alone=None`` reproduces that exactly with a penalty ``P`` lower than
anything else can make up: ``P = m_min - T (m_max - m_min) - 1`` over the off-diagonal values, so a
selection that serves one more task alone always scores lower.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
from torch import Tensor

__all__ = ["CandidateScores", "PairwiseScores", "group_mask"]

#: Candidate groups are enumerated (2^T - 1 subsets) for at most this many tasks.
MAX_ENUMERATED_TASKS = 12


def group_mask(group: Sequence[int]) -> int:
    """The bitmask of a group of task indices (bit ``j`` set for task ``j``)."""
    mask = 0
    for j in group:
        mask |= 1 << j
    return mask


def _as_matrix(values: Tensor | np.ndarray | Sequence[Sequence[float]], name: str) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().cpu().double().numpy()
    array = np.array(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] != array.shape[1] or array.shape[0] < 1:
        raise ValueError(f"Expected `{name}` to be a square [T, T] matrix, but got shape {array.shape}.")
    off = ~np.eye(len(array), dtype=bool)
    if not np.isfinite(array[off]).all():
        raise ValueError(
            f"Expected `{name}` to be finite off the diagonal, but got {array.tolist()}. "
            "Measure the affinity for longer (every pair needs at least one measurement)."
        )
    return array


@dataclass(frozen=True)
class CandidateScores:
    """Candidate groups and each group's score for each member.

    Args:
        task_names: the ``T`` tasks, in the order of the score columns.
        groups: ``C`` candidate groups, each a sorted tuple of task indices.
        scores: ``[C, T]`` float64; ``scores[c, j]`` is task ``j``'s score in group ``c`` (higher is
            better), ``-inf`` where ``j`` is not a member.
        last_resort: ``[C, T]`` bool, true where the score is the last-resort penalty of a task alone
            (`PairwiseScores` with ``alone=None``); such tasks are reported without a score.
    """

    task_names: tuple[str, ...]
    groups: tuple[tuple[int, ...], ...]
    scores: np.ndarray
    last_resort: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        t, c = len(self.task_names), len(self.groups)
        if self.scores.shape != (c, t):
            raise ValueError(
                f"Expected `scores` of shape ({c}, {t}) (one row per group, one column per task), but got "
                f"{self.scores.shape}."
            )
        for group, row in zip(self.groups, self.scores, strict=True):
            members = np.zeros(t, dtype=bool)
            members[list(group)] = True
            if not group or list(group) != sorted(set(group)) or not 0 <= group[0] <= group[-1] < t:
                raise ValueError(
                    f"Expected every group to be a non-empty sorted tuple of distinct task indices in "
                    f"[0, {t}), but got {group}."
                )
            if not np.isfinite(row[members]).all() or np.isfinite(row[~members]).any():
                raise ValueError(
                    f"Expected finite scores for the members of group {group} and -inf elsewhere, but got "
                    f"{row.tolist()}."
                )
        if self.last_resort is None:
            object.__setattr__(self, "last_resort", np.zeros_like(self.scores, dtype=bool))

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)


@dataclass(frozen=True)
class PairwiseScores:
    """Group scores approximated from pairwise values (TAG's and HOA's approximation).

    Task ``j`` in a group ``G`` with ``|G| >= 2`` scores ``mean_{i in G, i != j} matrix[i, j]``; alone it
    scores ``alone[j]``, or the last-resort penalty when ``alone`` is ``None`` (see the module docstring).
    The diagonal of ``matrix`` is never read.

    Args:
        task_names: the ``T`` tasks, in the order of the matrix.
        matrix: ``[T, T]``; ``matrix[i, j]``: the value for task ``j`` of sharing a network with task ``i``
            (an affinity ``A[i, j]``, or HOA's pairwise result of ``j`` trained with ``i``).
        alone: ``[T]`` (or one number for every task): a task's score in a group by itself; ``None``: a
            task alone only as a last resort.
    """

    task_names: tuple[str, ...]
    matrix: np.ndarray
    alone: np.ndarray | None = None

    def __init__(
        self,
        task_names: Sequence[str],
        matrix: Tensor | np.ndarray | Sequence[Sequence[float]],
        alone: float | Sequence[float] | np.ndarray | Tensor | None = None,
    ) -> None:
        array = _as_matrix(matrix, "matrix")
        names = tuple(task_names)
        if len(names) != len(array) or len(set(names)) != len(names):
            raise ValueError(
                f"Expected {len(array)} distinct task names (one per matrix row), but got {list(names)}."
            )
        if alone is not None:
            if isinstance(alone, Tensor):
                alone = alone.detach().cpu().double().numpy()
            alone = np.broadcast_to(np.asarray(alone, dtype=np.float64), (len(names),)).copy()
            if not np.isfinite(alone).all():
                raise ValueError(f"Expected finite `alone` scores, but got {alone.tolist()}.")
        object.__setattr__(self, "task_names", names)
        object.__setattr__(self, "matrix", array)
        object.__setattr__(self, "alone", alone)

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    @property
    def penalty(self) -> float:
        """The last-resort score of a task alone (``alone=None``): lower than any selection can make up."""
        t = self.num_tasks
        off = self.matrix[~np.eye(t, dtype=bool)]
        if off.size == 0:
            return -1.0
        low, high = float(off.min()), float(off.max())
        return low - t * (high - low) - 1.0

    def alone_scores(self) -> np.ndarray:
        """``[T]``: each task's score alone (the penalty where ``alone`` is ``None``)."""
        if self.alone is None:
            return np.full(self.num_tasks, self.penalty)
        return self.alone

    def member_scores(self, group: Sequence[int]) -> np.ndarray:
        """The scores of ``group``'s members, in the group's order."""
        members = list(group)
        if len(members) == 1:
            return self.alone_scores()[members]
        block = self.matrix[np.ix_(members, members)]
        return (block.sum(axis=0) - np.diag(block)) / (len(members) - 1)

    def candidates(self) -> CandidateScores:
        """Every non-empty subset of the tasks as a candidate (``2^T - 1`` groups), with its scores."""
        t = self.num_tasks
        if t > MAX_ENUMERATED_TASKS:
            raise ValueError(
                f"Expected at most {MAX_ENUMERATED_TASKS} tasks to enumerate every candidate group (2^T - 1), "
                f"but got {t}. Use the scalable search instead: `search='beam'` (`--search beam`)."
            )
        groups = [g for size in range(1, t + 1) for g in combinations(range(t), size)]
        scores = np.full((len(groups), t), -np.inf)
        for c, group in enumerate(groups):
            scores[c, list(group)] = self.member_scores(group)
        last_resort = np.zeros_like(scores, dtype=bool)
        if self.alone is None:
            last_resort[np.arange(t), np.arange(t)] = True  # the first T groups are the singletons
        return CandidateScores(self.task_names, tuple(groups), scores, last_resort)
