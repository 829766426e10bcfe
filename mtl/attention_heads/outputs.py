"""Files that ``mtl heads`` writes: importance matrices and pruning curves, as CSV and PNG.

CSV for tools (one matrix per task with a header row; the curve in long format, one row per ranking,
step and task), PNG for reading, the PNGs also logged to the run's dashboards (`mtl.plots.log_figure`).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from mtl.attention_heads.pruning import PruningStep
from mtl.plots import heatmap, log_figure, new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["CURVE_COLUMNS", "curve_figure", "curve_rows", "write_curve", "write_importance"]

CURVE_COLUMNS = ("ranking", "step", "heads_pruned", "share_pruned", "task", "metric", "value", "newly_pruned")


def write_importance(
    importance: Tensor,
    directory: Path,
    name: str,
    title: str,
    loggers: Iterable[Any] = (),
    plot: bool = True,
) -> tuple[Path, Path | None]:
    """``{name}.csv`` (a ``layer`` column, then ``head_0 ... head_{H-1}``) and, with ``plot``, ``{name}.png``
    (a heatmap; returned path ``None`` without)."""
    directory.mkdir(parents=True, exist_ok=True)
    values = importance.detach().double().cpu().tolist()
    csv_path = directory / f"{name}.csv"
    with csv_path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["layer", *(f"head_{h}" for h in range(len(values[0])))])
        writer.writerows([layer, *(f"{v:.6g}" for v in row)] for layer, row in enumerate(values))
    if not plot:
        return csv_path, None
    figure = heatmap(
        importance,
        [f"layer {i}" for i in range(len(values))],
        [str(h) for h in range(len(values[0]))],
        title=title,
        xlabel="head",
        colorbar_label="importance",
        fmt="{:.2g}",
    )
    png_path = log_figure(figure, directory / f"{name}.png", key=f"heads/{name}", loggers=loggers)
    return csv_path, png_path


def curve_rows(
    curves: Mapping[str, Sequence[PruningStep]], metric_names: Mapping[str, str]
) -> list[dict[str, Any]]:
    """The curves in long format: one dict per ranking, step and task (keys `CURVE_COLUMNS`)."""
    rows = []
    for ranking, steps in curves.items():
        for point in steps:
            pruned = " ".join(f"{layer}:{head}" for layer, head in point.newly_pruned)
            for task, value in point.metrics.items():
                rows.append(
                    {
                        "ranking": ranking,
                        "step": point.step,
                        "heads_pruned": point.num_pruned,
                        "share_pruned": round(point.share_pruned, 6),
                        "task": task,
                        "metric": metric_names.get(task, ""),
                        "value": value,
                        "newly_pruned": pruned,
                    }
                )
    return rows


def curve_figure(curves: Mapping[str, Sequence[PruningStep]], metric_names: Mapping[str, str]) -> Figure:
    """One panel per ranking (two per row, one y-scale): each task's metric against the share of heads pruned."""
    cols = min(len(curves), 2)
    rows = -(-len(curves) // cols)
    figure = new_figure(5.5 * cols, 4.0 * rows)
    axes_grid = figure.subplots(rows, cols, squeeze=False, sharey=True).ravel()
    for spare in axes_grid[len(curves) :]:
        spare.set_axis_off()
    for axes, (ranking, steps) in zip(axes_grid, curves.items(), strict=False):
        tasks = list(dict.fromkeys(task for point in steps for task in point.metrics))
        for task in tasks:
            points = [(100 * p.share_pruned, p.metrics[task]) for p in steps if task in p.metrics]
            axes.plot(*zip(*points, strict=True), marker="o", label=f"{task} ({metric_names.get(task, '')})")
        axes.set_title(f"pruned by {ranking} importance" if ranking == "mean" else f"pruned by `{ranking}`")
        axes.set_xlabel("heads pruned (%)")
        axes.set_ylabel("validation metric")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.tight_layout()
    return figure


def write_curve(
    curves: Mapping[str, Sequence[PruningStep]],
    metric_names: Mapping[str, str],
    directory: Path,
    loggers: Iterable[Any] = (),
) -> tuple[Path, Path]:
    """``pruning_curve.csv`` (`curve_rows`) and ``pruning_curve.png`` (`curve_figure`) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    csv_path = directory / "pruning_curve.csv"
    with csv_path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=CURVE_COLUMNS)
        writer.writeheader()
        writer.writerows(curve_rows(curves, metric_names))
    png_path = log_figure(
        curve_figure(curves, metric_names),
        directory / "pruning_curve.png",
        key="heads/pruning_curve",
        loggers=loggers,
    )
    return csv_path, png_path
