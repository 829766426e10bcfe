"""Standley et al.'s higher-order approximation (HOA): a group's results from pairwise runs.

Source: Standley, Zamir, Chen, Guibas, Malik, Savarese, "Which Tasks Should Be Learned Together in
Multi-task Learning?", ICML 2020 (the "higher order approximation"). Train every task alone
and every pair of tasks together (``T + T(T-1)/2`` networks); the performance of task ``j`` in a
network for a group ``G`` (``|G| >= 3``) is approximated by the average of its performance in the
pairwise networks with each other member:

    P(j | G) ≈ (1 / (|G| - 1)) Σ_{i in G, i != j} P(j | {i, j}),

which is exact for pairs and, for a task alone, its single-task performance (`approximate`).

The performances are each run's validation metrics at its best checkpoint
(`mtl.grouping.training.with_validation`): the groups are chosen on validation results, and the test
results of the runs stay unseen until ``mtl group --train`` compares the chosen groups on them.

For the selection (`hoa_scores`) each task's metrics are turned into the relative gain over its
single-task run, in % and signed so that higher is better (`mtl.delta_m.task_deltas`, averaged over
the task's metrics), which puts tasks with different metrics on one scale. The gain is affine in the
metric values for a fixed baseline, so the average of the pairwise gains is the gain of the averaged
metrics: selecting on ``hoa_scores`` selects on Standley's approximation, and a task alone scores 0.

The runs are named by their tasks under a runs directory (``<task>`` alone, ``<a>+<b>`` for a pair;
`mtl.grouping.training.run_name`), trained by `train_pairwise_results` or read by
`read_pairwise_results`, which names every missing run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from mtl.delta_m import task_deltas
from mtl.grouping.scores import PairwiseScores
from mtl.grouping.training import missing_runs, read_averaged, run_name, task_metrics

__all__ = [
    "MissingPairwiseRuns",
    "PairwiseResults",
    "approximate",
    "hoa_scores",
    "pairwise_runs",
    "read_pairwise_results",
    "train_pairwise_results",
]

Metrics = dict[str, float]


class MissingPairwiseRuns(FileNotFoundError):
    """HOA needs single-task and pairwise runs that are not there."""


def pairwise_runs(tasks: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Every run HOA needs: ``{run name: its tasks}``, the ``T`` single-task runs then the pairs."""
    sets = [(t,) for t in tasks] + list(combinations(tasks, 2))
    return {run_name(members): members for members in sets}


@dataclass(frozen=True)
class PairwiseResults:
    """Per-task metrics of every task trained alone and of every pair trained together.

    Attributes:
        task_names: the tasks, in order.
        single: ``single[task][metric]``: the task trained alone.
        pairs: ``pairs[(a, b)][task][metric]`` for ``a`` before ``b`` in ``task_names``, ``task`` in ``{a, b}``.
        higher_is_better: ``higher_is_better[task][metric]``.
    """

    task_names: tuple[str, ...]
    single: Mapping[str, Metrics]
    pairs: Mapping[tuple[str, str], Mapping[str, Metrics]]
    higher_is_better: Mapping[str, Mapping[str, bool]]

    def __post_init__(self) -> None:
        missing = [t for t in self.task_names if t not in self.single]
        order = {t: i for i, t in enumerate(self.task_names)}
        for a, b in combinations(self.task_names, 2):
            pair = self.pairs.get((a, b))
            if pair is None or a not in pair or b not in pair:
                missing.append(f"{a}+{b}")
        if missing:
            raise MissingPairwiseRuns(
                f"Expected results for every task alone and every pair of tasks, but got none for {missing}."
            )
        for a, b in self.pairs:
            if order.get(a, -1) >= order.get(b, -1):
                raise ValueError(
                    f"Expected pair keys (a, b) with a before b in {list(self.task_names)}, but got {(a, b)}."
                )

    def pair(self, i: str, j: str) -> Metrics:
        """Task ``j``'s metrics when trained together with task ``i``."""
        key = (i, j) if self.task_names.index(i) < self.task_names.index(j) else (j, i)
        return dict(self.pairs[key][j])


