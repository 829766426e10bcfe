"""The report as Markdown (for reading and papers) and as long-format CSV (for analysis)."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

from mtl.report.table import Column, Report, Row, Stat

__all__ = ["CSV_FIELDS", "write_csv", "write_markdown"]

CSV_FIELDS = [
    "configuration",
    "task",
    "metric",
    "higher_is_better",
    "mean",
    "std",
    "n_seeds",
    "baseline_mean",
    "baseline_std",
    "task_delta_pct",
    "delta_m_pct",
    "delta_m_std",
    "rank",
    "best",
]


def _number(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"


def _cell(summary: Stat | None) -> str:
    if summary is None:
        return "n/a"
    return _number(summary.mean) + ("" if math.isnan(summary.std) else f" ± {_number(summary.std)}")


def _arrow(report: Report, column: Column) -> str:
    higher = report.higher_is_better.get(column)
    return "" if higher is None else (" ↑" if higher else " ↓")


def _bold(text: str, on: bool) -> str:
    return f"**{text}**" if on else text


def _delta(row: Row) -> str:
    if row.delta_m is None:
        return "n/a"
    spread = "" if row.delta_m_std is None else f" ± {row.delta_m_std:.2f}"
    return f"{row.delta_m:+.2f}{spread}"


def write_markdown(report: Report, path: str | Path, figures: Sequence[str | Path] = ()) -> Path:
    """Write ``report.md``: the ranked table, the per-task changes, notes and the figures (relative links)."""
    path = Path(path)
    seeds = len(report.seeds)
    headers = ["rank", "configuration", *report.axes]
    headers += [f"{task} {metric}{_arrow(report, (task, metric))}" for task, metric in report.columns]
    with_delta = report.ranked_by == "Δm"
    headers += ["Δm (%)" if with_delta else "test/mean", "seeds"]
    lines = [
        f"# Ablation report: {report.name}",
        "",
        f"{len(report.rows)} configurations x {seeds} seeds ({', '.join(map(str, report.seeds))}); axes: "
        f"{', '.join(report.axes) or 'none'}. Test metrics: mean ± sample std over the finished seeds.",
    ]
    if with_delta:
        lines.append(
            "Δm: the multi-task gain over the single-task baselines (LibMTL's definition, on the seed means; "
            "positive is better), ± the std of the per-seed Δm (each seed against the baseline of the same "
            "seed). Ranked by Δm; ★ marks the best."
        )
    else:
        lines.append(
            "No single-task baselines: ranked by test/mean (the mean of the tasks' primary metrics); ★ marks the best."
        )
    lines += ["", "| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in report.rows:
        rank = "-" if row.rank is None else f"{row.rank}{' ★' if row.best else ''}"
        score = _delta(row) if with_delta else ("n/a" if row.score is None else _number(row.score))
        cells = [rank, _bold(row.name, row.best), *(row.settings.get(a, "") for a in report.axes)]
        cells += [_cell(row.stats.get(c)) for c in report.columns]
        cells += [_bold(score, row.best), f"{row.seeds}/{seeds}"]
        lines.append("| " + " | ".join(cells) + " |")
    if report.baseline is not None:
        cells = ["-", "single-task (each task alone)", *("" for _ in report.axes)]
        cells += [_cell(report.baseline.stats.get(c)) for c in report.columns]
        cells += ["0 (reference)" if with_delta else "-", f"{report.baseline.seeds}/{seeds}"]
        lines.append("| " + " | ".join(cells) + " |")
    if with_delta:
        tasks = list(dict.fromkeys(task for task, _ in report.columns))
        lines += [
            "",
            "## Change per task against its single-task baseline (%)",
            "",
            "| configuration | " + " | ".join(tasks) + " | Δm |",
            "|" + "|".join("---" for _ in range(len(tasks) + 2)) + "|",
        ]
        for row in report.rows:
            cells = [f"{row.task_delta[t]:+.2f}" if t in row.task_delta else "n/a" for t in tasks]
            lines.append(f"| {row.name} | " + " | ".join(cells) + f" | {_delta(row)} |")
    notes = [f"- `{row.name}`: {row.note}" for row in report.rows if row.note]
    if notes:
        lines += ["", "## Notes", "", *notes]
    if figures:
        lines += ["", "## Figures", ""]
        lines += [f"![{Path(f).stem}]({Path(f).name})" for f in figures]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _blank(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else repr(float(value))


def write_csv(report: Report, path: str | Path) -> Path:
    """Write ``report.csv``: one row per configuration x task x metric (the baselines as `single-task`),
    plus a column per grid axis with the configuration's choice."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = report.baseline
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*CSV_FIELDS, *report.axes])
        writer.writeheader()
        for row in [*report.rows, *([base] if base is not None else [])]:
            for column in report.columns:
                summary = row.stats.get(column)
                if summary is None:
                    continue
                reference = base.stats.get(column) if base is not None else None
                higher = report.higher_is_better.get(column)
                writer.writerow(
                    {
                        "configuration": row.name,
                        "task": column[0],
                        "metric": column[1],
                        "higher_is_better": "" if higher is None else str(higher).lower(),
                        "mean": _blank(summary.mean),
                        "std": _blank(summary.std),
                        "n_seeds": summary.n,
                        "baseline_mean": _blank(reference.mean if reference else None),
                        "baseline_std": _blank(reference.std if reference else None),
                        "task_delta_pct": _blank(row.task_delta.get(column[0])),
                        "delta_m_pct": _blank(row.delta_m),
                        "delta_m_std": _blank(row.delta_m_std),
                        "rank": "" if row.rank is None else row.rank,
                        "best": str(row.best).lower() if row is not base else "",
                        **{axis: row.settings.get(axis, "") for axis in report.axes},
                    }
                )
    return path
