"""Train a set of tasks over seeds (resumable `mtl.runs.run_fit` subprocesses) and read per-task metrics.

Every run is named by the tasks it trains, `run_name`: ``polarity`` (the task alone),
``polarity+subjectivity`` (a pair, a group, or every task), in the config's task order. A set of tasks
is therefore trained once however many uses it has: HOA's single-task and pairwise runs are also the
single-task baselines of ``--train`` and the runs of any chosen group of two, and a group of every
task is the all-together run.

Each named run lives in ``directory/<name>/seed<k>/`` (``k = 0 .. seeds - 1``, trained with
``--seed_everything k``); a finished run is never trained again. Its ``results.json`` holds the test
metrics of the best checkpoint; `with_validation` adds the validation metrics of that checkpoint,
read from the run's CSV log (the row of the best monitored value), so that choices such as HOA's are
made on validation results and the test results stay unseen until the comparison. Each run folder records the
fingerprint of its resolved config (`mtl.ablation.resolved.fingerprint`, `run.json`), so a folder
that holds the results of another config (the base config changed under the same ``--out``) stops
the command instead of being mixed into its table. The results of the seeds are averaged metric by
metric.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mtl.ablation.manifest import RunSpec
from mtl.ablation.resolved import fingerprint
from mtl.ablation.runner import check_fingerprint
from mtl.runs import Launcher, read_results, run_fit

__all__ = [
    "missing_runs",
    "read_averaged",
    "run_name",
    "task_metrics",
    "train_averaged",
    "weighted_run_name",
    "with_validation",
]

Results = dict[str, Any]


def run_name(tasks: Sequence[str]) -> str:
    """The name of the run that trains ``tasks`` (in the config's task order): ``a+b+c``."""
    if not tasks:
        raise ValueError("Expected at least one task to name a run, but got none.")
    return "+".join(tasks)


def weighted_run_name(weights: Mapping[str, float], serves: Sequence[str] = ()) -> str:
    """The name of a run that trains every task with the loss ``weights`` (STG-MTL's membership-weighted
    cluster models) and monitors the tasks it ``serves``: ``weighted-`` and a digest of both (weights to
    6 significant digits), so equal runs share a name and different ones never do."""
    key = ",".join(f"{t}={w:.6g}" for t, w in sorted(weights.items())) + "|" + ",".join(sorted(serves))
    return "weighted-" + hashlib.sha1(key.encode()).hexdigest()[:10]


def _seed_dirs(directory: Path, name: str, seeds: int) -> list[Path]:
    return [Path(directory) / name / f"seed{k}" for k in range(seeds)]


def _average(results: Sequence[Results]) -> Results:
    """Metric-by-metric mean of several ``results.json`` (only the metrics every one of them has)."""
    common = set.intersection(*(set(r["metrics"]) for r in results))
    metrics = {m: sum(float(r["metrics"][m]) for r in results) / len(results) for m in sorted(common)}
    directions = {
        m: bool(results[0]["higher_is_better"][m]) for m in metrics if m in results[0]["higher_is_better"]
    }
    return {"metrics": metrics, "higher_is_better": directions, "seeds": len(results)}


def with_validation(run_dir: Path, results: Results) -> Results:
    """``results`` plus ``val/...`` entries: the validation metrics logged when the best checkpoint's
    monitored value was reached (the first such row of the run's CSV logs, ``csv/version_*/metrics.csv``,
    in order; a resumed run has several versions). Directions are those of the matching ``test/...``
    entries. Results that already hold validation metrics, or whose run has no best checkpoint or CSV
    log, are returned unchanged."""
    metrics = results["metrics"]
    best = next(((k[len("best/") :], v) for k, v in metrics.items() if k.startswith("best/")), None)
    if best is None or any(k.startswith("val/") for k in metrics):
        return results
    monitor, value = best
    logs = sorted(Path(run_dir).glob("csv/version_*/metrics.csv"), key=lambda p: int(p.parent.name[8:]))
    for log in logs:
        with log.open(newline="") as handle:
            for row in csv.DictReader(handle):
                if row.get(monitor) and math.isclose(float(row[monitor]), float(value), rel_tol=1e-6):
                    found = {k: float(v) for k, v in row.items() if k.startswith("val/") and v}
                    directions = dict(results["higher_is_better"])
                    for key in found:
                        test = "test/" + key[len("val/") :]
                        if test in directions:
                            directions[key] = directions[test]
                    return {**results, "metrics": {**metrics, **found}, "higher_is_better": directions}
    return results


def missing_runs(directory: Path, names: Sequence[str], seeds: int) -> list[str]:
    """The ``name/seed<k>`` runs under ``directory`` that have no ``results.json`` yet."""
    return [
        f"{name}/{path.name}"
        for name in names
        for path in _seed_dirs(directory, name, seeds)
        if read_results(path) is None
    ]


def read_averaged(directory: Path, name: str, seeds: int) -> Results:
    """The seed-averaged results of a finished run (raises `FileNotFoundError` when one is missing)."""
    paths = _seed_dirs(directory, name, seeds)
    found = [read_results(path) for path in paths]
    if any(r is None for r in found):
        raise FileNotFoundError(
            f"Expected finished runs of `{name}` for {seeds} seed(s) under {directory}, but "
            f"{missing_runs(directory, [name], seeds)} have no results.json."
        )
    return _average([with_validation(p, r) for p, r in zip(paths, found, strict=True)])  # type: ignore[arg-type]


def train_averaged(
    config: Path,
    resolved: Mapping[str, Any],
    directory: Path,
    seeds: int,
    *,
    wandb: Mapping[str, Any] | None = None,
    launcher: Launcher | None = None,
    name: str | None = None,
) -> Results:
    """Train (or resume, or reuse) ``config`` for every seed and return the seed-averaged results.

    Args:
        config: the run's config file (a resolved config restricted to the run's tasks).
        resolved: the same config as a dict, whose fingerprint each run folder must match.
        directory: the runs directory; the run goes to ``directory/<name>/seed<k>``.
        seeds: seeds ``0 .. seeds - 1``.
        wandb: ``init_args`` of a W&B logger for every run, or ``None``.
        launcher: how each run's process starts (`mtl.runs.run_fit`).
        name: the run's name; default `run_name` of its tasks.
    """
    name = name or run_name(list(resolved["model"]["heads"]))
    print_of = fingerprint(resolved)
    results = []
    for k, path in enumerate(_seed_dirs(directory, name, seeds)):
        args = ["--seed_everything", str(k)]
        spec = RunSpec(dir=f"{name}/seed{k}", seed=k, configs=[str(config)], args=args, fingerprint=print_of)
        check_fingerprint(spec, path)
        results.append(run_fit([config], path, args, name=f"{name}-seed{k}", wandb=wandb, launcher=launcher))
    return _average(results)


def task_metrics(
    results: Results, task: str, split: str = "test"
) -> tuple[dict[str, float], dict[str, bool]]:
    """A task's metrics ``{metric: value}`` and directions ``{metric: higher is better}`` from a results
    dict (keys ``{split}/{task}/{metric}``; the per-task loss is left out, it is no quality metric)."""
    prefix = f"{split}/{task}/"
    values, directions = {}, {}
    for key, value in results["metrics"].items():
        metric = key[len(prefix) :]
        if key.startswith(prefix) and metric != "loss" and key in results["higher_is_better"]:
            values[metric] = float(value)
            directions[metric] = bool(results["higher_is_better"][key])
    if not values:
        raise KeyError(
            f"Expected `{split}/{task}/<metric>` entries in the run's results, but got {sorted(results['metrics'])}. "
            "Train the run with `--test_after_fit true` (test metrics), a checkpoint callback and the CSV logger "
            "(validation metrics of the best checkpoint), as `mtl group --train` does."
        )
    return values, directions
