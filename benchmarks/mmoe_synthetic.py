"""Reproduction of the synthetic experiment of MMoE (Ma et al., KDD 2018, sections 3.2 and 5.2).

Ma, Zhao, Yi, Chen, Hong, Chi, "Modeling Task Relationships in Multi-task Learning with Multi-gate
Mixture-of-Experts", KDD 2018. Two regression tasks whose relatedness is one number, the cosine
``p`` of their weight vectors (`mtl.data.sources.MMoESynthetic`, the paper's generator); the paper
trains shared-bottom, one-gate MoE (OMoE) and multi-gate MoE (MMoE) with comparable parameter counts
at ``p`` in {0.5, 0.9, 1.0} and finds that every model does worse as ``p`` falls, shared-bottom the
most, and MMoE the least: MMoE's advantage grows as the tasks become less related.

Setup (the paper's where it states it):

* input dimension ``d = 100``, 10 sine terms, label noise ``N(0, 0.01)``, weight norm ``c = 1``;
* OMoE and MMoE: 8 experts, each one ReLU layer of 16 units (`mtl.necks.OMoE` / `mtl.necks.MMoE`
  on the raw input: a `TabularMLPEncoder` without hidden layers is the identity on ``x``);
* shared-bottom: one shared ReLU layer of 113 units (the paper's 13056 / (100 + 16), its parameter
  match; `TabularMLPEncoder` with ``hidden=[113]`` and the `SharedBottom` neck);
* towers: one ReLU layer of 8 units per task (`RegressionHead(hidden=[8])`, MSE loss);
* Adam. The paper grid-searches the learning rate over {1e-4, 1e-3, 1e-2}; here one rate,
  ``--lr`` (1e-3), for every model (see the README for the check that it suits all three).

Not taken from the paper (chosen here): 10,000 training examples, 10,000 test examples, batch 64,
``--epochs`` (40) epochs; every run draws new data and a new initialisation from its seed (the paper
averages 200 such runs; ``--seeds`` 5 here). Within a seed, every model and every ``p`` sees the same
inputs ``x``, the same orthonormal directions, sines and noise, and the same batch order: the
comparisons are paired. Both tasks' losses are summed at every step (every example carries both
labels), as in the paper.

Reported: the final test MSE (after the last epoch) per task and their mean, mean ± std (sample)
over seeds; each model against shared-bottom paired by seed (difference and relative reduction); the
change of MMoE's advantage from the largest to the smallest ``p`` with its standard error; the
run-to-run noise (`run_noise`); the parameter counts; and a figure: final test loss against ``p`` per
model with error bars, the paired reduction against ``p``, and the test-loss curves per ``p``.
Written to ``benchmarks/results/mmoe-synthetic.{md,json,png}``; finished runs are reused when the
script runs again with the same training settings.

Run (from the repository root; about 14 CPU minutes: 840 s of CPU, 80 minutes of wall time on a
2-core machine shared with other jobs)::

    nice -n 10 .venv/bin/python benchmarks/mmoe_synthetic.py
    .venv/bin/python benchmarks/mmoe_synthetic.py --seeds 1 --epochs 2 --no-save   # smoke test
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mtl.data.sources.mmoe_synthetic import MMoESynthetic
from mtl.encoders import TabularMLPEncoder
from mtl.heads import RegressionHead
from mtl.module import MultiTaskModule
from mtl.necks import MMoE, OMoE, SharedBottom
from mtl.plots import new_figure

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO_ROOT, describe_machine, load_average, mean_std, quiet_logs, save_results

INPUT_DIM = 100
TASKS = ("t0", "t1")
CORRELATIONS = (0.5, 0.9, 1.0)
NUM_EXPERTS, EXPERT_WIDTH, TOWER_WIDTH = 8, 16, 8
# The paper's parameter match: experts + towers of MMoE = shared layer + towers of shared-bottom.
SHARED_WIDTH = round(
    (INPUT_DIM * EXPERT_WIDTH * NUM_EXPERTS + len(TASKS) * EXPERT_WIDTH * TOWER_WIDTH)
    / (INPUT_DIM + len(TASKS) * TOWER_WIDTH)
)  # 13056 / 116 = 113

log = logging.getLogger("mmoe_synthetic")


def _module(hidden: list[int], neck: Any, lr: float) -> MultiTaskModule:
    encoder = TabularMLPEncoder(num_numeric=INPUT_DIM, hidden=hidden)
    heads = {t: RegressionHead(hidden=[TOWER_WIDTH]) for t in TASKS}
    return MultiTaskModule(encoder, heads, neck=neck, optimizer=partial(torch.optim.Adam, lr=lr))


MODELS: dict[str, Callable[[float], MultiTaskModule]] = {
    "shared-bottom": lambda lr: _module([SHARED_WIDTH], SharedBottom(), lr),
    "OMoE": lambda lr: _module([], OMoE(NUM_EXPERTS, [EXPERT_WIDTH]), lr),
    "MMoE": lambda lr: _module([], MMoE(NUM_EXPERTS, [EXPERT_WIDTH]), lr),
}


@dataclass
class Data:
    """One draw of the generator: training and test inputs ``[N, d]`` and targets per task."""

    x_train: Tensor
    y_train: dict[str, Tensor]
    x_test: Tensor
    y_test: dict[str, Tensor]


def load(correlation: float, seed: int, num_train: int, num_test: int) -> Data:
    splits = MMoESynthetic(
        tasks=len(TASKS),
        correlation=correlation,
        num_train=num_train,
        num_val=0,
        num_test=num_test,
        seed=seed,
    ).load()
    train, test = splits[TASKS[0]].train, splits[TASKS[0]].test
    assert test is not None
    return Data(
        train.inputs["numeric"],
        {t: splits[t].train.targets for t in TASKS},
        test.inputs["numeric"],
        {t: splits[t].test.targets for t in TASKS},  # type: ignore[union-attr]
    )


def _batch(x: Tensor, y: dict[str, Tensor], rows: Tensor | slice) -> dict[str, Any]:
    """A `mtl.data.collate`-shaped batch in which every row carries every task's label."""
    return {
        "inputs": {"numeric": x[rows]},
        "targets": {t: v[rows] for t, v in y.items()},
        "routes": dict.fromkeys(y),
    }


