"""Plan a sweep: every configuration x seed and every single-task baseline x seed, checked before any runs.

Each run's command is resolved with the ``mtl fit`` parser in-process (`ConfigParser`), so an axis
whose key matches no config field, a value of the wrong type or a broken overlay fails here, with
the axis named, instead of in a training process. Runs are ordered seed by seed (first every
baseline and configuration with seed 0, then seed 1, ...) so that a partial sweep already reports
every configuration.

Layout of the sweep folder ``OUT``::

    OUT/sweep.json                                   the manifest (`Manifest`)
    OUT/<configuration>/seed<k>/                     one run (`mtl.runs.run_fit`'s folder)
    OUT/baselines/<task>-<hash>/single_task.yaml     a task's single-task overlay
    OUT/baselines/<task>-<hash>/seed<k>/             its runs

A baseline's folder carries a hash of its resolved config: sweeps that share ``OUT`` and base configs
reuse the same baselines, and a changed base config gets new ones instead of stale results.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mtl.ablation.baselines import single_task_overlay
from mtl.ablation.config_parser import ConfigParser, ConfigRejected
from mtl.ablation.grid import Combo, Grid, Part
from mtl.ablation.manifest import Baseline, Configuration, Manifest, RunSpec
from mtl.ablation.resolved import (
    class_path_modules,
    fingerprint,
    get_path,
    primary_metrics,
    single_process,
    tasks,
)

__all__ = ["BASELINES", "Sweep", "SweepError", "plan_sweep"]

BASELINES = "baselines"


class SweepError(ValueError):
    """A sweep that cannot run as asked; the message names the axis or the config at fault."""


@dataclass
class Sweep:
    """A planned sweep: the manifest, the baseline overlays to write, and facts for launching."""

    out: Path
    manifest: Manifest
    overlays: dict[str, dict[str, Any]] = field(default_factory=dict)
    single_process: bool = True
    modules: list[str] = field(default_factory=list)

    def prepare(self) -> None:
        """Write the baseline overlays and the manifest (the runs then only need ``OUT``)."""
        for path, overlay in self.overlays.items():
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            text = yaml.safe_dump(overlay, sort_keys=False)
            if not target.is_file() or target.read_text() != text:
                tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")  # array jobs write at once
                tmp.write_text(text)
                tmp.replace(target)
        self.manifest.write(self.out)


def plan_sweep(
    configs: Sequence[str | Path],
    grid: Grid,
    seeds: Sequence[int],
    out: str | Path,
    *,
    baselines: bool = True,
    parser: ConfigParser | None = None,
) -> Sweep:
    """Check every run of the sweep and return its plan (nothing is written or run).

    Args:
        configs: the base configs (``--config``), later ones overriding earlier ones.
        grid: the axes to combine.
        seeds: the seeds every configuration (and baseline) runs with (``--seed_everything``).
        out: the sweep folder.
        baselines: also plan each task's single-task baseline.
        parser: a parser built from ``configs`` (built here when not given).

    Raises:
        SweepError: a config, axis or baseline that ``mtl fit`` would reject.
    """
    if not seeds:
        raise SweepError("Expected at least one seed, but got none. Pass `--seeds N` with N >= 1.")
    out = Path(out).resolve()
    configs = [str(Path(c).resolve()) for c in configs]
    missing = [c for c in configs if not Path(c).is_file()]
    if not configs or missing:
        raise SweepError(f"Expected `--config` to name existing files, but got {missing or 'none'}.")
    if parser is None:
        try:
            parser = ConfigParser(configs)
        except ConfigRejected as err:
            raise SweepError(f"Expected the base configs {configs} to parse, but:\n{err.reason}") from None
    base = parser.resolve(configs)
    base_tasks = tasks(base)
    resolved_all = [base]

    configurations, combo_runs = [], []
    for combo in grid.combos():
        resolved = _resolve_combo(parser, configs, combo)
        resolved_all.append(resolved)
        configurations.append(Configuration(combo.name, combo.settings, primary_metrics(resolved)))
        combo_runs.append((combo, fingerprint(resolved)))

    planned: dict[str, Baseline] = {}
    overlays: dict[str, dict[str, Any]] = {}
    baseline_runs = []
    for task in base_tasks if baselines else []:
        try:
            overlay = single_task_overlay(base, task)
        except ValueError as err:
            raise SweepError(str(err)) from None
        try:
            resolved = parser.resolve([*configs, yaml.safe_dump(overlay)])
        except ConfigRejected as err:
            raise SweepError(
                f"Expected the single-task baseline of `{task}` to parse, but:\n{err.reason}"
            ) from None
        digest = fingerprint(resolved)
        folder = f"{BASELINES}/{task}-{digest[:8]}"
        overlay_path = str(out / folder / "single_task.yaml")
        overlays[overlay_path] = overlay
        planned[task] = Baseline(task, folder, primary_metrics(resolved)[task])
        baseline_runs.append((task, folder, [*configs, overlay_path], digest))
        resolved_all.append(resolved)

    runs = []
    for seed in seeds:
        seed_args = ["--seed_everything", str(seed)]
        for task, folder, run_configs, digest in baseline_runs:
            runs.append(RunSpec(f"{folder}/seed{seed}", seed, run_configs, seed_args, digest, task=task))
        for combo, digest in combo_runs:
            runs.append(
                RunSpec(
                    f"{combo.name}/seed{seed}",
                    seed,
                    [*configs, *combo.overlays],
                    [*combo.args, *seed_args],
                    digest,
                    configuration=combo.name,
                )
            )
    manifest = Manifest(
        out.name, configs, grid.to_dict(), list(seeds), base_tasks, configurations, planned, runs
    )
    modules = list(dict.fromkeys(m for r in resolved_all for m in class_path_modules(r)))
    return Sweep(out, manifest, overlays, all(single_process(r) for r in resolved_all), modules)


def _resolve_combo(parser: ConfigParser, configs: list[str], combo: Combo) -> dict[str, Any]:
    """The combination's resolved config; on rejection, find the first axis (in command order) at fault."""
    try:
        return parser.resolve([*configs, *combo.overlays], combo.args)
    except ConfigRejected:
        pass
    # Overlays come before flags on the command line; add one axis at a time in that order.
    ordered = [p for p in combo.parts if p.overlays] + [p for p in combo.parts if not p.overlays]
    overlays: list[str] = []
    args: list[str] = []
    previous = parser.resolve(configs)
    for part in ordered:
        try:
            current = parser.resolve([*configs, *overlays, *part.overlays], [*args, *part.args])
        except ConfigRejected as err:
            raise SweepError(_rejection(part, combo, previous, err.reason)) from None
        overlays += part.overlays
        args += part.args
        previous = current
    raise SweepError(  # every axis parses alone, yet not all together (not expected from jsonargparse)
        f"Expected configuration `{combo.name}` to parse, but the config parser rejected its combination "
        f"of axes: {combo.settings}."
    )


def _rejection(part: Part, combo: Combo, before: dict[str, Any], reason: str) -> str:
    where = f"grid axis `{part.axis}` (choice `{part.choice}`, in configuration `{combo.name}`)"
    if part.overlays:
        return f"Expected the overlays {list(part.overlays)} of {where} to parse on top of the base configs, but:\n{reason}"
    keys = part.args[0::2]
    for key in (k[2:] for k in keys):
        try:
            get_path(before, key)
        except KeyError as err:
            return (
                f"Expected the key `{key}` of {where} to match a config field, but the resolved config has no "
                f"{err.args[0]}. List the fields with `mtl fit --config BASE.yaml --print_config`.\n"
                f"The config parser said: {reason}"
            )
    values = dict(zip(keys, part.args[1::2], strict=True))
    return f"Expected {where} to set valid values {values}, but the config parser rejected them:\n{reason}"
