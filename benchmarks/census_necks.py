"""Census-Income (income, marital): single-task, shared-bottom, MMoE and PLE, test AUROC over seeds.

The real-data benchmark of MMoE (Ma et al., KDD 2018, section 6.3: UCI Census-Income with the tasks
``income`` > 50K and ``marital`` = never married) and of PLE (Tang et al., RecSys 2020), trained as
the quickstart trains (``configs/quickstart.yaml``): `MultiTaskModule` under `lightning.Trainer`,
AdamW (lr 1e-3, weight decay 1e-4), batch 1024 (one task per batch), 4 epochs, validation every
epoch, and the test of the checkpoint with the best ``val/mean`` (``--test_after_fit``). Every model
has the same trunk, the quickstart encoder's embeddings and first layer (`TabularMLPEncoder`,
``hidden=[256]``, dropout 0.1), and a `BinaryHead` with a 64-unit hidden layer per task; what follows
the trunk is the variant, sized so that the parameters after the trunk are comparable (the script
prints the counts):

* single-task: the quickstart's second layer (128 units) and one head, trained on one task alone
  (one model per task);
* shared-bottom: the quickstart itself (second layer of 128 units shared by both heads);
* MMoE: 8 experts of one ReLU layer of 24 units, a softmax gate per task (`mtl.necks.MMoE`);
* PLE: 2 levels of 2 shared + 2 per-task experts of 24 units (`mtl.necks.PLE`);
* MMoE as shipped in ``configs/examples/quickstart_mmoe.yaml`` (the quickstart's encoder
  ``[256, 128]`` followed by 8 experts of 64 units): the candidate the quickstart would switch to.

Each seed sets the initialisation, dropout and batch order (``seed_everything`` and the data module's
seed); the validation/test split of the official test file is the source's (seed 0) in every run, so
every model is tested on the same rows. Reported: test AUROC per task, mean ± sample std over seeds;
Δm (`mtl.delta_m`, Maninis et al., CVPR 2019) against the single-task models of the same seed, mean
± std; parameters; training time. A bar plot with error bars. Written to
``benchmarks/results/census-necks.{md,json,png}``; finished runs are kept in the JSON and skipped
when the script runs again with the same settings (raise ``--seeds`` to add seeds).

Run (from the repository root; about 4 to 5 CPU minutes per seed, the quickstart's ~45 s per model)::

    nice -n 10 .venv/bin/python benchmarks/census_necks.py --seeds 5
    .venv/bin/python benchmarks/census_necks.py --seeds 1 --epochs 1 --max-train 20000 --no-save  # smoke test
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import lightning
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from mtl.data.datamodule import MultiTaskDataModule
from mtl.data.sources.base import DataSource, TaskSplits
from mtl.data.sources.census_income import CensusIncome
from mtl.delta_m import delta_m
from mtl.encoders import TabularMLPEncoder
from mtl.heads import BinaryHead
from mtl.module import MultiTaskModule
from mtl.necks import PLE, MMoE, Neck, SharedBottom
from mtl.plots import new_figure

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO_ROOT, describe_machine, load_average, mean_std, quiet_logs, save_results

TASKS = ("income", "marital")
METRIC = "auroc"
SINGLE_TASK = "single-task"

log = logging.getLogger("census_necks")


# ------------------------------------------------------------------------------------------ models
@dataclass(frozen=True)
class Variant:
    """A model family: encoder hidden widths after the shared embeddings, a neck factory, and the task
    sets it is trained on (one model per set: single-task trains one model per task)."""

    hidden: list[int]
    neck: Callable[[], Neck]
    task_sets: tuple[tuple[str, ...], ...] = (TASKS,)
    note: str = ""


VARIANTS: dict[str, Variant] = {
    SINGLE_TASK: Variant([256, 128], SharedBottom, tuple((t,) for t in TASKS), "one model per task"),
    "shared-bottom": Variant([256, 128], SharedBottom, note="the quickstart"),
    "MMoE": Variant([256], lambda: MMoE(8, [24]), note="8 experts x [24]"),
    "PLE": Variant([256], lambda: PLE(2, 2, 2, [24]), note="2 levels x (2 shared + 2 per task) x [24]"),
    "MMoE (quickstart_mmoe.yaml)": Variant(
        [256, 128], lambda: MMoE(8, [64]), note="encoder [256, 128] + 8 experts x [64]"
    ),
}


def build(variant: Variant, tasks: tuple[str, ...], spec: dict[str, Any], lr: float) -> MultiTaskModule:
    """The quickstart's model with ``variant``'s encoder widths and neck, for ``tasks``."""
    encoder = TabularMLPEncoder(
        spec["num_numeric"], spec["cardinalities"], hidden=variant.hidden, dropout=0.1
    )
    heads = {t: BinaryHead(hidden=[64]) for t in tasks}
    optimizer = partial(torch.optim.AdamW, lr=lr, weight_decay=1e-4)
    return MultiTaskModule(encoder, heads, neck=variant.neck(), optimizer=optimizer)


def trunk_parameters(module: MultiTaskModule) -> int:
    """Parameters of the embeddings and the encoder's first layer, which every variant shares."""
    encoder = module.encoder
    first = next(m for m in encoder.mlp if isinstance(m, torch.nn.Linear))
    return sum(p.numel() for p in encoder.embeddings.parameters()) + sum(
        p.numel() for p in first.parameters()
    )


