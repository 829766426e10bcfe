"""The ``mtl group --train`` table: each task all-together, in its group, and alone, with Δm.

For every task: its primary test metric in the run of all tasks together, in the run of the group
that serves it, and in its single-task run; and the relative gain (%) of the first two over the
single-task run, `mtl.delta_m.task_deltas` (averaged over all the task's test metrics, signed so that
positive is better). The last row holds Δm (`mtl.delta_m.delta_m`, the mean of the tasks' gains) of
all-together and of the grouping.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtl.delta_m import task_deltas
from mtl.grouping.training import task_metrics

__all__ = ["ComparisonRow", "compare", "to_markdown", "write_comparison"]

Results = Mapping[str, Any]


@dataclass(frozen=True)
class ComparisonRow:
    """One task's line (``task = "Δm"`` for the summary line, whose metric values are empty)."""

    task: str
    metric: str
    group: str
    together: float | None
    grouped: float | None
    single: float | None
    delta_together: float
    delta_grouped: float


def compare(
    tasks: Sequence[str],
    primary: Mapping[str, str],
    together: Results,
    grouped: Mapping[str, Results],
    serving: Mapping[str, str],
    single: Mapping[str, Results],
) -> list[ComparisonRow]:
    """The table's rows.

    Args:
        tasks: the tasks, in order.
        primary: each task's primary metric (shown in the table).
        together: the results of the run with every task.
        grouped: results of each group's run, by group name.
        serving: the name of the group that serves each task.
        single: each task's single-task results.
    """
    rows: list[ComparisonRow] = []
    for task in tasks:
        base, directions = task_metrics(single[task], task)
        mine_all, _ = task_metrics(together, task)
        mine_group, _ = task_metrics(grouped[serving[task]], task)
        spec = {task: directions}
        rows.append(
            ComparisonRow(
                task=task,
                metric=primary[task],
                group=serving[task],
                together=mine_all.get(primary[task]),
                grouped=mine_group.get(primary[task]),
                single=base.get(primary[task]),
                delta_together=task_deltas({task: mine_all}, {task: base}, spec)[task],
                delta_grouped=task_deltas({task: mine_group}, {task: base}, spec)[task],
            )
        )
    rows.append(
        ComparisonRow(
            task="Δm",
            metric="",
            group="",
            together=None,
            grouped=None,
            single=None,
            delta_together=sum(r.delta_together for r in rows) / len(rows),
            delta_grouped=sum(r.delta_grouped for r in rows) / len(rows),
        )
    )
    return rows


HEADER = ("task", "metric", "group", "all together", "its group", "single task", "Δ% all", "Δ% group")


def _cells(row: ComparisonRow) -> list[str]:
    def number(value: float | None) -> str:
        return "" if value is None else f"{value:.4f}"

    return [
        row.task,
        row.metric,
        row.group,
        number(row.together),
        number(row.grouped),
        number(row.single),
        f"{row.delta_together:+.2f}",
        f"{row.delta_grouped:+.2f}",
    ]


def to_markdown(rows: Sequence[ComparisonRow]) -> str:
    """A Markdown table of the rows."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_comparison(directory: Path, rows: Sequence[ComparisonRow]) -> dict[str, Path]:
    """Write ``comparison.md`` and ``comparison.csv`` (full precision) under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    markdown = directory / "comparison.md"
    markdown.write_text(to_markdown(rows))
    table = directory / "comparison.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for row in rows:
            writer.writerow(
                [
                    row.task,
                    row.metric,
                    row.group,
                    *("" if v is None else repr(v) for v in (row.together, row.grouped, row.single)),
                    repr(row.delta_together),
                    repr(row.delta_grouped),
                ]
            )
    return {"markdown": markdown, "csv": table}
