"""``mtl report RUN_DIR``: tables and plots of an ``mtl ablate`` sweep.

    mtl report RUN_DIR [--metrics NAME ...] [--out DIR] [--wandb [PROJECT]]

Reads ``RUN_DIR/sweep.json`` and every finished run's ``results.json`` and writes, to ``DIR`` (default
``RUN_DIR``):

* ``report.md``: per configuration and task the test metric(s) mean ± std over seeds, Δm against the
  single-task baselines (LibMTL's definition), the rank by Δm and the best marked;
* ``report.csv``: the same numbers, one row per configuration x task x metric;
* ``bars_<task>.png``: a bar per configuration with error bars, beside the single-task baseline;
* ``tradeoff_<a>_<b>.png`` for each pair of tasks (up to four tasks): the configurations in the plane
  of two tasks' metrics, the Pareto front highlighted.

By default each task's primary metric (its head's ``primary_metric``) is compared; ``--metrics``
names others (Δm then averages a task's metrics before averaging tasks). A sweep still running is
reported as it stands. ``--wandb`` logs the table and the figures to a W&B run (offline without
credentials).
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Sequence
from pathlib import Path

from mtl.plots import log_figure
from mtl.report.figures import task_bars, tradeoff
from mtl.report.results import collect
from mtl.report.table import Report, build_report
from mtl.report.writers import write_csv, write_markdown

__all__ = ["build_parser", "main", "write_report"]

#: Trade-off plots for every pair of tasks up to this many tasks (6 plots).
MAX_TRADEOFF_TASKS = 4


def build_parser() -> argparse.ArgumentParser:
    """The ``mtl report`` options."""
    parser = argparse.ArgumentParser(prog="mtl report", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="the sweep folder (`--out` of `mtl ablate`)")
    parser.add_argument(
        "--metrics", nargs="+", default=None, help="metric names to compare (default: primary)"
    )
    parser.add_argument("--out", default=None, help="where to write the report (default: RUN_DIR)")
    parser.add_argument(
        "--wandb",
        nargs="?",
        const="mtl",
        default=None,
        metavar="PROJECT",
        help="log to W&B (project default mtl)",
    )
    return parser


def _figures(report: Report, out: Path) -> list[Path]:
    written = []
    tasks = list(dict.fromkeys(task for task, _ in report.columns))
    for task in tasks:
        written.append(log_figure(task_bars(report, task), out / f"bars_{task}.png", f"ablation/bars_{task}"))
    if 2 <= len(tasks) <= MAX_TRADEOFF_TASKS:
        for a, b in itertools.combinations(tasks, 2):
            x = next(c for c in report.columns if c[0] == a)
            y = next(c for c in report.columns if c[0] == b)
            written.append(
                log_figure(
                    tradeoff(report, x, y), out / f"tradeoff_{a}_{b}.png", f"ablation/tradeoff_{a}_{b}"
                )
            )
    return written


def write_report(
    run_dir: str | Path, out: str | Path | None = None, metrics: Sequence[str] | None = None
) -> tuple[Report, list[Path]]:
    """Write ``report.md``, ``report.csv`` and the figures; returns the report and the files written."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir
    report = build_report(collect(run_dir, metrics))
    figures = _figures(report, out)
    files = [
        write_markdown(report, out / "report.md", figures),
        write_csv(report, out / "report.csv"),
        *figures,
    ]
    return report, files


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``mtl report`` (dispatched from `mtl.cli.main`)."""
    args = build_parser().parse_args(argv)
    try:
        report, files = write_report(args.run_dir, args.out, args.metrics)
    except FileNotFoundError as err:
        raise SystemExit(f"mtl report: {err}") from None
    for row in report.rows:
        score = "n/a" if row.score is None else f"{row.score:+.3f}"
        print(f"{row.rank or '-':>3} {'*' if row.best else ' '} {row.name:<40} {report.ranked_by} {score}")
    print("wrote " + ", ".join(str(f) for f in files))
    if args.wandb:
        from mtl.report.wandb_log import log_report

        out = Path(args.out or args.run_dir)
        local = log_report(
            out / "report.csv",
            [f for f in files if f.suffix == ".png"],
            project=args.wandb,
            name=f"report-{report.name}",
            folder=out,
        )
        print(f"logged to W&B project {args.wandb}" + (f" ({local})" if local else ""))