def approximate(results: PairwiseResults, group: Sequence[str]) -> dict[str, Metrics]:
    """HOA: each member's metrics in a network for ``group``, averaged over its pairs with the others."""
    if not group or len(set(group)) != len(group) or any(t not in results.task_names for t in group):
        raise ValueError(
            f"Expected a non-empty group of distinct tasks among {list(results.task_names)}, but got {list(group)}."
        )
    if len(group) == 1:
        return {group[0]: dict(results.single[group[0]])}
    out: dict[str, Metrics] = {}
    for j in group:
        pairs = [results.pair(i, j) for i in group if i != j]
        out[j] = {metric: sum(p[metric] for p in pairs) / len(pairs) for metric in pairs[0]}
    return out


def hoa_scores(results: PairwiseResults) -> PairwiseScores:
    """Pairwise scores for the selection: ``M[i, j]`` is task ``j``'s gain (%) from training with ``i``
    over training alone; a task alone scores 0 (see the module docstring)."""
    names = results.task_names
    matrix = np.zeros((len(names), len(names)))
    for (i, a), (j, b) in combinations(list(enumerate(names)), 2):
        for row, col, helper, helped in ((i, j, a, b), (j, i, b, a)):
            gain = task_deltas(
                {helped: results.pair(helper, helped)},
                {helped: results.single[helped]},
                {helped: results.higher_is_better[helped]},
            )
            matrix[row, col] = gain[helped]
    return PairwiseScores(names, matrix, alone=0.0)


def _collect(tasks: Sequence[str], read: Callable[[str], dict[str, Any]]) -> PairwiseResults:
    single: dict[str, Metrics] = {}
    directions: dict[str, dict[str, bool]] = {}
    pairs: dict[tuple[str, str], dict[str, Metrics]] = {}
    for name, members in pairwise_runs(tasks).items():
        results = read(name)
        per_task = {t: task_metrics(results, t, split="val") for t in members}
        for t, (values, direction) in per_task.items():
            directions.setdefault(t, direction)
            if len(members) == 1:
                single[t] = values
        if len(members) == 2:
            pairs[(members[0], members[1])] = {t: per_task[t][0] for t in members}
    return PairwiseResults(tuple(tasks), single, pairs, directions)


def read_pairwise_results(directory: str | Path, tasks: Sequence[str], seeds: int = 1) -> PairwiseResults:
    """The finished single-task and pairwise runs under ``directory`` (averaged over ``seeds``).

    Raises `MissingPairwiseRuns` naming every missing run and how to get it.
    """
    directory = Path(directory)
    names = list(pairwise_runs(tasks))
    missing = missing_runs(directory, names, seeds)
    if missing:
        shown = ", ".join(missing[:8]) + (f", ... ({len(missing)} in all)" if len(missing) > 8 else "")
        raise MissingPairwiseRuns(
            f"Expected the single-task and pairwise runs of HOA ({len(names)} runs for {len(tasks)} tasks, "
            f"{seeds} seed(s) each) under {directory}, but {len(missing)} are missing: {shown}. Train them with "
            "`mtl group --method hoa --train` (each runs `mtl fit` once), or point `--pairwise` at the runs "
            "directory of an earlier `mtl group` that trained them."
        )
    return _collect(tasks, lambda name: read_averaged(directory, name, seeds))


def train_pairwise_results(
    train: Callable[[tuple[str, ...]], Any], directory: str | Path, tasks: Sequence[str], seeds: int = 1
) -> PairwiseResults:
    """Train whatever single-task and pairwise runs are missing and read them all.

    Args:
        train: trains the given tasks (all seeds) into ``directory`` (finished runs are reused), e.g.
            ``mtl group``'s runner of the user's config restricted to them.
        directory: the runs directory ``train`` writes to.
        tasks: the tasks.
        seeds: seeds per run (averaged).
    """
    for members in pairwise_runs(tasks).values():
        train(members)
    return read_pairwise_results(directory, tasks, seeds)
