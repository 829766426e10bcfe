"""Ablation sweeps: a grid of configurations x seeds plus single-task baselines, each an ``mtl fit``.

``mtl ablate`` (`mtl.ablation.command`) plans a sweep from base configs and a grid file (`load_grid`),
checks every run with the config parser (`plan_sweep`), then runs it resumably (`run_sweep`) or writes
a cluster script (`slurm_script`, `wandb_sweep`); ``OUT/sweep.json`` (`Manifest`) is what
``mtl report`` reads.
"""

from mtl.ablation.baselines import single_task_overlay
from mtl.ablation.config_parser import ConfigParser, ConfigRejected
from mtl.ablation.emit import slurm_script, wandb_sweep
from mtl.ablation.grid import Axis, Choice, Combo, Grid, GridError, load_grid
from mtl.ablation.manifest import Baseline, Configuration, Manifest, RunSpec
from mtl.ablation.plan import Sweep, SweepError, plan_sweep
from mtl.ablation.runner import FailedRun, run_sweep

__all__ = [
    "Axis",
    "Baseline",
    "Choice",
    "Combo",
    "ConfigParser",
    "ConfigRejected",
    "Configuration",
    "FailedRun",
    "Grid",
    "GridError",
    "Manifest",
    "RunSpec",
    "Sweep",
    "SweepError",
    "load_grid",
    "plan_sweep",
    "run_sweep",
    "single_task_overlay",
    "slurm_script",
    "wandb_sweep",
]
