"""Run one ``mtl fit`` in its own directory, resumably, and read back its test metrics.

The building block of the commands that train many models (``mtl ablate``, ``mtl group --train``):
each run is a subprocess (so runs cannot leak state into each other and can run in parallel) whose
directory holds everything about it:

* ``overlay.yaml``: the run's own settings on top of the user's configs (its root directory and
  loggers, so that checkpoints and logs land in the run directory);
* ``log.txt``: the run's output;
* checkpoints (``**/last.ckpt``): an interrupted run resumes from the newest one;
* ``results.json``: written atomically when the run has finished, ``{"metrics": {name: value},
  "higher_is_better": {name: bool}}`` (test metrics and the best validation score); a run that has it
  is complete and is never run again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = ["RunFailed", "latest_checkpoint", "read_results", "run_fit", "run_overlay"]

RESULTS = "results.json"


class RunFailed(RuntimeError):
    """An ``mtl fit`` subprocess exited with an error; the message ends with its last output lines."""


def read_results(run_dir: Path) -> dict[str, Any] | None:
    """The finished run's metrics, or ``None`` when the run has not finished."""
    path = Path(run_dir) / RESULTS
    return json.loads(path.read_text()) if path.is_file() else None


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest ``last.ckpt`` under ``run_dir`` (where an interrupted run resumes), or ``None``."""
    found = sorted(Path(run_dir).rglob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def run_overlay(run_dir: Path, name: str, wandb: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The config overlay that puts a run's logs and checkpoints under ``run_dir``.

    A CSV logger always; a Weights & Biases logger too when ``wandb`` is given (its ``init_args``,
    e.g. ``{"project": "mtl", "group": "sweep-1"}``; offline without credentials).
    """
    loggers: list[dict[str, Any]] = [
        {
            "class_path": "lightning.pytorch.loggers.CSVLogger",
            "init_args": {"save_dir": str(run_dir), "name": "csv"},
        }
    ]
    if wandb is not None:
        init = {"project": "mtl", **wandb, "name": name, "save_dir": str(run_dir)}
        loggers.append({"class_path": "mtl.loggers.WandbLogger", "init_args": init})
    return {"trainer": {"default_root_dir": str(run_dir), "logger": loggers}}


def run_fit(
    configs: Sequence[str | Path],
    run_dir: str | Path,
    args: Sequence[str] = (),
    *,
    name: str | None = None,
    wandb: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Train and test one configuration in ``run_dir``; returns its ``results.json``.

    A finished run (``results.json`` present) is not run again; an interrupted one resumes from its
    newest ``last.ckpt`` (the configs need a `ModelCheckpoint` with ``save_last: true`` for that).

    Args:
        configs: the ``--config`` files, later ones overriding earlier ones.
        run_dir: the run's directory (created).
        args: further command-line arguments, e.g. ``["--seed_everything", "1"]``.
        name: the run's name on the dashboard (default: the directory's name).
        wandb: ``init_args`` of a W&B logger, or ``None`` for the CSV logger only.
        env: extra environment variables for the subprocess.
    """
    run_dir = Path(run_dir)
    done = read_results(run_dir)
    if done is not None:
        return done
    run_dir.mkdir(parents=True, exist_ok=True)
    overlay = run_dir / "overlay.yaml"
    overlay.write_text(yaml.safe_dump(run_overlay(run_dir, name or run_dir.name, wandb)))
    command = [sys.executable, "-m", "mtl.cli", "fit"]
    for config in configs:
        command += ["--config", str(config)]
    command += [
        "--config",
        str(overlay),
        *args,
        "--test_after_fit",
        "true",
        "--results_file",
        str(run_dir / RESULTS),
    ]
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is not None:
        command += ["--ckpt_path", str(checkpoint)]
    log = run_dir / "log.txt"
    with log.open("a") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        code = subprocess.run(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        ).returncode
    results = read_results(run_dir)
    if code != 0 or results is None:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RunFailed(
            f"Expected `mtl fit` in {run_dir} to finish, but it exited with code {code}. Command: "
            f"{' '.join(command)}\nLast lines of {log}:\n{tail}"
        )
    return results
