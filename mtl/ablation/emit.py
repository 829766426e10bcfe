"""Hand a planned sweep to a cluster: a SLURM array script or a W&B sweep file, one run per index.

Both call ``mtl ablate`` again with the same arguments plus ``--index i``, which runs only the ``i``-th
run of the manifest (``OUT/sweep.json``): the plan stays in one place, and because finished runs are
skipped and interrupted ones resume, resubmitting the script or restarting an agent is safe.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = ["slurm_script", "wandb_sweep"]


def slurm_script(
    command: Sequence[str],
    count: int,
    out: str | Path,
    *,
    name: str,
    jobs: int | None = None,
    directives: Sequence[str] = (),
    workdir: str | Path = ".",
) -> str:
    """An ``sbatch`` script whose array task ``i`` runs ``command --index i``.

    Args:
        command: the ``mtl ablate`` command (without ``--index``).
        count: the number of runs (array indices ``0 .. count-1``).
        out: the sweep folder (SLURM logs go to ``out/slurm/``).
        name: the job name.
        jobs: at most this many array tasks at once (``--array=...%jobs``), or no limit.
        directives: further ``#SBATCH`` options, e.g. ``["--gpus=1", "--time=02:00:00"]``.
        workdir: the folder the runs start in (relative config paths resolve from it).
    """
    if count < 1:
        raise ValueError(f"Expected `count` to be >= 1 run, but got {count}.")
    limit = f"%{jobs}" if jobs else ""
    lines = [
        "#!/bin/bash",
        f"# `mtl ablate` sweep {name}: array task i runs run i of {Path(out) / 'sweep.json'}.",
        f"# Submit: sbatch {Path(out) / 'ablate.sbatch'}      Report when done: mtl report {out}",
        "# Finished runs are skipped and interrupted ones resume: resubmitting is safe.",
        f"#SBATCH --job-name={name}",
        f"#SBATCH --array=0-{count - 1}{limit}",
        f"#SBATCH --output={Path(out) / 'slurm' / '%A_%a.log'}",
        *(f"#SBATCH {d}" for d in directives),
        "set -euo pipefail",
        f"cd {shlex.quote(str(workdir))}",
        f'exec {shlex.join(command)} --index "$SLURM_ARRAY_TASK_ID"',
    ]
    return "\n".join(lines) + "\n"


def wandb_sweep(command: Sequence[str], count: int, *, name: str, project: str) -> str:
    """A W&B sweep file (grid over ``index``) whose agent runs ``command --index=i`` once per run.

    Start it with ``wandb sweep FILE``, then ``wandb agent ENTITY/PROJECT/SWEEP_ID`` on each machine.
    """
    if count < 1:
        raise ValueError(f"Expected `count` to be >= 1 run, but got {count}.")
    spec: dict[str, Any] = {
        "name": name,
        "project": project,
        "program": str(Path(__file__).resolve().parents[1] / "cli.py"),
        "method": "grid",
        "parameters": {"index": {"values": list(range(count))}},
        "command": ["${env}", *command, "${args}"],
    }
    header = (
        f"# `mtl ablate` sweep {name} as a W&B sweep: one agent run = one run of its sweep.json (`index`).\n"
        f"# Create: wandb sweep --project {shlex.quote(project)} THIS_FILE;  then on each machine: "
        "wandb agent ENTITY/PROJECT/SWEEP_ID\n"
    )
    return header + yaml.safe_dump(spec, sort_keys=False)
