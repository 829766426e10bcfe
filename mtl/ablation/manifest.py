"""``sweep.json``: what a sweep holds (grid, configurations, seeds, baselines, runs), for ``mtl report``.

Paths of runs are relative to the sweep's folder, so a finished sweep can be moved or copied (e.g. from
a cluster) and still be reported. The manifest is plain JSON and this module imports nothing heavy,
so reading a sweep does not load Lightning.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["MANIFEST", "Baseline", "Configuration", "Manifest", "RunSpec"]

MANIFEST = "sweep.json"
_VERSION = 1


@dataclass(frozen=True)
class RunSpec:
    """One ``mtl fit``: ``mtl fit --config <configs> <args>`` in ``<sweep>/<dir>``.

    ``configuration`` names the grid configuration it belongs to, or ``None`` for the single-task
    baseline of ``task``.
    """

    dir: str
    seed: int
    configs: list[str]
    args: list[str]
    fingerprint: str
    configuration: str | None = None
    task: str | None = None

    @property
    def label(self) -> str:
        """``configuration/seed0`` or ``baseline task/seed0``, for progress lines."""
        what = self.configuration if self.configuration is not None else f"baseline {self.task}"
        return f"{what} seed {self.seed}"


@dataclass(frozen=True)
class Configuration:
    """A grid combination: its choice per axis, its tasks and each task's primary metric."""

    name: str
    settings: dict[str, str]
    primary: dict[str, str]


@dataclass(frozen=True)
class Baseline:
    """The single-task baseline of a task (folder relative to the sweep, its primary metric)."""

    task: str
    dir: str
    metric: str


@dataclass
class Manifest:
    """The plan of a sweep; see the module docstring."""

    name: str
    configs: list[str]
    grid: dict[str, Any]
    seeds: list[int]
    tasks: list[str]
    configurations: list[Configuration]
    baselines: dict[str, Baseline]
    runs: list[RunSpec] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({"version": _VERSION, **asdict(self)}, indent=2)

    def write(self, folder: str | Path) -> Path:
        """Write ``<folder>/sweep.json`` atomically (parallel array jobs write the same manifest)."""
        path = Path(folder) / MANIFEST
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{MANIFEST}.{os.getpid()}.tmp")
        tmp.write_text(self.to_json())
        os.replace(tmp, path)
        return path

    @classmethod
    def read(cls, folder: str | Path) -> Manifest:
        """Read ``<folder>/sweep.json`` (``FileNotFoundError`` saying what to run when absent)."""
        path = Path(folder) / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(
                f"Expected a sweep folder with a {MANIFEST} (written by `mtl ablate`), but {path} does not exist."
            )
        data = json.loads(path.read_text())
        if data.get("version") != _VERSION:
            raise ValueError(
                f"Expected {path} to be a version-{_VERSION} sweep manifest, but got version {data.get('version')}."
            )
        return cls(
            name=data["name"],
            configs=data["configs"],
            grid=data["grid"],
            seeds=data["seeds"],
            tasks=data["tasks"],
            configurations=[Configuration(**c) for c in data["configurations"]],
            baselines={t: Baseline(**b) for t, b in data["baselines"].items()},
            runs=[RunSpec(**r) for r in data["runs"]],
        )
