"""Test metrics of every balancing method, and its multi-task gain Δm over single-task models.

Issue 5's quality benchmark. Every method (EW, the other loss weightings, every gradient aggregator
of `mtl.balancing` on the shared parameters) trains the same model on the same data under
`lightning.Trainer`, from the same initialisation for a given seed, with ``data.layout: all_tasks``
(a sub-batch of every task at every step, which the gradient methods need; the weightings get the
same batches); the single-task baselines train one model per task, same encoder and head, same
settings. Each run validates every epoch and tests the checkpoint with the best ``val/mean``.
Gradient norms are clipped to 1 in every run (`MultiTaskModule.clip_grad_norm` for the aggregators,
which run under manual optimization, ``gradient_clip_val`` for the others), as in
``configs/examples/quickstart_pcgrad.yaml``.

Data sets and models (those of `balancing.py`):

* ``census``: Census-Income, tasks ``income`` and ``marital`` (the quickstart's), the quickstart
  model (`TabularMLPEncoder` [256, 128], dropout 0.1, `BinaryHead` [64], AdamW lr 1e-3, weight decay
  1e-4), 512 examples per task per step, ``--census-epochs`` (2) epochs; metric: test AUROC.
* ``text``: `TextTasks` ``polarity``, ``subjectivity``, ``tweet_sentiment`` (the text example's),
  ``--text-train`` (600) training and 300 validation / test examples per task, ``max_length`` 32,
  all-MiniLM-L6-v2 (bundled, mean pooling), `ClassificationHead` (dropout 0.1), AdamW lr 5e-5
  (heads 1e-3), 16 examples per task per step, ``--text-epochs`` (1) epoch; metric: test accuracy.

Hyper-parameters: every method's defaults (see its docstring), except `STCH`'s warm-up, set to 1
epoch (its default of 5 exceeds these budgets, which would leave it in its warm-up objective,
``Σ log L_i``, throughout). With 2 epochs or fewer, `DWA` keeps equal weights (it needs the mean
losses of two finished epochs) and `STCH` on the text budget (1 epoch) is its warm-up objective.

Δm (`mtl.delta_m`, LibMTL's definition: per-metric relative change against the single-task model,
signed by the metric's direction, averaged within a task, then across tasks) is computed per seed
against the single-task models of the same seed, on each head's primary metric (AUROC, accuracy;
the headline) and on all of its metrics (AUROC, accuracy, F1 / accuracy, macro F1); reported as mean
± sample standard deviation over seeds.

Runs are resumable: each finished run is stored in ``benchmarks/results/balancing-quality-runs.json``
under a key of its data set, method, seed and training settings, and is skipped when found there.
``--max-minutes`` stops starting new runs after that much wall time (run the same command again to
continue). The order is data set, seed, method (every method of seed 0 before seed 1), so that a
partial sweep has whole seeds.

Run (from the repository root; on 2 CPU cores about 40 s per Census run and 1 minute per text run)::

    nice -n 10 .venv/bin/python benchmarks/balancing_quality.py                      # everything
    nice -n 10 .venv/bin/python benchmarks/balancing_quality.py --datasets text --seeds 2 \\
        --methods EW,UW,FAMO,PCGrad,MGDA                                              # a subset
    .venv/bin/python benchmarks/balancing_quality.py --datasets census --methods EW,MGDA --seeds 1 \\
        --census-epochs 1 --census-train 5000 --no-save                              # smoke test

Writes ``benchmarks/results/balancing-quality.md`` (tables), ``.csv`` and ``.json`` (summary and every
run) and ``balancing-quality.png`` (Δm per method, mean ± std over seeds).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from mtl.data.datamodule import MultiTaskDataModule
from mtl.delta_m import delta_m
from mtl.plots import new_figure
from mtl.weighting import STCH

sys.path.insert(0, str(Path(__file__).resolve().parent))
from balancing import AGGREGATORS, WEIGHTINGS, ReplicatedTasks, Workload, census_workload, minilm_workload
from common import REPO_ROOT, describe_machine, load_average, mean_std, start_benchmark

SINGLE_TASK = "single-task"
STEM = "balancing-quality"
METHOD_FACTORIES: dict[str, Callable[[], Any]] = {
    **WEIGHTINGS,
    "STCH": lambda: STCH(warmup_epochs=1),
    **AGGREGATORS,
}

log = logging.getLogger("balancing_quality")


@dataclass(frozen=True)
class Dataset:
    """One benchmark data set: the tasks trained together, how long, and how to build the workload."""

    name: str
    tasks: tuple[str, ...]
    epochs: int
    eval_batch_size: int
    workload: Callable[[], Workload]
    settings: dict[str, Any]


def datasets(args: argparse.Namespace) -> dict[str, Dataset]:
    """The two data sets with the command line's budgets (their workloads load on first use)."""
    census_tasks = ("income", "marital")
    text_tasks = ("polarity", "subjectivity", "tweet_sentiment")

    def census() -> Workload:
        return census_workload(batch_size=512, max_train_examples=args.census_train)

    def text() -> Workload:
        return minilm_workload(
            batch_size=16,
            max_length=32,
            max_train_examples=args.text_train,
            max_eval_examples=300,
            tasks=text_tasks,
        )

    return {
        "census": Dataset(
            "census",
            census_tasks,
            args.census_epochs,
            4096,
            census,
            {"epochs": args.census_epochs, "batch_size": 512, "train": args.census_train or "all"},
        ),
        "text": Dataset(
            "text",
            text_tasks,
            args.text_epochs,
            128,
            text,
            {
                "epochs": args.text_epochs,
                "batch_size": 16,
                "train": args.text_train,
                "eval": 300,
                "max_length": 32,
            },
        ),
    }


