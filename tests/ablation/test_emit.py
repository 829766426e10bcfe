"""Cluster hand-off: the SLURM array script is valid bash with one index per run; the W&B sweep file parses."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mtl.ablation.emit import slurm_script, wandb_sweep

COMMAND = [
    "/venv/bin/python",
    "-m",
    "mtl.cli",
    "ablate",
    "--config",
    "/c/base config.yaml",
    "--grid",
    "/g.yaml",
]


def test_slurm_script_is_an_array_with_one_index_per_run(tmp_path: Path) -> None:
    text = slurm_script(
        COMMAND, 12, tmp_path / "out", name="mtl-ablate-x", jobs=3, directives=["--gpus=1"], workdir="/w"
    )
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    directives = [line for line in lines if line.startswith("#SBATCH")]
    assert directives == [
        "#SBATCH --job-name=mtl-ablate-x",
        "#SBATCH --array=0-11%3",
        f"#SBATCH --output={tmp_path / 'out' / 'slurm' / '%A_%a.log'}",
        "#SBATCH --gpus=1",
    ]
    # sbatch reads directives only before the first command.
    first_command = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    assert all(lines.index(d) < first_command for d in directives)
    assert (
        lines[-1]
        == "exec /venv/bin/python -m mtl.cli ablate --config '/c/base config.yaml' --grid /g.yaml --index \"$SLURM_ARRAY_TASK_ID\""
    )
    if shutil.which("bash"):
        script = tmp_path / "a.sbatch"
        script.write_text(text)
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert "%" not in slurm_script(COMMAND, 2, tmp_path, name="x").splitlines()[5]


def test_wandb_sweep_is_a_grid_over_run_indices() -> None:
    spec = yaml.safe_load(wandb_sweep(COMMAND, 5, name="mtl-ablate-x", project="proj"))
    assert spec["method"] == "grid" and spec["project"] == "proj" and spec["name"] == "mtl-ablate-x"
    assert spec["parameters"] == {"index": {"values": [0, 1, 2, 3, 4]}}
    assert spec["command"] == ["${env}", *COMMAND, "${args}"]
    assert Path(spec["program"]).name == "cli.py"


def test_an_empty_sweep_cannot_be_emitted(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=">= 1 run"):
        slurm_script(COMMAND, 0, tmp_path, name="x")
    with pytest.raises(ValueError, match=">= 1 run"):
        wandb_sweep(COMMAND, 0, name="x", project="p")
