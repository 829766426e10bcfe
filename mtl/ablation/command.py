"""``mtl ablate``: run every configuration of a grid x seeds, plus single-task baselines, resumably.

    mtl ablate --config BASE.yaml [--config ...] --grid GRID.yaml [--seeds N] [--out DIR] [--jobs N]
               [--emit slurm|wandb] [--baselines/--no-baselines] [--dry-run]
               [--launcher auto|subprocess|forkserver] [--wandb PROJECT] [--sbatch OPTION ...]

Every run is an ordinary ``mtl fit`` (via `mtl.runs.run_fit`) in ``OUT/<configuration>/seed<k>/``;
``OUT/sweep.json`` records the plan and ``mtl report OUT`` turns the results into tables and plots.
All runs are checked with the config parser before the first one starts. Run the same command again
to resume an interrupted sweep: finished runs are skipped, interrupted ones resume from their last
checkpoint. ``--emit`` writes a SLURM array script or a W&B sweep file instead of running (each index
runs ``mtl ablate ... --index i``, i.e. one run of the plan).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from mtl.ablation.emit import slurm_script, wandb_sweep
from mtl.ablation.grid import GridError, load_grid
from mtl.ablation.manifest import Manifest
from mtl.ablation.plan import Sweep, SweepError, plan_sweep
from mtl.ablation.runner import run_sweep
from mtl.runs import ForkServerLauncher, Launcher, SubprocessLauncher

__all__ = ["build_parser", "main"]


def _seeds(text: str) -> list[int]:
    """``"3"`` -> seeds 0, 1, 2; ``"1,5,7"`` -> those seeds; ``"5,"`` -> seed 5 alone."""
    try:
        values = [int(v) for v in text.split(",") if v] if "," in text else list(range(int(text)))
    except ValueError:
        values = []
    if not values or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(
            f"Expected --seeds to be a count >= 1 (e.g. 3 for seeds 0, 1, 2) or distinct seeds (e.g. 1,5,7; "
            f"one seed: 5,), but got {text!r}."
        )
    return values


def _seeds_text(seeds: list[int]) -> str:
    """The ``--seeds`` text that `_seeds` reads back as ``seeds``."""
    if seeds == list(range(len(seeds))):
        return str(len(seeds))
    return ",".join(map(str, seeds)) + ("," if len(seeds) == 1 else "")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"Expected an integer >= 1, but got {text!r}.")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    """The ``mtl ablate`` options."""
    parser = argparse.ArgumentParser(prog="mtl ablate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", required=True, help="base config (repeatable)")
    parser.add_argument("--grid", required=True, help="the grid file (axes of overlays or dotted keys)")
    parser.add_argument(
        "--seeds",
        type=_seeds,
        default=[0],
        help="N (seeds 0..N-1, default 1) or a list: 1,5,7 (one seed: 5,)",
    )
    parser.add_argument("--out", default=None, help="sweep folder (default: runs/ablation/<grid name>)")
    parser.add_argument(
        "--jobs", type=_positive, default=1, help="runs at a time on this machine (default 1)"
    )
    parser.add_argument(
        "--emit", choices=("slurm", "wandb"), help="write a cluster script instead of running"
    )
    parser.add_argument(
        "--baselines",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run each task alone as the Δm reference (default: yes)",
    )
    parser.add_argument("--dry-run", action="store_true", help="check and list the runs; run nothing")
    parser.add_argument(
        "--launcher",
        choices=("auto", "subprocess", "forkserver"),
        default="auto",
        help="how runs start: a fresh interpreter each, or forks of one preloaded server (saves the import "
        "time of every run; one-process runs only). auto: forkserver on Linux for one-process runs.",
    )
    parser.add_argument("--wandb", metavar="PROJECT", default=None, help="log every run to this W&B project")
    parser.add_argument("--sbatch", action="append", default=[], help="extra #SBATCH option for --emit slurm")
    parser.add_argument("--index", type=int, default=None, help=argparse.SUPPRESS)
    return parser


def _launcher(choice: str, sweep: Sweep, runs: int) -> Launcher:
    if choice == "forkserver" and not sweep.single_process:
        raise SystemExit(
            "Expected --launcher forkserver only for runs on one device, but the configs use several devices "
            "or nodes (their strategies re-launch a fresh interpreter). Use --launcher subprocess."
        )
    fork = choice == "forkserver" or (
        choice == "auto" and sys.platform == "linux" and sweep.single_process and runs > 1
    )
    return ForkServerLauncher(sweep.modules) if fork else SubprocessLauncher()


def _rerun_command(args: argparse.Namespace, out: Path, wandb_project: str | None) -> list[str]:
    """This sweep's ``mtl ablate`` command, with absolute paths (for cluster scripts)."""
    command = [sys.executable, "-m", "mtl.cli", "ablate"]
    for config in args.config:
        command += ["--config", str(Path(config).resolve())]
    command += ["--grid", str(Path(args.grid).resolve()), "--seeds", _seeds_text(args.seeds)]
    command += ["--out", str(out), "--launcher", "subprocess"]
    if not args.baselines:
        command.append("--no-baselines")
    if wandb_project:
        command += ["--wandb", wandb_project]
    return command


