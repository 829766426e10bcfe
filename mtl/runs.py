"""Run one ``mtl fit`` in its own directory, resumably, and read back its test metrics.

The building block of the commands that train many models (``mtl ablate``, ``mtl group --train``):
each run is a subprocess (so runs cannot leak state into each other and can run in parallel) whose
directory holds everything about it:

* ``overlay.yaml``: the run's own settings on top of the user's configs (its root directory and
  loggers, so that checkpoints and logs land in the run directory);
* ``log.txt``: the run's output;
* checkpoints (``**/last.ckpt``): an interrupted run resumes from the newest one;
* ``results.json``: written atomically when the run has finished, ``{"metrics": {name: value},
  "higher_is_better": {name: bool}}`` (test metrics and the best validation score); a run that has it
  is complete and is never run again.

How the process starts is a `Launcher`: a fresh interpreter (`SubprocessLauncher`, the default, right
for every strategy) or a fork of a server that has imported mtl once (`ForkServerLauncher`: saves the
5-20 s that importing Lightning and PyTorch costs every run, which dominates short runs; one-process
runs only).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ForkServerLauncher",
    "Launcher",
    "RunFailed",
    "SubprocessLauncher",
    "latest_checkpoint",
    "read_results",
    "run_fit",
    "run_overlay",
]

RESULTS = "results.json"


class RunFailed(RuntimeError):
    """An ``mtl fit`` subprocess exited with an error; the message ends with its last output lines."""


def read_results(run_dir: Path) -> dict[str, Any] | None:
    """The finished run's metrics, or ``None`` when the run has not finished."""
    path = Path(run_dir) / RESULTS
    return json.loads(path.read_text()) if path.is_file() else None


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest ``last.ckpt`` under ``run_dir`` (where an interrupted run resumes), or ``None``."""
    found = sorted(Path(run_dir).rglob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def run_overlay(run_dir: Path, name: str, wandb: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The config overlay that puts a run's logs and checkpoints under ``run_dir``.

    A CSV logger always; a Weights & Biases logger too when ``wandb`` is given (its ``init_args``,
    e.g. ``{"project": "mtl", "group": "sweep-1"}``; offline without credentials).
    """
    loggers: list[dict[str, Any]] = [
        {
            "class_path": "lightning.pytorch.loggers.CSVLogger",
            "init_args": {"save_dir": str(run_dir), "name": "csv"},
        }
    ]
    if wandb is not None:
        init = {"project": "mtl", **wandb, "name": name, "save_dir": str(run_dir)}
        loggers.append({"class_path": "mtl.loggers.WandbLogger", "init_args": init})
    return {"trainer": {"default_root_dir": str(run_dir), "logger": loggers}}


class Launcher(ABC):
    """Starts ``mtl <argv>`` (e.g. ``fit --config ...``) with its output appended to a log file."""

    @abstractmethod
    def describe(self, argv: Sequence[str]) -> str:
        """The command line, as written to the log."""

    @abstractmethod
    def launch(self, argv: Sequence[str], log: Path, env: Mapping[str, str]) -> int:
        """Run to completion with ``env`` added to this process's environment; returns the exit code."""


class SubprocessLauncher(Launcher):
    """``python -m mtl.cli <argv>`` in a fresh interpreter: works for every strategy and launcher."""

    def command(self, argv: Sequence[str]) -> list[str]:
        return [sys.executable, "-m", "mtl.cli", *argv]

    def describe(self, argv: Sequence[str]) -> str:
        return " ".join(self.command(argv))

    def launch(self, argv: Sequence[str], log: Path, env: Mapping[str, str]) -> int:
        with log.open("a") as out:
            return subprocess.run(
                self.command(argv), stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}
            ).returncode


