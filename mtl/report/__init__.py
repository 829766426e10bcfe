"""Reports of ablation sweeps: tables (Markdown, CSV) and figures from ``mtl ablate``'s folders.

``mtl report RUN_DIR`` (`mtl.report.command`) reads the manifest and the runs' results (`collect`),
computes mean ± std over seeds, Δm against the single-task baselines and the ranking (`build_report`),
and writes them (`write_markdown`, `write_csv`, `task_bars`, `tradeoff`).
"""

from mtl.report.command import write_report
from mtl.report.figures import task_bars, tradeoff
from mtl.report.pareto import pareto_front
from mtl.report.results import BASELINE, Collected, Scores, collect
from mtl.report.table import Report, Row, Stat, build_report, stat
from mtl.report.writers import write_csv, write_markdown

__all__ = [
    "BASELINE",
    "Collected",
    "Report",
    "Row",
    "Scores",
    "Stat",
    "build_report",
    "collect",
    "pareto_front",
    "stat",
    "task_bars",
    "tradeoff",
    "write_csv",
    "write_markdown",
    "write_report",
]
