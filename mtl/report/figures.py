"""The report's figures: per-task bars with error bars, and the trade-off between two tasks.

Built on `mtl.plots.new_figure` (Agg canvas, no pyplot state).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from mtl.plots import new_figure
from mtl.report.pareto import pareto_front
from mtl.report.table import Column, Report, Row

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

__all__ = ["task_bars", "tradeoff"]

_BEST, _OTHER, _BASELINE = "#d62728", "#1f77b4", "#7f7f7f"


def _label(name: str) -> str:
    return name.replace("__", "\n")


def _direction(report: Report, column: Column) -> str:
    higher = report.higher_is_better.get(column)
    return "" if higher is None else (" (higher is better)" if higher else " (lower is better)")


def _std(value: float) -> float:
    return 0.0 if math.isnan(value) else value


def _legend(report: Report) -> list[Patch]:
    from matplotlib.patches import Patch

    handles = [Patch(color=_BEST, label=f"best by {report.ranked_by}"), Patch(color=_OTHER, label="other")]
    if report.baseline is not None:
        handles.append(Patch(facecolor=_BASELINE, hatch="//", label="single-task"))
    return handles


def task_bars(report: Report, task: str) -> Figure:
    """One panel per compared metric of ``task``: a bar per configuration (rank order) and the single-task
    baseline (grey, hatched), each the mean over seeds with the std as error bar; the best is red."""
    columns = [c for c in report.columns if c[0] == task]
    if not columns:
        raise ValueError(
            f"Expected `task` to be a task of the report {sorted({c[0] for c in report.columns})}, but got {task!r}."
        )
    rows: list[Row] = ([report.baseline] if report.baseline else []) + report.rows
    figure = new_figure(min(3.0 + 0.9 * len(rows), 20.0), 3.6 * len(columns))
    for i, column in enumerate(columns):
        axes = figure.add_subplot(len(columns), 1, i + 1)
        shown = [r for r in rows if column in r.stats]
        means = np.array([r.stats[column].mean for r in shown])
        stds = np.array([_std(r.stats[column].std) for r in shown])
        colours = [_BASELINE if r is report.baseline else (_BEST if r.best else _OTHER) for r in shown]
        bars = axes.bar(
            range(len(shown)), means, yerr=stds, capsize=4, color=colours, edgecolor="black", linewidth=0.5
        )
        for bar, row in zip(bars, shown, strict=True):
            if row is report.baseline:
                bar.set_hatch("//")
        if len(shown):
            low, high = float((means - stds).min()), float((means + stds).max())
            pad = 0.15 * (high - low) if high > low else 0.05 * max(abs(high), 1e-12)
            axes.set_ylim(low - pad, high + pad)
        axes.set_xticks(
            range(len(shown)), [_label(r.name) for r in shown], rotation=30, ha="right", fontsize=8
        )
        axes.set_ylabel(f"{column[1]}{_direction(report, column)}", fontsize=9)
        axes.set_title(f"{task}: test {column[1]} (mean ± std over seeds)", fontsize=10)
        axes.grid(axis="y", alpha=0.3)
        if i == 0:
            axes.legend(handles=_legend(report), fontsize=7, loc="best")
    figure.tight_layout()
    return figure


def tradeoff(report: Report, x: Column, y: Column) -> Figure:
    """Each configuration as a point (seed means, std error bars) in the plane of two task metrics.

    The Pareto front (no other configuration at least as good on both and better on one, directions
    respected) is red and joined by a line; the baselines, two separate single-task models, are a star.
    """
    shown = [r for r in report.rows if x in r.stats and y in r.stats]
    figure = new_figure(6.4, 5.2)
    axes = figure.add_subplot()
    if shown:
        xs = np.array([r.stats[x].mean for r in shown])
        ys = np.array([r.stats[y].mean for r in shown])
        signs = np.array([1.0 if report.higher_is_better.get(c, True) else -1.0 for c in (x, y)])
        front = pareto_front(np.stack([xs, ys], axis=1) * signs)
        xerr = [_std(r.stats[x].std) for r in shown]
        yerr = [_std(r.stats[y].std) for r in shown]
        axes.errorbar(xs, ys, xerr=xerr, yerr=yerr, fmt="none", ecolor="#bbbbbb", elinewidth=1, zorder=1)
        axes.scatter(
            xs[~front], ys[~front], s=40, facecolors="white", edgecolors=_OTHER, label="dominated", zorder=2
        )
        axes.scatter(xs[front], ys[front], s=60, color=_BEST, label="Pareto front", zorder=3)
        order = np.argsort(xs[front])
        axes.plot(xs[front][order], ys[front][order], color=_BEST, linewidth=1, zorder=2)
        for row, px, py in zip(shown, xs, ys, strict=True):
            axes.annotate(_label(row.name), (px, py), fontsize=7, xytext=(4, 4), textcoords="offset points")
    baseline = report.baseline
    if baseline is not None and x in baseline.stats and y in baseline.stats:
        axes.scatter(
            [baseline.stats[x].mean],
            [baseline.stats[y].mean],
            marker="*",
            s=160,
            color="black",
            label="single-task",
            zorder=4,
        )
    axes.set_xlabel(f"{x[0]}: {x[1]}{_direction(report, x)}")
    axes.set_ylabel(f"{y[0]}: {y[1]}{_direction(report, y)}")
    axes.set_title(f"trade-off: {x[0]} vs {y[0]} (test, mean over seeds)", fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    figure.tight_layout()
    return figure
