"""What every benchmark script shares: the machine description, waiting for a quiet machine,
interleaved (rotated) repetitions, quiet logs, and writing a result as Markdown plus JSON.

The scripts run as ``python benchmarks/<name>.py`` (the folder is on ``sys.path``), so they import
this module as ``common``. Timings on a shared machine drift by tens of percent within seconds;
the scripts therefore interleave the variants they compare (`rotated`), record the load average
before and after, and can wait until other heavy processes have finished (`wait_for_quiet`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import platform
import statistics
import subprocess
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import lightning
import torch

__all__ = [
    "REPO_ROOT",
    "describe_machine",
    "load_average",
    "mean_std",
    "other_processes",
    "quiet_logs",
    "rotated",
    "save_results",
    "start_benchmark",
    "wait_for_quiet",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")
log = logging.getLogger("benchmarks")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe_machine(device: torch.device) -> dict[str, Any]:
    """CPU model, cores (all and usable by this process), torch threads, versions, platform, date, and
    the GPU's name when ``device`` is a CUDA device."""
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "platform": platform.platform(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def load_average() -> float | None:
    """The 1-minute load average (``None`` where the platform has none)."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def other_processes(patterns: Sequence[str]) -> dict[str, list[int]]:
    """``{pattern: pids}`` of the processes other than this one that ``pgrep -f pattern`` finds."""
    out: dict[str, list[int]] = {}
    for pattern in patterns:
        found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
        if pids := [int(pid) for pid in found if int(pid) != os.getpid()]:
            out[pattern] = pids
    return out


def wait_for_quiet(patterns: Sequence[str], poll_s: float = 30, max_wait_s: float = 600) -> float:
    """Poll `other_processes` until it finds none (at most ``max_wait_s``); return the seconds waited."""
    start = time.perf_counter()
    while others := other_processes(patterns):
        if time.perf_counter() - start >= max_wait_s:
            log.warning("Still running after %.0f s: %s; timing anyway.", max_wait_s, others)
            break
        log.info("Waiting for other processes to finish: %s ...", others)
        time.sleep(poll_s)
    return time.perf_counter() - start


def rotated(items: Sequence[T], repeat: int) -> list[T]:
    """``items`` rotated left by ``repeat`` places: the order of repeat ``repeat`` of an interleaved
    benchmark, so that drift in the machine's speed spreads over every variant alike."""
    if not items:
        return []
    k = repeat % len(items)
    return [*items[k:], *items[:k]]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    if not values:
        raise ValueError("Expected at least one value, but got none.")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def quiet_logs() -> None:
    """Silence Lightning's and transformers' informational logs and warnings (about tiny data loaders,
    missing loggers ...), which would otherwise flood the benchmark's own output."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


def start_benchmark(threads: int) -> None:
    """A benchmark script's common start: timestamped INFO logs of its own, mtl's warnings only, the
    libraries quiet (`quiet_logs`), and ``threads`` torch threads."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("mtl").setLevel(logging.WARNING)
    quiet_logs()
    torch.set_num_threads(threads)


def save_results(out_dir: Path, stem: str, markdown: str, payload: dict[str, Any]) -> Path:
    """Write ``<stem>.md`` (for reading) and ``<stem>.json`` (for tools) under ``out_dir``; returns the
    Markdown file's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path = out_dir / f"{stem}.md"
    md_path.write_text(markdown if markdown.endswith("\n") else markdown + "\n")
    (out_dir / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
    return md_path