def test_losses(module: MultiTaskModule, data: Data) -> dict[str, float]:
    """Per-task test MSE (the heads' loss over the whole test set), in eval mode."""
    module.eval()
    with torch.no_grad():
        losses = module.task_losses(_batch(data.x_test, data.y_test, slice(None))).losses
    module.train()
    return {t: float(v) for t, v in losses.items()}


def train(model: str, data: Data, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train ``model`` on ``data`` with Adam; the test losses after every epoch, and the last ones."""
    torch.manual_seed(seed)
    module = MODELS[model](args.lr)
    optimizer = module.configure_optimizers()
    order = torch.Generator().manual_seed(seed)  # same batch order for every model of this seed
    n = len(data.x_train)
    curve = [test_losses(module, data)]
    for _ in range(args.epochs):
        for rows in torch.randperm(n, generator=order).split(args.batch_size):
            loss = module.task_losses(_batch(data.x_train, data.y_train, rows)).total
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        curve.append(test_losses(module, data))
    final = curve[-1]
    return {
        "test_loss": final,
        "test_loss_mean": statistics.fmean(final.values()),
        "curve_mean": [round(statistics.fmean(c.values()), 5) for c in curve],
        "parameters": sum(p.numel() for p in module.parameters()),
    }


# ------------------------------------------------------------------------------------- summary
def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (p, model): mean ± std over seeds of each task's final test loss and of their mean, and the
    paired comparison with shared-bottom on the same seed (same data): the difference shared-bottom -
    model and the relative reduction ``100 · (1 - model / shared-bottom)`` % (positive: the model is
    better). The seeds' data differ in difficulty (the sine frequencies are drawn per seed), so the
    paired columns are the ones that compare models."""
    rows = []
    for p in sorted({r["p"] for r in runs}):
        base = {r["seed"]: r["test_loss_mean"] for r in runs if r["p"] == p and r["model"] == "shared-bottom"}
        for model in MODELS:
            mine = [r for r in runs if r["p"] == p and r["model"] == model]
            if not mine:
                continue
            row: dict[str, Any] = {
                "p": p,
                "model": model,
                "seeds": len(mine),
                "parameters": mine[0]["parameters"],
            }
            for t in TASKS:
                row[t] = mean_std([r["test_loss"][t] for r in mine])
            row["mean"] = mean_std([r["test_loss_mean"] for r in mine])
            paired = [(base[r["seed"]], r["test_loss_mean"]) for r in mine if r["seed"] in base]
            row["gain_vs_shared_bottom"] = mean_std([b - m for b, m in paired]) if paired else None
            row["reduction_vs_shared_bottom_pct"] = (
                mean_std([100.0 * (1.0 - m / b) for b, m in paired]) if paired else None
            )
            rows.append(row)
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    def pm(v: tuple[float, float] | None, fmt: str = ".4f") -> str:
        return "" if v is None else f"{v[0]:{fmt}} ± {v[1]:{fmt.lstrip('+')}}"

    lines = [
        "| p | model | parameters | test MSE t0 | test MSE t1 | test MSE mean | shared-bottom - model "
        "(paired) | reduction vs shared-bottom % (paired) |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        base = r["model"] == "shared-bottom"
        lines.append(
            f"| {r['p']} | {r['model']} | {r['parameters']:,} | {pm(r['t0'])} | {pm(r['t1'])} | "
            f"**{pm(r['mean'])}** | {'' if base else pm(r['gain_vs_shared_bottom'])} | "
            f"{'' if base else pm(r['reduction_vs_shared_bottom_pct'], '+.1f')} |"
        )
    return "\n".join(lines)


def run_noise(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Per model, the run-to-run noise of the final test loss, in %: task ``t0``'s target is the same
    function at every p for a given seed (``w_1 = c u_1`` whatever p; same inputs, noise, sines,
    initialisation and batch order), so the spread of t0's final loss across p within a seed is
    training noise, not task relatedness. Mean over seeds of std / mean across p."""
    out = {}
    for model in MODELS:
        spreads = []
        for seed in sorted({r["seed"] for r in runs}):
            t0 = [r["test_loss"]["t0"] for r in runs if r["model"] == model and r["seed"] == seed]
            if len(t0) > 1:
                spreads.append(100.0 * statistics.stdev(t0) / statistics.fmean(t0))
        if spreads:
            out[model] = statistics.fmean(spreads)
    return out


def paired_gains(runs: list[dict[str, Any]], model: str, p: float) -> dict[int, tuple[float, float]]:
    """Per seed at correlation p: (shared-bottom - model, 100 · (1 - model / shared-bottom)) of the
    mean final test MSE."""
    base = {r["seed"]: r["test_loss_mean"] for r in runs if r["p"] == p and r["model"] == "shared-bottom"}
    return {
        r["seed"]: (
            base[r["seed"]] - r["test_loss_mean"],
            100.0 * (1.0 - r["test_loss_mean"] / base[r["seed"]]),
        )
        for r in runs
        if r["p"] == p and r["model"] == model and r["seed"] in base
    }


def finding(rows: list[dict[str, Any]], runs: list[dict[str, Any]]) -> str:
    """Whether MMoE's paired advantage over shared-bottom grows as p falls, in words: its value at
    every p, and its change from the largest to the smallest p, per seed, with its standard error
    (the paper's finding is a positive change); then the run-to-run noise (`run_noise`)."""
    ps = sorted({r["p"] for r in runs}, reverse=True)
    gains = {p: paired_gains(runs, "MMoE", p) for p in ps}
    parts = []
    for i, (label, fmt) in enumerate(
        (("difference in mean test MSE", "+.4f"), ("relative reduction %", "+.1f"))
    ):
        text = ", ".join(f"{statistics.fmean(g[i] for g in gains[p].values()):{fmt}} at p={p}" for p in ps)
        seeds = sorted(set(gains[ps[0]]) & set(gains[ps[-1]]))
        change = [gains[ps[-1]][s][i] - gains[ps[0]][s][i] for s in seeds]
        if len(change) > 1:
            mean, error = statistics.fmean(change), statistics.stdev(change) / len(change) ** 0.5
            text += f"; change from p={ps[0]} to p={ps[-1]}: {mean:{fmt}} ± {error:{fmt.lstrip('+')}} (s.e.)"
        parts.append(f"{label}: {text}")
    noise = ", ".join(f"{m} {v:.0f} %" for m, v in run_noise(runs).items())
    return (
        "MMoE against shared-bottom, paired by seed (positive: MMoE better; the paper's finding is a "
        "positive change as p falls): "
        + "; ".join(parts)
        + f". Run-to-run noise of a final test loss (task t0 is the same task at every p): {noise}."
    )


COLOURS = {"shared-bottom": "tab:red", "OMoE": "tab:green", "MMoE": "tab:blue"}


def plot(rows: list[dict[str, Any]], runs: list[dict[str, Any]], epochs: int, path: Path) -> None:
    """Top: final test loss vs p per model (mean ± std over seeds), and the paired reduction against
    shared-bottom vs p. Bottom: the test-loss curves per p (geometric mean and geometric std over
    seeds: the seeds' losses differ by a factor, so they average on a log scale)."""
    ps = sorted({r["p"] for r in rows})
    n = len(ps)
    figure = new_figure(4.5 * max(n, 2), 8.0)
    grid = figure.add_gridspec(2, 2 * n)
    loss_ax, gain_ax = figure.add_subplot(grid[0, :n]), figure.add_subplot(grid[0, n:])
    offsets = {m: (i - 1) * 0.006 for i, m in enumerate(MODELS)}  # side by side, so the bars stay apart
    for model in MODELS:
        mine = [r for r in rows if r["model"] == model]
        x = [r["p"] + offsets[model] for r in mine]
        style = {"marker": "o", "capsize": 4, "color": COLOURS[model], "label": model}
        loss_ax.errorbar(x, [r["mean"][0] for r in mine], yerr=[r["mean"][1] for r in mine], **style)
        if model != "shared-bottom":
            gains = [r["reduction_vs_shared_bottom_pct"] for r in mine]
            gain_ax.errorbar(x, [g[0] for g in gains], yerr=[g[1] for g in gains], **style)
    loss_ax.set_ylabel("final test MSE (mean of 2 tasks)")
    loss_ax.set_title("Final test loss, mean ± std over seeds")
    gain_ax.axhline(0.0, color="tab:red", linewidth=1, linestyle="--", label="shared-bottom")
    gain_ax.set_ylabel("test MSE reduction vs shared-bottom, %")
    gain_ax.set_title("Paired by seed: 100·(1 - model / shared-bottom)")
    for ax in (loss_ax, gain_ax):
        ax.set_xticks(ps)
        ax.set_xlabel("task correlation p")
        ax.legend()
    steps = torch.arange(epochs + 1)
    for i, p in enumerate(ps):
        ax = figure.add_subplot(grid[1, 2 * i : 2 * i + 2])
        for model in MODELS:
            curves = torch.tensor([r["curve_mean"] for r in runs if r["p"] == p and r["model"] == model])
            logs = curves.log()
            centre = logs.mean(0)
            spread = logs.std(0) if len(curves) > 1 else torch.zeros_like(centre)
            ax.plot(steps, centre.exp(), color=COLOURS[model], label=model)
            ax.fill_between(
                steps, (centre - spread).exp(), (centre + spread).exp(), color=COLOURS[model], alpha=0.15
            )
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("test MSE (mean of 2 tasks)")
        ax.set_title(f"p = {p}: geometric mean ± std over seeds")
        ax.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


# ---------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=5, help="runs per (model, p), seeds 0..n-1")
    p.add_argument("--correlations", type=float, nargs="+", default=list(CORRELATIONS))
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--num-train", type=int, default=10_000)
    p.add_argument("--num-test", type=int, default=10_000)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--out-dir", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    p.add_argument("--no-save", action="store_true", help="print the table only")
    args = p.parse_args(argv)
    if min(args.seeds, args.epochs, args.batch_size, args.num_train, args.num_test, args.threads) < 1:
        p.error("--seeds, --epochs, --batch-size, --num-train, --num-test and --threads must be >= 1.")
    if not all(-1.0 <= c <= 1.0 for c in args.correlations):
        p.error(f"--correlations must lie in [-1, 1], but got {args.correlations}.")
    return args


RESUME_KEYS = ("epochs", "batch_size", "lr", "num_train", "num_test")  # what a run's result depends on


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("mtl").setLevel(logging.WARNING)
    quiet_logs()
    torch.set_num_threads(args.threads)
    load_before = load_average()
    start, cpu_start = time.perf_counter(), time.process_time()
    path = args.out_dir / "mmoe-synthetic.json"
    runs: list[dict[str, Any]] = []
    spent = {"wall_seconds": 0, "cpu_seconds": 0}
    if not args.no_save and path.is_file():
        previous = json.loads(path.read_text())
        if all(previous["config"].get(k) == getattr(args, k) for k in RESUME_KEYS):  # same training
            runs = previous["runs"]
            spent = {k: previous["config"].get(k, 0) for k in spent}
            log.info("Reusing %d finished runs from %s.", len(runs), path)
    for seed in range(args.seeds):
        for p in args.correlations:
            todo = [
                m for m in MODELS if not any((r["seed"], r["p"], r["model"]) == (seed, p, m) for r in runs)
            ]
            if not todo:
                continue
            data = load(p, seed, args.num_train, args.num_test)
            for model in todo:
                run = {"p": p, "model": model, "seed": seed, **train(model, data, seed, args)}
                runs.append(run)
                log.info(
                    "seed %d p=%.2f %-13s test MSE %s (%.0f s)",
                    seed,
                    p,
                    model,
                    {t: round(v, 4) for t, v in run["test_loss"].items()},
                    time.perf_counter() - start,
                )
    runs = [r for r in runs if r["seed"] < args.seeds and r["p"] in args.correlations]
    rows = summarise(runs)
    table = markdown_table(rows)
    verdict = finding(rows, runs)
    print(table, "", verdict, sep="\n")
    if args.no_save:
        return
    config = {k: v for k, v in vars(args).items() if k not in ("out_dir", "no_save")} | {
        "input_dim": INPUT_DIM,
        "num_sines": 10,
        "noise_std": 0.1,
        "experts": f"{NUM_EXPERTS} x ReLU[{EXPERT_WIDTH}]",
        "shared_bottom": f"ReLU[{SHARED_WIDTH}]",
        "towers": f"ReLU[{TOWER_WIDTH}] -> 1",
        "optimizer": f"Adam(lr={args.lr})",
        "wall_seconds": spent["wall_seconds"] + round(time.perf_counter() - start),
        "cpu_seconds": spent["cpu_seconds"] + round(time.process_time() - cpu_start),
    }
    info = describe_machine(torch.device("cpu")) | {
        "load_average_1min_before": load_before,
        "load_average_1min_after": load_average(),
    }
    write(args, config, rows, runs, table, verdict, info)


def write(
    args: argparse.Namespace,
    config: dict[str, Any],
    rows: list[dict[str, Any]],
    runs: list[dict[str, Any]],
    table: str,
    verdict: str,
    info: dict[str, Any],
) -> None:
    """``mmoe-synthetic.{md,json,png}`` under ``--out-dir``."""
    args.out_dir.mkdir(parents=True, exist_ok=True)
    plot(rows, runs, args.epochs, args.out_dir / "mmoe-synthetic.png")
    md = [
        "# MMoE synthetic reproduction (Ma et al., KDD 2018, section 5.2)",
        "",
        f"Two regression tasks at correlation p, {args.num_train:,} training / {args.num_test:,} test "
        f"examples per run, d = {INPUT_DIM}; OMoE/MMoE: {config['experts']} experts; shared-bottom: "
        f"{config['shared_bottom']}; towers {config['towers']}; {config['optimizer']}, batch "
        f"{args.batch_size}, {args.epochs} epochs; {args.seeds} seeds (new data and initialisation "
        "per seed, paired across models and p). Final test MSE, mean ± sample std over seeds; the "
        "paired columns compare each model with shared-bottom on the same seed (positive: better "
        f"than shared-bottom). {config['wall_seconds']} s wall, {config['cpu_seconds']} s CPU. Generated "
        "by `benchmarks/mmoe_synthetic.py`.",
        "",
        table,
        "",
        verdict,
        "",
        "![final test loss vs p, and test-loss curves](mmoe-synthetic.png)",
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in info.items() if v is not None) + ".",
        "",
    ]
    payload = {"config": config, "machine": info, "summary": rows, "finding": verdict, "runs": runs}
    path = save_results(args.out_dir, "mmoe-synthetic", "\n".join(md), payload)
    log.info("Wrote %s, .json and .png", path)


if __name__ == "__main__":
    main()
