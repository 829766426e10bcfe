"""The multi-task gain Δm over single-task baselines (Maninis et al., CVPR 2019; as defined by LibMTL).

``Δm = 100 % · (1/T) Σ_t (1/N_t) Σ_i (-1)^{s_{t,i}} (M_{t,i} - B_{t,i}) / B_{t,i}``

over the ``T`` tasks and each task's ``N_t`` metrics, where ``M`` is the multi-task model's metric,
``B`` the single-task baseline's, and ``s_{t,i} = 1`` when lower is better (so that a positive Δm is
a gain for every metric). The relative changes are averaged within a task first and then across
tasks, so a task with many metrics weighs as much as a task with one (LibMTL, Lin & Zhang, 2023,
``LibMTL/utils.py`` documentation of ``count_improvement``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["delta_m", "task_deltas"]

Scores = Mapping[str, Mapping[str, float]]


def task_deltas(results: Scores, baselines: Scores, higher_is_better: Scores) -> dict[str, float]:
    """Per task, the mean signed relative change (in %) of its metrics against the baseline.

    Args:
        results: ``results[task][metric]``, the multi-task model's values.
        baselines: ``baselines[task][metric]``, the single-task values, for every metric in ``results``.
        higher_is_better: ``higher_is_better[task][metric]`` for every metric in ``results``.
    """
    if not results:
        raise ValueError("Expected `results` to name at least one task, but got none.")
    out: dict[str, float] = {}
    for task, metrics in results.items():
        if not metrics:
            raise ValueError(
                f"Expected task `{task}` in `results` to have at least one metric, but got none."
            )
        if task not in baselines:
            raise KeyError(
                f"Expected a single-task baseline for task `{task}`, but `baselines` has only {sorted(baselines)}."
            )
        changes = []
        for metric, value in metrics.items():
            base = baselines[task].get(metric)
            if base is None:
                raise KeyError(
                    f"Expected the baseline of task `{task}` to have metric `{metric}`, but it has "
                    f"{sorted(baselines[task])}."
                )
            if metric not in higher_is_better.get(task, {}):
                raise KeyError(f"Expected `higher_is_better[{task!r}]` to say the direction of `{metric}`.")
            if base == 0 or not math.isfinite(base) or not math.isfinite(value):
                raise ValueError(
                    f"Expected finite metrics and a non-zero baseline for `{task}/{metric}`, but got "
                    f"{value} against a baseline of {base}: Δm divides by the baseline."
                )
            sign = 1.0 if higher_is_better[task][metric] else -1.0
            changes.append(sign * (value - base) / abs(base))
        out[task] = 100.0 * sum(changes) / len(changes)
    return out


def delta_m(results: Scores, baselines: Scores, higher_is_better: Scores) -> float:
    """Δm in % (positive: the multi-task model beats the single-task baselines on average).

    See `task_deltas` for the arguments; Δm is the mean of the per-task values.
    """
    deltas = task_deltas(results, baselines, higher_is_better)
    return sum(deltas.values()) / len(deltas)