# ------------------------------------------------------------------------------------------ a run
def fingerprint(dataset: Dataset) -> str:
    """A short hash of the data set's training settings: runs trained otherwise are not reused."""
    return hashlib.sha256(json.dumps(dataset.settings, sort_keys=True).encode()).hexdigest()[:8]


def run_key(dataset: Dataset, method: str, seed: int, tasks: tuple[str, ...]) -> str:
    """The stored run's key: data set, method, tasks, seed and the settings' `fingerprint`."""
    return f"{dataset.name}/{method}/{'+'.join(tasks)}/seed{seed}/{fingerprint(dataset)}"


def train_and_test(
    workload: Workload, dataset: Dataset, method: str, tasks: tuple[str, ...], seed: int
) -> dict[str, Any]:
    """Train ``method`` on ``tasks`` (``single-task``: plain training of one task), test the best
    checkpoint by ``val/mean``; returns every test metric with its direction."""
    lightning.seed_everything(seed, verbose=False)
    source = ReplicatedTasks({t: workload.splits[t] for t in tasks}, workload.spec, len(tasks))
    dm = MultiTaskDataModule(
        source,
        batch_size=workload.batch_size,
        eval_batch_size=dataset.eval_batch_size,
        layout="all_tasks",
        seed=seed,
    )
    balancer = None if method == SINGLE_TASK else METHOD_FACTORIES[method]()
    aggregator = method in AGGREGATORS
    module = workload.module(
        {t: t for t in tasks}, balancer=balancer, clip_grad_norm=1.0 if aggregator else None
    )
    start, cpu = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = ModelCheckpoint(dirpath=tmp, monitor="val/mean", mode="max")
        trainer = Trainer(
            max_epochs=dataset.epochs,
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            gradient_clip_val=None if aggregator else 1.0,
            callbacks=[checkpoint],
            use_distributed_sampler=False,  # the data module samples tasks itself (as the mtl CLI sets)
        )
        trainer.fit(module, datamodule=dm)
        fit_seconds, fit_cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
        metrics = trainer.test(module, datamodule=dm, ckpt_path="best", verbose=False)[0]
    directions = module.metric_directions()
    scores = {
        t: {
            k.split("/")[-1]: float(v)
            for k, v in metrics.items()
            if k.startswith(f"test/{t}/") and k != f"test/{t}/loss"
        }
        for t in tasks
    }
    return {
        "dataset": dataset.name,
        "method": method,
        "tasks": list(tasks),
        "seed": seed,
        "test": scores,
        "higher_is_better": {t: {m: directions[f"test/{t}/{m}"] for m in scores[t]} for t in tasks},
        "primary": {t: module.heads[t].primary_metric for t in tasks},
        "fit_seconds": round(fit_seconds, 1),
        "fit_cpu_seconds": round(fit_cpu_seconds, 1),
    }


