"""The report's numbers: per configuration and task metric the mean ± std over seeds, Δm against the
single-task baselines, and the rank.

* mean ± std: the sample standard deviation (``n - 1``) over the finished seeds (none for one seed).
* Δm (`mtl.delta_m`, LibMTL's definition) compares the seed-mean of each metric with the seed-mean of
  the baseline's, so it is the gain of the configuration's average model over the average baseline.
  Its spread is the sample std of the per-seed Δm, each seed against the baseline of the same seed
  (only seeds with both).
* rank: by Δm, highest first (ties share a rank); without baselines, by the seed-mean of
  ``test/mean`` (the sign-corrected mean of the tasks' primary metrics). The best ranks are marked.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field

from mtl.delta_m import delta_m, task_deltas
from mtl.report.results import Collected, Scores

__all__ = ["Column", "Report", "Row", "Stat", "build_report", "stat"]

Column = tuple[str, str]  # (task, metric)


@dataclass(frozen=True)
class Stat:
    """Mean, sample std (``nan`` for fewer than two values) and count of a metric over seeds."""

    mean: float
    std: float
    n: int


def stat(values: Mapping[int, float] | list[float]) -> Stat | None:
    """The `Stat` of the values (``None`` when there are none)."""
    data = list(values.values()) if isinstance(values, Mapping) else list(values)
    if not data:
        return None
    return Stat(statistics.fmean(data), statistics.stdev(data) if len(data) > 1 else math.nan, len(data))


@dataclass
class Row:
    """One configuration (or the baselines) in the report."""

    name: str
    settings: dict[str, str]
    seeds: int
    stats: dict[Column, Stat] = field(default_factory=dict)
    task_delta: dict[str, float] = field(default_factory=dict)
    delta_m: float | None = None
    delta_m_std: float | None = None
    score: float | None = None
    rank: int | None = None
    best: bool = False
    note: str = ""


@dataclass
class Report:
    """Rows in rank order, the columns they share, the baselines and what the ranking is by."""

    name: str
    columns: list[Column]
    higher_is_better: dict[Column, bool]
    rows: list[Row]
    baseline: Row | None
    ranked_by: str
    seeds: list[int]
    axes: list[str]


def _means(scores: Scores) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for task, metrics in scores.values.items():
        for metric, seeds in metrics.items():
            if seeds:
                out.setdefault(task, {})[metric] = statistics.fmean(seeds.values())
    return out


def _at_seed(scores: Scores, seed: int) -> dict[str, dict[str, float]]:
    return {
        task: {m: s[seed] for m, s in metrics.items() if seed in s}
        for task, metrics in scores.values.items()
        if any(seed in s for s in metrics.values())
    }


def _complete(scores: Scores, values: dict[str, dict[str, float]]) -> bool:
    """Whether ``values`` has every metric of every task of the configuration."""
    return all(set(names) <= set(values.get(task, {})) for task, names in scores.metrics.items())


def _delta_row(row: Row, scores: Scores, baseline: Scores) -> None:
    """Fill the row's per-task Δ and Δm (with its per-seed spread), or say why they are missing."""
    means, base = _means(scores), _means(baseline)
    if not _complete(scores, means):
        row.note = "no finished run" if not means else "metrics missing"
        return
    directions = scores.higher_is_better
    try:
        row.task_delta = task_deltas(means, base, directions)
    except (KeyError, ValueError) as err:
        row.note = f"Δm unavailable: {err.args[0]}"
        return
    row.delta_m = delta_m(means, base, directions)
    per_seed = []
    for seed in scores.seeds:
        values, reference = _at_seed(scores, seed), _at_seed(baseline, seed)
        if _complete(scores, values) and all(set(values[t]) <= set(reference.get(t, {})) for t in values):
            per_seed.append(delta_m(values, reference, directions))
    row.delta_m_std = statistics.stdev(per_seed) if len(per_seed) > 1 else None


def _rank(rows: list[Row]) -> None:
    """Competition ranking ("1224") by ``score``, highest first; the rank-1 rows are the best."""
    scored = [r for r in rows if r.score is not None]
    for row in scored:
        row.rank = 1 + sum(other.score > row.score for other in scored)  # type: ignore[operator]
        row.best = row.rank == 1


def build_report(collected: Collected) -> Report:
    """The report of a collected sweep (see the module docstring)."""
    manifest, baseline = collected.manifest, collected.baseline
    columns: list[Column] = []
    directions: dict[Column, bool] = {}
    for scores in [*collected.configurations, *([baseline] if baseline else [])]:
        for task, names in scores.metrics.items():
            for metric in names:
                if (task, metric) not in columns:
                    columns.append((task, metric))
                if metric in scores.higher_is_better.get(task, {}):
                    directions[(task, metric)] = scores.higher_is_better[task][metric]

    def row_of(scores: Scores) -> Row:
        row = Row(scores.name, scores.settings, len(scores.seeds))
        for task, metrics in scores.values.items():
            for metric, seeds in metrics.items():
                summary = stat(seeds)
                if summary is not None:
                    row.stats[(task, metric)] = summary
        return row

    has_baseline = baseline is not None and bool(baseline.values)
    rows = []
    for scores in collected.configurations:
        row = row_of(scores)
        if has_baseline:
            _delta_row(row, scores, baseline)  # type: ignore[arg-type]
            row.score = row.delta_m
        else:
            mean = stat(scores.mean_score)
            row.score = mean.mean if mean else None
            if mean is None:
                row.note = "no finished run"
        rows.append(row)
    _rank(rows)
    rows.sort(key=lambda r: (r.rank is None, r.rank or 0))
    return Report(
        name=manifest.name,
        columns=columns,
        higher_is_better=directions,
        rows=rows,
        baseline=row_of(baseline) if baseline is not None else None,
        ranked_by="Δm" if has_baseline else "test/mean",
        seeds=list(manifest.seeds),
        axes=list(manifest.grid.get("axes", {})),
    )