class Preloaded(DataSource):
    """Some tasks of an already loaded source, so that every run shares one read of Census-Income."""

    def __init__(self, splits: dict[str, TaskSplits], spec: dict[str, Any]) -> None:
        self.splits, self.spec = splits, spec
        self.tasks = self.available_tasks = tuple(splits)

    def load(self) -> dict[str, TaskSplits]:
        return dict(self.splits)

    def input_spec(self) -> dict[str, Any]:
        return self.spec


# ------------------------------------------------------------------------------------------ a run
def run(
    variant: str, tasks: tuple[str, ...], seed: int, data: Preloaded, args: argparse.Namespace
) -> dict[str, Any]:
    """Train one model as the quickstart does and test its best checkpoint (by ``val/mean``)."""
    lightning.seed_everything(seed, verbose=False)
    source = Preloaded({t: data.splits[t] for t in tasks}, data.spec)
    dm = MultiTaskDataModule(source, batch_size=args.batch_size, eval_batch_size=4096, seed=seed)
    module = build(VARIANTS[variant], tasks, data.spec, args.lr)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = ModelCheckpoint(dirpath=tmp, monitor="val/mean", mode="max")
        trainer = Trainer(
            max_epochs=args.epochs,
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[checkpoint],
            use_distributed_sampler=False,
        )
        trainer.fit(module, datamodule=dm)
        fit_s = time.perf_counter() - start
        best_epoch = int(torch.load(checkpoint.best_model_path, weights_only=True)["epoch"])
        metrics = trainer.test(module, datamodule=dm, ckpt_path="best", verbose=False)[0]
    return {
        "variant": variant,
        "tasks": list(tasks),
        "seed": seed,
        "auroc": {t: float(metrics[f"test/{t}/{METRIC}"]) for t in tasks},
        "best_epoch": best_epoch,
        "fit_seconds": round(fit_s, 1),
        "parameters": sum(p.numel() for p in module.parameters()),
        "parameters_after_trunk": sum(p.numel() for p in module.parameters()) - trunk_parameters(module),
    }


