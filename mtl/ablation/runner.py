"""Run a planned sweep: every run through `mtl.runs.run_fit`, one after another or N at a time.

Resuming is `run_fit`'s: a run with ``results.json`` is skipped, a run with a ``last.ckpt`` resumes
from it. On top, each run folder keeps ``run.json`` with the fingerprint of its resolved config: a
folder whose fingerprint differs from the plan's (the base config or the grid changed under the same
``--out``) stops the sweep instead of mixing two experiments in one report. A failed run does not stop
the others; the failures are returned (and reported) at the end.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtl.ablation.manifest import RunSpec
from mtl.runs import Launcher, RunFailed, latest_checkpoint, read_results, run_fit

__all__ = ["RUN_INFO", "FailedRun", "check_fingerprint", "run_sweep"]

RUN_INFO = "run.json"

Fit = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class FailedRun:
    """A run that did not finish, with the error that says why (its log's tail included)."""

    run: RunSpec
    error: str


def check_fingerprint(run: RunSpec, folder: Path) -> None:
    """Record the run's fingerprint in its folder, or stop if the folder holds another experiment's
    results or checkpoints (a folder that never started is simply re-planned)."""
    info = folder / RUN_INFO
    if info.is_file():
        found = json.loads(info.read_text()).get("fingerprint")
        started = read_results(folder) is not None or latest_checkpoint(folder) is not None
        if found != run.fingerprint and started:
            raise RuntimeError(
                f"Expected {folder} to hold the run planned now (config fingerprint {run.fingerprint}), but it "
                f"holds a run of another config (fingerprint {found}): the base configs or the grid changed "
                "since it ran. Use another `--out`, or delete that folder to run it again."
            )
        if found == run.fingerprint:
            return
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"fingerprint": run.fingerprint, "configs": run.configs, "args": run.args, "seed": run.seed}
    info.write_text(json.dumps(payload, indent=2))


def run_sweep(
    out: str | Path,
    runs: Sequence[RunSpec],
    *,
    jobs: int = 1,
    launcher: Launcher | None = None,
    wandb: Mapping[str, Any] | None = None,
    fit: Fit = run_fit,
    log: Callable[[str], None] = print,
) -> list[FailedRun]:
    """Run ``runs`` (folders relative to ``out``); returns the runs that failed.

    Args:
        out: the sweep folder.
        runs: the runs, in the order to start them.
        jobs: how many runs at a time; with more than one, each run gets ``OMP_NUM_THREADS`` =
            cores / jobs (unless set) so that parallel runs do not oversubscribe the cores.
        launcher: how each ``mtl fit`` process starts (`mtl.runs.run_fit`'s default when ``None``).
        wandb: ``init_args`` of a W&B logger for every run (grouped by the sweep's name), or ``None``.
        fit: the function that runs one (`mtl.runs.run_fit`; replaceable in tests).
        log: where progress lines go.
    """
    if jobs < 1:
        raise ValueError(f"Expected `jobs` to be >= 1, but got {jobs}.")
    out = Path(out)
    for run in runs:
        check_fingerprint(run, out / run.dir)
    env = {}
    if jobs > 1 and "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    pending = [r for r in runs if read_results(out / r.dir) is None]
    total, finished = len(runs), len(runs) - len(pending)
    resuming = sum(latest_checkpoint(out / r.dir) is not None for r in pending)
    log(
        f"{total} runs: {finished} finished before, {len(pending)} to run ({resuming} resume from a checkpoint), "
        f"{jobs} at a time, in {out}"
    )
    failures: list[FailedRun] = []
    lock = threading.Lock()
    counter = iter(range(finished + 1, total + 1))

    def one(run: RunSpec) -> None:
        started = time.perf_counter()
        logger = None if wandb is None else {**wandb, "group": wandb.get("group", out.name)}
        try:
            fit(
                run.configs,
                out / run.dir,
                run.args,
                name=f"{out.name}/{run.dir}",
                wandb=logger,
                env=env,
                launcher=launcher,
            )
        except RunFailed as err:
            with lock:
                failures.append(FailedRun(run, str(err)))
                log(f"[{next(counter)}/{total}] FAILED {run.label} ({out / run.dir / 'log.txt'})")
            return
        with lock:
            log(f"[{next(counter)}/{total}] done {run.label} in {time.perf_counter() - started:.0f} s")

    if jobs == 1:
        for run in pending:
            one(run)
    else:
        pool = ThreadPoolExecutor(max_workers=jobs)
        try:
            for future in [pool.submit(one, run) for run in pending]:
                future.result()
        finally:
            # On Ctrl-C, start nothing new; the running processes got the signal too.
            pool.shutdown(wait=True, cancel_futures=True)
    return failures
