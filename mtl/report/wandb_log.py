"""Log a report to Weights & Biases: the CSV table as a ``wandb.Table`` and every figure as an image.

One W&B run per report (job type ``report``), offline when no credentials are set (upload later with
``wandb sync``), like the training runs (`mtl.loggers.WandbLogger`).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

from mtl.imports import require
from mtl.loggers import wandb_credentials

__all__ = ["log_report"]


def _typed(cell: str) -> float | str | None:
    """A CSV cell as a number where it is one (so W&B can sort and plot the column)."""
    if cell == "":
        return None
    try:
        return float(cell)
    except ValueError:
        return cell


def log_report(
    csv_path: str | Path, figures: Sequence[str | Path], *, project: str, name: str, folder: str | Path
) -> Path | None:
    """Log ``report.csv`` (as ``ablation/table``) and the figures (``ablation/<file stem>``) to one W&B run.

    Args:
        csv_path: the report's CSV.
        figures: PNG files.
        project: the W&B project.
        name: the run's name (e.g. ``report-<sweep name>``).
        folder: where W&B keeps its files (``<folder>/wandb``).

    Returns:
        The run's local folder (what ``wandb sync`` uploads when offline), or ``None`` if W&B is disabled.
    """
    wandb = require("wandb", "wandb", "Logging a report to W&B")
    with Path(csv_path).open(newline="") as handle:
        rows = list(csv.reader(handle))
    offline = not wandb_credentials() and not os.environ.get("WANDB_MODE")
    Path(folder).mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=project,
        name=name,
        job_type="report",
        dir=str(folder),
        mode="offline" if offline else None,
    )
    try:
        data = [[_typed(cell) for cell in row] for row in rows[1:]]
        payload = {"ablation/table": wandb.Table(columns=rows[0], data=data)}
        payload.update({f"ablation/{Path(f).stem}": wandb.Image(str(f)) for f in figures})
        run.log(payload)
        local = Path(run.dir).parent if getattr(run, "dir", None) else None
    finally:
        run.finish()
    return local
