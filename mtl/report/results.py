"""Read a sweep's finished runs: per configuration (and for the single-task baselines), every seed's
test metrics of the metrics the report compares.

A partial sweep is read as it stands (runs without ``results.json`` are missing seeds), so a report
can follow a sweep while it runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mtl.ablation.manifest import Manifest
from mtl.runs import read_results

__all__ = ["BASELINE", "Collected", "Scores", "collect"]

#: Name of the single-task baselines in tables and plots.
BASELINE = "single-task"


@dataclass
class Scores:
    """One configuration's test metrics: ``values[task][metric][seed]`` and each metric's direction.

    ``mean_score`` holds ``test/mean`` per seed (the module's own sign-corrected mean of primary
    metrics), the ranking when there are no baselines.
    """

    name: str
    settings: dict[str, str]
    metrics: dict[str, list[str]]
    values: dict[str, dict[str, dict[int, float]]] = field(default_factory=dict)
    higher_is_better: dict[str, dict[str, bool]] = field(default_factory=dict)
    mean_score: dict[int, float] = field(default_factory=dict)

    @property
    def seeds(self) -> list[int]:
        """The seeds with at least one metric."""
        found = {s for task in self.values.values() for seeds in task.values() for s in seeds}
        return sorted(found | set(self.mean_score))

    def add(self, seed: int, task: str, results: dict) -> None:
        """Take the task's metrics of one finished run (``results.json`` content)."""
        for metric in self.metrics.get(task, []):
            key = f"test/{task}/{metric}"
            if key in results["metrics"]:
                self.values.setdefault(task, {}).setdefault(metric, {})[seed] = float(results["metrics"][key])
                self.higher_is_better.setdefault(task, {})[metric] = bool(results["higher_is_better"][key])


@dataclass
class Collected:
    """What a report is made of: the manifest, every configuration's scores, the baselines' scores."""

    manifest: Manifest
    configurations: list[Scores]
    baseline: Scores | None


def collect(folder: str | Path, metrics: Sequence[str] | None = None) -> Collected:
    """Read the sweep in ``folder``.

    Args:
        folder: the sweep folder (with ``sweep.json``).
        metrics: metric names (e.g. ``["accuracy", "f1_macro"]``) to compare for every task that has
            them (a task with none of them keeps its primary metric); by default each task's primary
            metric (its head's ``primary_metric``).
    """
    folder = Path(folder)
    manifest = Manifest.read(folder)
    runs = [(run, read_results(folder / run.dir)) for run in manifest.runs]
    finished = [(run, results) for run, results in runs if results is not None]
    if metrics:
        _check_metrics(metrics, [results for _, results in finished])

    def chosen(primary: dict[str, str], present: set[str]) -> dict[str, list[str]]:
        """Per task the named metrics it has (its primary metric when it has none of them)."""
        out = {}
        for task, metric in primary.items():
            named = [m for m in metrics or () if f"test/{task}/{m}" in present]
            out[task] = named or [metric]
        return out

    def keys(name: str | None, task: str | None) -> set[str]:
        return {
            k
            for run, results in finished
            if run.configuration == name and run.task == task
            for k in results["metrics"]
        }

    by_name = {
        c.name: Scores(c.name, c.settings, chosen(c.primary, keys(c.name, None)))
        for c in manifest.configurations
    }
    baseline = None
    if manifest.baselines:
        present = set().union(*(keys(None, t) for t in manifest.baselines))
        baseline = Scores(BASELINE, {}, chosen({t: b.metric for t, b in manifest.baselines.items()}, present))
    for run, results in finished:
        if run.configuration is not None and run.configuration in by_name:
            scores = by_name[run.configuration]
            for task in scores.metrics:
                scores.add(run.seed, task, results)
            if "test/mean" in results["metrics"]:
                scores.mean_score[run.seed] = float(results["metrics"]["test/mean"])
        elif run.task is not None and baseline is not None:
            baseline.add(run.seed, run.task, results)
    return Collected(manifest, list(by_name.values()), baseline)


def _check_metrics(metrics: Sequence[str], results: list[dict]) -> None:
    """Every named metric must be a test metric of some task in some finished run."""
    available = sorted(
        {
            k.split("/")[2]
            for r in results
            for k in r["metrics"]
            if k.count("/") == 2 and k.startswith("test/")
        }
    )
    unknown = [m for m in metrics if m not in available]
    if unknown and results:
        raise ValueError(
            f"Expected --metrics to name test metrics of the runs, but {unknown} are in none of them; "
            f"available: {available}."
        )