# ------------------------------------------------------------------------------------------ summary
def per_seed(runs: list[dict[str, Any]], variant: str) -> dict[int, dict[str, Any]]:
    """``seed -> {"auroc": {task: value}, "fit_seconds", "parameters", ...}`` with a variant's models
    of one seed merged (single-task: the per-task models together)."""
    out: dict[int, dict[str, Any]] = {}
    for r in runs:
        if r["variant"] != variant:
            continue
        merged = out.setdefault(r["seed"], {"auroc": {}, "fit_seconds": 0.0, "parameters": 0, "after": 0})
        merged["auroc"].update(r["auroc"])
        merged["fit_seconds"] += r["fit_seconds"]
        merged["parameters"] += r["parameters"]
        merged["after"] += r["parameters_after_trunk"]
    return {s: m for s, m in out.items() if set(m["auroc"]) == set(TASKS)}


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per variant: AUROC per task and their mean (mean ± std over seeds), Δm against the single-task
    models of the same seed (mean ± std), parameters and training time."""
    baselines = per_seed(runs, SINGLE_TASK)
    directions = {t: {METRIC: True} for t in TASKS}
    rows = []
    for name, variant in VARIANTS.items():
        seeds = per_seed(runs, name)
        if not seeds:
            continue
        row: dict[str, Any] = {"variant": name, "note": variant.note, "seeds": sorted(seeds)}
        for t in TASKS:
            row[t] = mean_std([m["auroc"][t] for m in seeds.values()])
        row["mean"] = mean_std([statistics.fmean(m["auroc"].values()) for m in seeds.values()])
        paired = [
            delta_m(
                {t: {METRIC: v} for t, v in m["auroc"].items()},
                {t: {METRIC: v} for t, v in baselines[s]["auroc"].items()},
                directions,
            )
            for s, m in seeds.items()
            if s in baselines
        ]
        row["delta_m_pct"] = mean_std(paired) if paired and name != SINGLE_TASK else None
        first = next(iter(seeds.values()))
        row["parameters"], row["parameters_after_trunk"] = first["parameters"], first["after"]
        row["fit_seconds"] = mean_std([m["fit_seconds"] for m in seeds.values()])
        rows.append(row)
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    def pm(v: tuple[float, float], digits: int = 4) -> str:
        return f"{v[0]:.{digits}f} ± {v[1]:.{digits}f}"

    lines = [
        "| model | seeds | parameters (after the trunk) | test AUROC income | test AUROC marital | mean | "
        "Δm vs single-task % | training s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        dm = "" if r["delta_m_pct"] is None else f"{r['delta_m_pct'][0]:+.3f} ± {r['delta_m_pct'][1]:.3f}"
        lines.append(
            f"| {r['variant']} ({r['note']}) | {len(r['seeds'])} | {r['parameters']:,} "
            f"({r['parameters_after_trunk']:,}) | {pm(r['income'])} | {pm(r['marital'])} | **{pm(r['mean'])}** "
            f"| {dm} | {r['fit_seconds'][0]:.0f} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Test AUROC per model (mean ± std over seeds), one panel per task."""
    figure = new_figure(5.0 * len(TASKS), 4.2)
    axes = figure.subplots(1, len(TASKS))
    names = [r["variant"] for r in rows]
    colours = [f"C{i}" for i in range(len(rows))]
    for ax, task in zip(axes, TASKS, strict=True):
        means = [r[task][0] for r in rows]
        stds = [r[task][1] for r in rows]
        ax.bar(range(len(rows)), means, yerr=stds, capsize=5, color=colours)
        low = min(m - s for m, s in zip(means, stds, strict=True))
        high = max(m + s for m, s in zip(means, stds, strict=True))
        margin = max(high - low, 1e-3)
        ax.set_ylim(low - margin, high + 0.5 * margin)  # AUROCs differ in the 3rd decimal: zoom in
        ax.set_xticks(range(len(rows)), names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("test AUROC")
        ax.set_title(f"{task} (mean ± std over {len(rows[0]['seeds'])} seeds)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


# ------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..n-1 per model")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--max-train", type=int, default=None, help="subsample the training rows (smoke tests)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--out-dir", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    p.add_argument("--no-save", action="store_true", help="print the table only")
    args = p.parse_args(argv)
    if min(args.seeds, args.epochs, args.batch_size) < 1:
        p.error("--seeds, --epochs and --batch-size must be >= 1.")
    if SINGLE_TASK not in args.variants:
        p.error(f"--variants must include {SINGLE_TASK!r}: Δm compares with it.")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    quiet_logs()
    logging.getLogger("mtl").setLevel(logging.WARNING)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    settings = {k: v for k, v in vars(args).items() if k not in ("out_dir", "no_save", "seeds", "variants")}
    path = args.out_dir / "census-necks.json"
    runs: list[dict[str, Any]] = []
    if not args.no_save and path.is_file():
        previous = json.loads(path.read_text())
        if previous["config"]["settings"] == settings:  # same training: its runs count
            runs = previous["runs"]
            log.info("Reusing %d finished runs from %s.", len(runs), path)
    load_before = load_average()
    census = CensusIncome(tasks=TASKS, max_train_examples=args.max_train)
    data = Preloaded(census.load(), census.input_spec())
    start = time.perf_counter()
    for seed in range(args.seeds):  # seed-major: a partial result already has whole seeds
        for name in args.variants:
            for tasks in VARIANTS[name].task_sets:
                if any(
                    r["variant"] == name and r["seed"] == seed and tuple(r["tasks"]) == tasks for r in runs
                ):
                    continue
                runs.append(run(name, tasks, seed, data, args))
                log.info(
                    "seed %d %s %s: AUROC %s, best epoch %d, %.0f s (%.0f s elapsed)",
                    seed,
                    name,
                    tasks,
                    {t: round(v, 4) for t, v in runs[-1]["auroc"].items()},
                    runs[-1]["best_epoch"],
                    runs[-1]["fit_seconds"],
                    time.perf_counter() - start,
                )
                if not args.no_save:  # after every run, so that an interrupted sweep resumes
                    save(args, settings, runs, load_before, figure=False)
    rows = summarise(runs)
    print(markdown_table(rows))
    if not args.no_save:
        save(args, settings, runs, load_before, figure=True)


def save(
    args: argparse.Namespace,
    settings: dict[str, Any],
    runs: list[dict[str, Any]],
    load_before: float | None,
    figure: bool,
) -> None:
    """Write the runs and their summary (``.json``); with ``figure``, also the ``.md`` and ``.png``."""
    rows = summarise(runs)
    info = describe_machine(torch.device("cpu")) | {
        "load_average_1min_before": load_before,
        "load_average_1min_after": load_average(),
    }
    config = {
        "settings": settings,
        "variants": {k: {"encoder_hidden": v.hidden, "note": v.note} for k, v in VARIANTS.items()},
        "trunk": "TabularMLPEncoder embeddings + hidden[0]=256, dropout 0.1",
        "heads": "BinaryHead(hidden=[64]) per task",
        "optimizer": f"AdamW(lr={args.lr}, weight_decay=1e-4)",
        "selection": "best val/mean checkpoint, tested",
    }
    payload = {"config": config, "machine": info, "summary": rows, "runs": runs}
    if not figure or not rows:  # progress: the runs so far, so that an interrupted sweep resumes
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / "census-necks.json").write_text(json.dumps(payload, indent=2) + "\n")
        return
    plot(rows, args.out_dir / "census-necks.png")
    md = [
        "# Census-Income (income, marital): single-task, shared-bottom, MMoE, PLE",
        "",
        f"Test AUROC of the best-`val/mean` checkpoint, mean ± sample std over seeds; {args.epochs} epochs, "
        f"batch {args.batch_size}, {config['optimizer']}; trunk: {config['trunk']}; {config['heads']}. "
        "Parameters: the whole model (single-task: both models), in brackets those after the shared "
        "trunk. Δm: mean relative AUROC change against the single-task models of the same seed "
        f"(positive: better). Training s: wall seconds of `fit` ({args.epochs} validation passes "
        "included) per seed (single-task: both models), on a machine shared with other jobs: "
        "`necks_speed.py` measures the cost properly. Generated by `benchmarks/census_necks.py`.",
        "",
        markdown_table(rows),
        "",
        "![test AUROC per model](census-necks.png)",
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in info.items() if v is not None) + ".",
        "",
    ]
    path = save_results(args.out_dir, "census-necks", "\n".join(md), payload)
    log.info("Wrote %s, .json and .png", path)


if __name__ == "__main__":
    main()