def _summary(sweep: Sweep) -> str:
    m = sweep.manifest
    seeds = len(m.seeds)
    return (
        f"sweep {m.name}: {len(m.configurations)} configurations x {seeds} seeds + {len(m.baselines)} single-task "
        f"baselines x {seeds} seeds = {len(m.runs)} runs; tasks {m.tasks}"
    )


def _emit(args: argparse.Namespace, sweep: Sweep) -> None:
    out, count = sweep.out, len(sweep.manifest.runs)
    name = f"mtl-ablate-{sweep.manifest.name}"
    if args.emit == "slurm":
        path = out / "ablate.sbatch"
        command = _rerun_command(args, out, args.wandb)
        path.write_text(
            slurm_script(
                command, count, out, name=name, jobs=args.jobs, directives=args.sbatch, workdir=Path.cwd()
            )
        )
        print(f"wrote {path}: sbatch {shlex.quote(str(path))}   (then: mtl report {out})")
    else:
        project = args.wandb or "mtl"
        path = out / "wandb_sweep.yaml"
        path.write_text(wandb_sweep(_rerun_command(args, out, project), count, name=name, project=project))
        print(
            f"wrote {path}: wandb sweep --project {project} {path}; then wandb agent ENTITY/{project}/SWEEP_ID"
        )


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``mtl ablate`` (dispatched from `mtl.cli.main`)."""
    args = build_parser().parse_args(argv)
    out = Path(args.out or Path("runs") / "ablation" / Path(args.grid).stem).resolve()
    try:
        grid = load_grid(args.grid)
        sweep = plan_sweep(args.config, grid, args.seeds, out, baselines=args.baselines)
    except (GridError, SweepError) as err:
        raise SystemExit(f"mtl ablate: {err}") from None
    runs = sweep.manifest.runs
    if args.index is not None and not 0 <= args.index < len(runs):
        raise SystemExit(
            f"Expected --index in [0, {len(runs)}) (one per run of the sweep), but got {args.index}."
        )
    print(_summary(sweep))
    if args.dry_run:
        for i, run in enumerate(runs):
            configs = [item for config in run.configs for item in ("--config", config)]
            print(f"[{i}] {run.dir}: mtl fit {shlex.join([*configs, *run.args])}")
        return
    _note_replaced_manifest(sweep)
    sweep.prepare()
    if args.emit:
        _emit(args, sweep)
        return
    chosen = [runs[args.index]] if args.index is not None else runs
    wandb = {"project": args.wandb} if args.wandb else None
    started = time.perf_counter()
    try:
        failures = run_sweep(
            out, chosen, jobs=args.jobs, launcher=_launcher(args.launcher, sweep, len(chosen)), wandb=wandb
        )
    except KeyboardInterrupt:
        raise SystemExit(
            "mtl ablate: interrupted. Run the same command again to resume: finished runs are kept and "
            "interrupted ones continue from their last checkpoint."
        ) from None
    minutes = (time.perf_counter() - started) / 60
    if failures:
        for failure in failures:
            print(f"\n{failure.run.label} failed:\n{failure.error}", file=sys.stderr)
        raise SystemExit(
            f"mtl ablate: {len(failures)} of {len(chosen)} runs failed ({minutes:.1f} min); fix them and run the "
            "same command again (finished runs are kept)."
        )
    print(f"all {len(chosen)} runs finished ({minutes:.1f} min). Report: mtl report {out}")


def _note_replaced_manifest(sweep: Sweep) -> None:
    try:
        previous = Manifest.read(sweep.out)
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return
    now = sweep.manifest
    if (previous.grid, previous.configs, previous.seeds) != (now.grid, now.configs, now.seeds):
        print(
            f"note: {sweep.out} held another sweep (grid {previous.grid.get('source')}); its manifest is replaced, "
            "its run folders are kept and shared baselines are reused."
        )
