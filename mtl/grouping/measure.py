"""One joint training run with an affinity callback attached, in this process.

`measure_affinity` builds the user's ``mtl fit`` run with the ``mtl`` command's own parser (the same
configs, overrides and defaults), switches the data to the ``all_tasks`` layout (every callback
compares every task on the same step), puts logs and checkpoints under the output directory, adds the
callback and fits. It runs in this process, not as a `mtl.runs.run_fit` subprocess, because the
result is the callback object itself: its matrix, and for data maps the clustering
(`DataMapAffinity.memberships`), are read from it directly; the callback also writes
``affinity.csv`` and ``affinity.png`` to the output directory and logs the heatmap to the run's
loggers (W&B: the dashboard) when fitting ends.

Under a multi-process strategy Lightning re-launches this command in every process; all of them
take part in the fit, and only the global-zero process goes on to write files (`is_global_zero`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import WandbLogger

from mtl.grouping.affinity import AffinityCallback
from mtl.grouping.datamap import DataMapAffinity
from mtl.grouping.gradient_cosine import GradientCosineAffinity
from mtl.grouping.tag import TAGAffinity
from mtl.runs import run_overlay

__all__ = ["AFFINITY_METHODS", "make_callback", "measure_affinity"]

#: The measured affinity methods and their callbacks.
AFFINITY_METHODS: dict[str, type[AffinityCallback]] = {
    "tag": TAGAffinity,
    "cosine": GradientCosineAffinity,
    "datamap": DataMapAffinity,
}


def make_callback(
    method: str, directory: Path, every_n_steps: int | None = None, tag_step: str = "optimizer"
) -> AffinityCallback:
    """The callback of ``method`` writing to ``directory``.

    ``every_n_steps`` applies to the step-based methods (``tag``, ``cosine``; their default when
    ``None``); data maps are recorded once per epoch. ``tag_step`` is `TAGAffinity`'s ``step``.
    """
    if method not in AFFINITY_METHODS:
        raise ValueError(f"Expected `method` to be one of {sorted(AFFINITY_METHODS)}, but got {method!r}.")
    if method == "datamap":
        return DataMapAffinity(directory=directory)
    steps = {} if every_n_steps is None else {"every_n_steps": every_n_steps}
    if method == "tag":
        return TAGAffinity(step=tag_step, directory=directory, **steps)  # type: ignore[arg-type]
    return GradientCosineAffinity(directory=directory, **steps)


def measure_affinity(
    configs: Sequence[str | Path],
    callback: AffinityCallback,
    run_dir: Path,
    *,
    wandb: Mapping[str, Any] | None = None,
    args: Sequence[str] = (),
) -> Trainer:
    """Fit the configured model with ``callback`` attached; returns the trainer (for `is_global_zero`).

    Args:
        configs: the user's ``--config`` files.
        callback: the affinity callback (its ``directory`` receives the matrix and heatmap).
        run_dir: the run's logs and checkpoints.
        wandb: ``init_args`` of a W&B logger (the dashboard), or ``None`` for the CSV logger only.
        args: further ``mtl fit`` arguments (e.g. ``["--trainer.max_epochs", "1"]``).
    """
    from mtl.cli import build_cli

    run_dir.mkdir(parents=True, exist_ok=True)
    overlay = {**run_overlay(run_dir, f"affinity-{callback.method}", wandb), "data": {"layout": "all_tasks"}}
    overlay_path = run_dir / "overlay.yaml"
    overlay_path.write_text(yaml.safe_dump(overlay))
    cli = build_cli([*(item for c in [*configs, overlay_path] for item in ("--config", str(c))), *args])
    cli.trainer.callbacks.append(callback)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    for logger in cli.trainer.loggers:
        # Close the W&B run (Lightning leaves it open for a later `test`), so that it is complete on the
        # dashboard and nothing logged later in this process (HOA's heatmap) lands in it.
        if isinstance(logger, WandbLogger) and cli.trainer.is_global_zero:
            logger.experiment.finish()
    return cli.trainer