# ------------------------------------------------------------------------------------------ summary
def per_seed(
    runs: list[dict[str, Any]], dataset: str, method: str, tasks: tuple[str, ...]
) -> dict[int, dict[str, Any]]:
    """``seed -> merged run`` of one method (single-task: the per-task models of a seed together),
    for the seeds where every task has a result."""
    out: dict[int, dict[str, Any]] = {}
    for r in runs:
        if r["dataset"] != dataset or r["method"] != method:
            continue
        merged = out.setdefault(
            r["seed"], {"test": {}, "higher_is_better": {}, "primary": {}, "fit_seconds": 0.0}
        )
        for key in ("test", "higher_is_better", "primary"):
            merged[key].update(r[key])
        merged["fit_seconds"] += r["fit_seconds"]
    return {s: m for s, m in out.items() if set(m["test"]) == set(tasks)}


def summarise(runs: list[dict[str, Any]], dataset: Dataset, methods: list[str]) -> list[dict[str, Any]]:
    """Per method: each task's primary test metric (mean, std over seeds), Δm on the primary metrics and
    on all metrics against the same seed's single-task models (mean, std), training seconds."""
    tasks = dataset.tasks
    baselines = per_seed(runs, dataset.name, SINGLE_TASK, tasks)
    rows = []
    for method in [SINGLE_TASK, *methods]:
        seeds = per_seed(runs, dataset.name, method, tasks)
        if not seeds:
            continue
        first = next(iter(seeds.values()))
        row: dict[str, Any] = {
            "dataset": dataset.name,
            "method": method,
            "family": _family(method),
            "seeds": sorted(seeds),
            "metric": {t: first["primary"][t] for t in tasks},
        }
        for t in tasks:
            row[t] = mean_std([m["test"][t][m["primary"][t]] for m in seeds.values()])
        paired = [s for s in seeds if s in baselines]
        if method != SINGLE_TASK and paired:
            primary = [_delta(seeds[s], baselines[s], primary_only=True) for s in paired]
            row["delta_m_pct"] = mean_std(primary)
            try:
                row["delta_m_all_pct"] = mean_std(
                    [_delta(seeds[s], baselines[s], primary_only=False) for s in paired]
                )
            except ValueError as err:  # e.g. a baseline F1 of 0 at the default threshold: no relative change
                log.warning("%s %s: no Δm over all metrics: %s", dataset.name, method, err)
                row["delta_m_all_pct"] = None
            row["delta_m_per_seed"] = {s: round(v, 3) for s, v in zip(paired, primary, strict=True)}
        else:
            row["delta_m_pct"] = row["delta_m_all_pct"] = None
        row["fit_seconds"] = statistics.fmean(m["fit_seconds"] for m in seeds.values())
        rows.append(row)
    return rows


def _family(method: str) -> str:
    if method == SINGLE_TASK:
        return "baseline"
    return "loss weighting" if method in WEIGHTINGS else "gradient aggregation"