class ForkServerLauncher(Launcher):
    """Each run is a process forked from a server that imported ``mtl.cli`` (and ``preload``) once.

    The server is Python's ``forkserver``: a clean process that never ran a PyTorch op, so its forks
    may use OpenMP (a fork of a process whose OpenMP pool has started hangs on its first parallel op).
    It starts with this process's ``sys.path`` (Python 3.11's forkserver would otherwise import the
    preloaded modules from its own default path), and a child takes this process's ``sys.path``,
    current directory and environment at launch (``OMP_NUM_THREADS`` through
    ``torch.set_num_threads``: the OpenMP runtime read the variable when the server started).

    Only for runs in one process: multi-device strategies re-launch ``sys.argv``, which a fork does
    not have; use `SubprocessLauncher` for them.

    Args:
        preload: modules the server imports before forking (``mtl.cli`` is always imported).
    """

    _lock = threading.Lock()  # one server per Python process; starts and environment reads one at a time

    def __init__(self, preload: Sequence[str] = ()) -> None:
        self.preload = list(dict.fromkeys(["mtl.cli", *preload]))
        self._context = multiprocessing.get_context("forkserver")

    def describe(self, argv: Sequence[str]) -> str:
        return " ".join(["mtl", *argv]) + "   (forked from a preloaded server)"

    def _ensure_server(self) -> None:
        from multiprocessing import forkserver

        self._context.set_forkserver_preload(self.preload)  # used only when the server starts
        saved = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join(p or os.getcwd() for p in sys.path)
        try:
            forkserver.ensure_running()
        finally:
            if saved is None:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = saved

    def launch(self, argv: Sequence[str], log: Path, env: Mapping[str, str]) -> int:
        with self._lock:
            state = (list(argv), str(log), {**os.environ, **env}, os.getcwd(), list(sys.path))
            self._ensure_server()
            process = self._context.Process(
                target=_fit_in_child, args=state, name=f"mtl {Path(log).parent.name}"
            )
            process.start()
        try:
            process.join()
        except BaseException:
            process.terminate()
            process.join()
            raise
        return int(process.exitcode if process.exitcode is not None else 1)


def _fit_in_child(argv: list[str], log: str, environ: dict[str, str], cwd: str, path: list[str]) -> None:
    """The body of a `ForkServerLauncher` child: become the launching process's run, then ``mtl <argv>``."""
    import torch

    from mtl.cli import main

    sys.path[:] = path
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(environ)
    threads = environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.argv = ["mtl"]
    try:
        main(argv)  # it finishes its W&B run itself; a fork skips the atexit handler that would
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def run_fit(
    configs: Sequence[str | Path],
    run_dir: str | Path,
    args: Sequence[str] = (),
    *,
    name: str | None = None,
    wandb: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    launcher: Launcher | None = None,
) -> dict[str, Any]:
    """Train and test one configuration in ``run_dir``; returns its ``results.json``.

    A finished run (``results.json`` present) is not run again; an interrupted one resumes from its
    newest ``last.ckpt`` (the configs need a `ModelCheckpoint` with ``save_last: true`` for that).

    Args:
        configs: the ``--config`` files, later ones overriding earlier ones.
        run_dir: the run's directory (created).
        args: further command-line arguments, e.g. ``["--seed_everything", "1"]``.
        name: the run's name on the dashboard (default: the directory's name).
        wandb: ``init_args`` of a W&B logger, or ``None`` for the CSV logger only.
        env: extra environment variables for the subprocess.
        launcher: how the process starts (default: `SubprocessLauncher`).
    """
    run_dir = Path(run_dir)
    done = read_results(run_dir)
    if done is not None:
        return done
    run_dir.mkdir(parents=True, exist_ok=True)
    overlay = run_dir / "overlay.yaml"
    overlay.write_text(yaml.safe_dump(run_overlay(run_dir, name or run_dir.name, wandb)))
    argv = ["fit"]
    for config in configs:
        argv += ["--config", str(config)]
    argv += [
        "--config",
        str(overlay),
        *args,
        "--test_after_fit",
        "true",
        "--results_file",
        str(run_dir / RESULTS),
    ]
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is not None:
        argv += ["--ckpt_path", str(checkpoint)]
    launcher = launcher or SubprocessLauncher()
    command = launcher.describe(argv)
    log = run_dir / "log.txt"
    with log.open("a") as out:
        out.write(f"$ {command}\n")
    code = launcher.launch(argv, log, env or {})
    results = read_results(run_dir)
    if code != 0 and results is not None:
        # results.json is written atomically as the run's last act, so the run finished; the exit code
        # can still be lost, e.g. Python's forkserver reports 255 when it cannot pass a child's status on.
        with log.open("a") as out:
            out.write(f"(exit code {code} after results.json was written: the run is kept as finished)\n")
        return results
    if code != 0 or results is None:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RunFailed(
            f"Expected `mtl fit` in {run_dir} to finish, but it exited with code {code}. Command: "
            f"{command}\nLast lines of {log}:\n{tail}"
        )
    return results
