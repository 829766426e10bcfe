"""Hand-made sweep folders: a manifest and results.json files with chosen numbers, no training."""

from __future__ import annotations

import json
from pathlib import Path

from mtl.ablation.manifest import Baseline, Configuration, Manifest, RunSpec

#: Task `a` is judged by accuracy (higher is better), task `b` by mse (lower is better).
PRIMARY = {"a": "accuracy", "b": "mse"}
HIGHER = {"accuracy": True, "f1": True, "mse": False}


def results(values: dict[str, dict[str, float]], mean: float | None = None) -> dict:
    metrics = {f"test/{t}/{m}": v for t, ms in values.items() for m, v in ms.items()}
    directions = {f"test/{t}/{m}": HIGHER[m] for t, ms in values.items() for m in ms}
    if mean is not None:
        metrics["test/mean"], directions["test/mean"] = mean, True
    return {"metrics": metrics, "higher_is_better": directions}


def make_sweep(
    folder: Path,
    configurations: dict[str, dict[int, dict[str, dict[str, float]]]],
    baselines: dict[str, dict[int, dict[str, float]]] | None,
    seeds: list[int],
    means: dict[str, dict[int, float]] | None = None,
) -> Path:
    """``configurations[name][seed] = {task: {metric: value}}`` (a missing seed: an unfinished run);
    ``baselines[task][seed] = {metric: value}``; ``means[name][seed]``: ``test/mean``."""
    runs, planned = [], {}
    for task, per_seed in (baselines or {}).items():
        planned[task] = Baseline(task, f"baselines/{task}-0", PRIMARY[task])
        for seed in seeds:
            runs.append(RunSpec(f"baselines/{task}-0/seed{seed}", seed, [], [], "x", task=task))
            if seed in per_seed:
                write(folder / runs[-1].dir, results({task: per_seed[seed]}))
    for name, per_seed in configurations.items():
        for seed in seeds:
            runs.append(RunSpec(f"{name}/seed{seed}", seed, [], [], name, configuration=name))
            if seed in per_seed:
                write(folder / runs[-1].dir, results(per_seed[seed], (means or {}).get(name, {}).get(seed)))
    configs = [Configuration(n, {"axis": n.split("-", 1)[-1]}, dict(PRIMARY)) for n in configurations]
    grid = {"source": "grid.yaml", "axes": {"axis": {"keys": ["k"], "choices": {}}}}
    Manifest(folder.name, ["base.yaml"], grid, seeds, ["a", "b"], configs, planned, runs).write(folder)
    return folder


def write(run: Path, payload: dict) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "results.json").write_text(json.dumps(payload))