def _delta(result: Mapping[str, Any], baseline: Mapping[str, Any], primary_only: bool) -> float:
    def pick(scores: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
        if not primary_only:
            return {t: dict(v) for t, v in scores.items()}
        return {t: {result["primary"][t]: v[result["primary"][t]]} for t, v in scores.items()}

    return delta_m(pick(result["test"]), pick(baseline["test"]), result["higher_is_better"])


def markdown_table(rows: list[dict[str, Any]], dataset: Dataset) -> str:
    def pm(v: tuple[float, float] | None, digits: int, sign: str = "") -> str:
        return "-" if v is None else f"{v[0]:{sign}.{digits}f} ± {v[1]:.{digits}f}"

    metric = rows[0]["metric"]
    header = " | ".join(f"{t} ({metric[t]})" for t in dataset.tasks)
    lines = [
        f"| method | family | seeds | {header} | Δm % (primary) | Δm % (all metrics) | fit s |",
        "| --- | --- | ---: | " + "---: | " * len(dataset.tasks) + "---: | ---: | ---: |",
    ]
    for r in rows:
        cells = " | ".join(pm(r[t], 4) for t in dataset.tasks)
        lines.append(
            f"| {r['method']} | {r['family']} | {len(r['seeds'])} | {cells} | {pm(r['delta_m_pct'], 2, '+')} | "
            f"{pm(r['delta_m_all_pct'], 2, '+')} | {r['fit_seconds']:.0f} |"
        )
    return "\n".join(lines)


def plot(summaries: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Δm (primary metrics) per method, mean ± std over seeds, one panel per data set."""
    from matplotlib.patches import Patch

    shown = {name: [r for r in rows if r["delta_m_pct"] is not None] for name, rows in summaries.items()}
    shown = {name: rows for name, rows in shown.items() if rows}
    if not shown:
        return
    figure = new_figure(max(6.0, 0.45 * max(len(r) for r in shown.values()) + 2), 3.6 * len(shown))
    colours = {"EW (reference)": "0.55", "loss weighting": "C0", "gradient aggregation": "C1"}
    for i, (name, rows) in enumerate(shown.items()):
        ax = figure.add_subplot(len(shown), 1, i + 1)
        means = [r["delta_m_pct"][0] for r in rows]
        stds = [r["delta_m_pct"][1] for r in rows]
        fills = [colours["EW (reference)" if r["method"] == "EW" else r["family"]] for r in rows]
        ax.bar(range(len(rows)), means, yerr=stds, capsize=3, color=fills)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(rows)), [r["method"] for r in rows], rotation=40, ha="right", fontsize=8)
        ax.set_ylabel("Δm % vs single-task")
        seeds = max(len(r["seeds"]) for r in rows)
        ax.set_title(f"{name}: Δm, primary metric ({seeds} seeds)", fontsize=10)
    ax.legend(
        handles=[Patch(color=colour, label=family) for family, colour in colours.items()],
        loc="best",
        fontsize=8,
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)


# ------------------------------------------------------------------------------------------ storage
def store_path(out_dir: Path, dataset: str) -> Path:
    """One file of finished runs per data set, so that sweeps of different data sets can run at once."""
    return out_dir / f"{STEM}-runs-{dataset}.json"


def load_runs(path: Path) -> dict[str, dict[str, Any]]:
    return json.loads(path.read_text()) if path.is_file() else {}


def store_runs(path: Path, runs: dict[str, dict[str, Any]]) -> None:
    """Atomically (write, then rename), so that an interrupted sweep never leaves a broken file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(runs, indent=1) + "\n")
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="census,text", help="comma-separated: census, text")
    p.add_argument(
        "--methods", default="all", help=f"'all' or comma-separated names from {list(METHOD_FACTORIES)}"
    )
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..n-1 (default: census 3, text 2)")
    p.add_argument("--census-epochs", type=int, default=2)
    p.add_argument(
        "--census-train", type=int, default=None, help="subsample Census training rows (smoke tests)"
    )
    p.add_argument("--text-epochs", type=int, default=1)
    p.add_argument("--text-train", type=int, default=600, help="training examples per text task")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument(
        "--max-minutes", type=float, default=None, help="start no new run after this much wall time"
    )
    p.add_argument("--out-dir", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    p.add_argument("--no-save", action="store_true", help="keep nothing on disk (smoke tests)")
    args = p.parse_args(argv)
    args.datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    if not args.datasets or any(d not in ("census", "text") for d in args.datasets):
        p.error(f"--datasets must name some of census, text, but got {args.datasets}.")
    names = list(METHOD_FACTORIES)
    args.methods = (
        names if args.methods == "all" else [m.strip() for m in args.methods.split(",") if m.strip()]
    )
    unknown = [m for m in args.methods if m not in names]
    if unknown:
        p.error(f"--methods must be 'all' or names from {names}, but got {unknown}.")
    if args.seeds is not None and args.seeds < 1:
        p.error(f"--seeds must be >= 1, but got {args.seeds}.")
    if min(args.census_epochs, args.text_epochs, args.text_train, args.threads) < 1:
        p.error("--census-epochs, --text-epochs, --text-train and --threads must be >= 1.")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start_benchmark(args.threads)
    specs = datasets(args)
    runs = {name: {} if args.no_save else load_runs(store_path(args.out_dir, name)) for name in specs}
    load_before = load_average()
    start = time.perf_counter()
    out_of_time = False
    for name in args.datasets:
        dataset, done = specs[name], runs[name]
        seeds = args.seeds or (3 if name == "census" else 2)
        jobs = [(SINGLE_TASK, (t,)) for t in dataset.tasks] + [(m, dataset.tasks) for m in args.methods]
        todo = [(s, m, t) for s in range(seeds) for m, t in jobs if run_key(dataset, m, s, t) not in done]
        log.info("%s: %d runs to do, %d found.", name, len(todo), seeds * len(jobs) - len(todo))
        if not todo:
            continue
        workload = dataset.workload()
        for seed, method, tasks in todo:
            if args.max_minutes is not None and time.perf_counter() - start > 60 * args.max_minutes:
                out_of_time = True
                break
            result = train_and_test(workload, dataset, method, tasks, seed)
            done[run_key(dataset, method, seed, tasks)] = result
            primary = {t: round(v[result["primary"][t]], 4) for t, v in result["test"].items()}
            log.info(
                "%s seed %d %s: %s in %.0f s (%.0f s elapsed)",
                name,
                seed,
                method,
                primary,
                result["fit_seconds"],
                time.perf_counter() - start,
            )
            if not args.no_save:
                store_runs(store_path(args.out_dir, name), done)
        if out_of_time:
            log.info("--max-minutes reached; run the same command again to continue.")
            break
    report(args, specs, runs, load_before)


def report(
    args: argparse.Namespace,
    specs: dict[str, Dataset],
    runs: dict[str, dict[str, dict[str, Any]]],
    load_before: float | None,
) -> None:
    """Tables, CSV, JSON and plot of every data set's finished runs under the current settings (all the
    methods found, whichever this invocation ran)."""
    summaries = {}
    for name, dataset in specs.items():
        current = [r for key, r in runs[name].items() if key.endswith(f"/{fingerprint(dataset)}")]
        methods = [m for m in METHOD_FACTORIES if any(r["method"] == m for r in current)]
        rows = summarise(current, dataset, methods)
        if rows:
            summaries[name] = rows
    info = describe_machine(torch.device("cpu")) | {
        "load_average_1min_before": load_before,
        "load_average_1min_after": load_average(),
    }
    md = [
        "# Balancing methods: test metrics and Δm over single-task models",
        "",
        "Every method with its default hyper-parameters (STCH: 1 warm-up epoch), `all_tasks` layout, gradient "
        "norms clipped to 1, the best-`val/mean` checkpoint tested; mean ± sample std over seeds. Δm: LibMTL's "
        "multi-task gain against the single-task models of the same seed (positive: better than single-task), "
        "on each head's primary metric and on all its metrics. fit s: wall seconds of `fit` per seed (single-task: "
        "all its models). Generated by `benchmarks/balancing_quality.py`.",
        "",
    ]
    for name, rows in summaries.items():
        dataset = specs[name]
        absent = [m for m in METHOD_FACTORIES if m not in {r["method"] for r in rows}]
        md += [f"## {name}: {', '.join(dataset.tasks)}", "", f"Settings: {dataset.settings}."]
        md += [f"Not run on this data set: {', '.join(absent)}." if absent else "Every method was run.", ""]
        md += [markdown_table(rows, dataset), ""]
    md += [
        f"![Δm per method]({STEM}.png)",
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in info.items()) + ".",
        "",
    ]
    markdown = "\n".join(md)
    print(markdown)
    if args.no_save:
        return
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{STEM}.md").write_text(markdown)
    payload = {"machine": info, "settings": {n: specs[n].settings for n in summaries}, "summary": summaries}
    (out / f"{STEM}.json").write_text(json.dumps(payload, indent=2) + "\n")
    with (out / f"{STEM}.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "dataset",
                "method",
                "family",
                "seeds",
                "task",
                "metric",
                "mean",
                "std",
                "delta_m_pct",
                "delta_m_pct_std",
                "delta_m_all_pct",
                "delta_m_all_pct_std",
                "fit_seconds",
            ]
        )
        for rows in summaries.values():
            for r in rows:
                dm = r["delta_m_pct"] or (None, None)
                dm_all = r["delta_m_all_pct"] or (None, None)
                for t in r["metric"]:
                    writer.writerow(
                        [
                            r["dataset"],
                            r["method"],
                            r["family"],
                            len(r["seeds"]),
                            t,
                            r["metric"][t],
                            *r[t],
                            *dm,
                            *dm_all,
                            round(r["fit_seconds"], 1),
                        ]
                    )
    plot(summaries, out / f"{STEM}.png")
    log.info("Wrote %s.{md,csv,json,png}", out / STEM)


if __name__ == "__main__":
    main()
