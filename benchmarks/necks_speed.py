"""Training steps per second of every neck against shared-bottom on Census-Income, at equal expert width.

Every model has the same trunk, `TabularMLPEncoder` with one hidden layer of 256 units (the
quickstart's first layer), and a `BinaryHead` with a 64-unit hidden layer per task (``income``,
``marital``). What sits between them is the variant:

* shared-bottom: one shared ReLU layer of ``W = 128`` units (the quickstart's second layer), i.e. the
  encoder ``hidden=[256, 128]`` and the `SharedBottom` neck;
* every mixture-of-experts neck with experts of that same width (one ReLU layer of ``W`` units each):
  `OMoE` and `MMoE` with 8 experts, `CGC` and `PLE` (2 levels) with 4 shared + 2 per task = 8 experts
  per level, `DSelectK` with 8 experts and k = 2 (per-example gates), `TaskSparseMoE` with 8 experts and
  k = 2 (so each row runs 2 experts), `HoME` with 4 shared + 2 per task + 1 category expert;
* the reference of issue 4: an MMoE whose 8 experts are separate ``nn.Linear`` layers run in a Python
  loop (`LoopedMMoE`, defined here only; before timing, the script checks that it computes exactly
  what `MMoE` computes with the same weights).

A step is what training does: ``MultiTaskModule.task_losses`` (encoder, neck, heads, losses and any
auxiliary loss), ``backward`` and an AdamW step (lr 1e-3), on real Census-Income batches from the
`MultiTaskDataModule` train dataloader (the quickstart's: batch 1024, one task per batch), fetched
once before timing and cycled, so that the data pipeline is not timed (see ``sampling.py`` for it).
No dropout anywhere, so that every variant's compute is only its layers'.

Timing is lockstep: every repeat runs a block of ``--steps`` steps of every variant in turn, in an
order rotated every repeat, so that drift in the machine's speed hits all variants alike; every
variant sees the same batches in the same order. Reported: the median over repeats of steps/s, and
the median over repeats of each repeat's ratio to shared-bottom's steps/s in the same repeat.

Run (from the repository root)::

    .venv/bin/python benchmarks/necks_speed.py                         # CPU (or CUDA if available)
    .venv/bin/python benchmarks/necks_speed.py --steps 5 --repeats 1 --no-save   # smoke test
    python benchmarks/necks_speed.py --device cuda --batch-size 4096

Writes ``benchmarks/results/necks-speed-<device>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import logging
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from torch import Tensor, nn

from mtl.data.datamodule import MultiTaskDataModule
from mtl.data.sources.census_income import CensusIncome
from mtl.encoders import TabularMLPEncoder
from mtl.features import Features
from mtl.heads import BinaryHead
from mtl.module import MultiTaskModule
from mtl.necks import CGC, PLE, DSelectK, HoME, MMoE, Neck, OMoE, SharedBottom, TaskSparseMoE
from mtl.necks.diagnostics import nonpositive_share

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    REPO_ROOT,
    describe_machine,
    load_average,
    rotated,
    save_results,
    start_benchmark,
    wait_for_quiet,
)

TASKS = ("income", "marital")
TRUNK, WIDTH, HEAD_HIDDEN = 256, 128, 64
LR = 1e-3
SEED = 0
SHARED_BOTTOM = "shared-bottom"
LOOPED = "MMoE, Python loop over nn.Linear experts"
# `pgrep -f` patterns of heavy processes to wait for before timing (other benchmarks, test runs).
WAIT_FOR = [
    "pytest",
    "benchmarks/overhead.py",
    "benchmarks/sampling.py",
    "benchmarks/census_necks.py",
    "benchmarks/mmoe_synthetic.py",
]

log = logging.getLogger("necks_speed")


# ------------------------------------------------------------------------------- the looped reference
class LoopedExperts(nn.Module):
    """``K`` expert MLPs as separate ``nn.Linear`` stacks, evaluated one after the other in Python.

    Output ``[..., K, out]`` (and with ``activity`` the share of zero outputs ``[..., K]``) like
    `mtl.necks.StackedExperts`, so it can stand in for it.
    """

    def __init__(self, num_experts: int, in_features: int, hidden: Sequence[int]) -> None:
        super().__init__()
        widths = [in_features, *hidden]
        self.experts = nn.ModuleList(
            nn.Sequential(
                *itertools.chain.from_iterable(
                    (nn.Linear(i, o), nn.ReLU()) for i, o in itertools.pairwise(widths)
                )
            )
            for _ in range(num_experts)
        )

    def forward(self, x: Tensor, activity: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        h = torch.stack([expert(x) for expert in self.experts], dim=-2)
        return (h, nonpositive_share(h)) if activity else h


class LoopedMMoE(MMoE):
    """`MMoE` (Ma et al., KDD 2018) whose experts run in a Python loop: the slow way issue 4 rules out.

    Gates, mixing and routing are `MMoE`'s; only the experts differ (`LoopedExperts`). Same
    hyper-parameters as `MMoE`, without dropout.
    """

    def build(self, in_features: int, tasks: list[str]) -> None:
        super().build(in_features, tasks)
        self.experts = LoopedExperts(self.num_experts, in_features, self.expert_hidden)


def check_looped_reference(in_features: int = 16, hidden: Sequence[int] = (8, 4)) -> float:
    """Max abs difference between `LoopedMMoE` and `MMoE` given the same weights (must be ~0)."""
    torch.manual_seed(SEED)
    batched, looped = MMoE(3, list(hidden)), LoopedMMoE(3, list(hidden))
    for neck in (batched, looped):
        neck.bind(in_features, list(TASKS))
    looped.gates.load_state_dict(batched.gates.state_dict())
    with torch.no_grad():
        for k, expert in enumerate(looped.experts.experts):
            linears = [m for m in expert if isinstance(m, nn.Linear)]
            for linear, weight, bias in zip(
                linears, batched.experts.weights, batched.experts.biases, strict=True
            ):
                linear.weight.copy_(weight[k].T)
                linear.bias.copy_(bias[k])
    x = Features(pooled=torch.randn(5, in_features))
    routes = {TASKS[0]: torch.tensor([0, 2, 4]), TASKS[1]: None}
    with torch.no_grad():
        a, b = batched(x, routes).features, looped(x, routes).features
    return max(float((a[t].pooled - b[t].pooled).abs().max()) for t in TASKS)


# ------------------------------------------------------------------------------------------ variants
@dataclass(frozen=True)
class Variant:
    """A model to time: the encoder's hidden widths, a neck factory, and the expert MLPs one training
    row runs through (all levels; for the table)."""

    hidden: list[int]
    neck: Callable[[], Neck]
    experts: str


def census_variants(num_experts: int) -> dict[str, Variant]:
    """Every neck with experts of one ReLU layer of `WIDTH` units, and shared-bottom."""
    k, shared, per_task = num_experts, num_experts // 2, num_experts // 4  # CGC/PLE: half shared
    e, trunk = [WIDTH], [TRUNK]
    home_meta, home_task = 1 + shared, len(TASKS) * per_task + 1 + shared  # one category expert
    return {
        SHARED_BOTTOM: Variant([TRUNK, WIDTH], SharedBottom, "1 (the shared layer)"),
        LOOPED: Variant(trunk, lambda: LoopedMMoE(k, e), f"{k}"),
        "MMoE": Variant(trunk, lambda: MMoE(k, e), f"{k}"),
        "OMoE": Variant(trunk, lambda: OMoE(k, e), f"{k}"),
        "CGC": Variant(
            trunk, lambda: CGC(shared, per_task, e), f"{shared + per_task} of {k} (task's + shared)"
        ),
        "PLE (2 levels)": Variant(trunk, lambda: PLE(2, shared, per_task, e), f"{k} + {shared + per_task}"),
        "DSelectK (k=2)": Variant(trunk, lambda: DSelectK(k, 2, e), f"{k}"),
        "TaskSparseMoE (k=2)": Variant(trunk, lambda: TaskSparseMoE(k, 2, e), f"2 of {k}"),
        "HoME": Variant(trunk, lambda: HoME(shared, per_task, e), f"{home_meta} + {home_task}"),
    }


def build(spec: dict[str, Any], hidden: list[int], neck: Neck) -> MultiTaskModule:
    encoder = TabularMLPEncoder(spec["num_numeric"], spec["cardinalities"], hidden=hidden)
    heads = {t: BinaryHead(hidden=[HEAD_HIDDEN]) for t in TASKS}
    return MultiTaskModule(encoder, heads, neck=neck, optimizer=partial(torch.optim.AdamW, lr=LR))


# -------------------------------------------------------------------------------------------- timing
@dataclass
class Runner:
    """One variant's model and optimizer, stepping through the shared batches in order."""

    name: str
    experts: str
    module: MultiTaskModule
    optimizer: torch.optim.Optimizer
    batches: list[dict[str, Any]]
    device: torch.device
    position: int = 0
    steps_per_s: list[float] = field(default_factory=list)
    cpu_ms_per_step: list[float] = field(default_factory=list)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def step(self) -> None:
        batch = self.batches[self.position % len(self.batches)]
        self.position += 1
        loss = self.module.task_losses(batch).total
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def run(self, steps: int, timed: bool = True) -> None:
        self._sync()
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            self.step()
        self._sync()
        if timed:
            self.steps_per_s.append(steps / (time.perf_counter() - wall))
            self.cpu_ms_per_step.append(1e3 * (time.process_time() - cpu) / steps)


def lockstep(runners: list[Runner], steps: int, warmup: int, repeats: int) -> None:
    """Warm every runner up, then ``repeats`` rounds of one block per runner, the order rotated."""
    for runner in runners:
        runner.run(warmup, timed=False)
    for r in range(repeats):
        gc.collect()  # outside the blocks
        for runner in rotated(runners, r):
            runner.run(steps)
        log.info(
            "repeat %d/%d: %s",
            r + 1,
            repeats,
            ", ".join(f"{x.name}: {x.steps_per_s[-1]:.1f}" for x in runners),
        )


def fetch_batches(batch_size: int, count: int, layout: str, device: torch.device) -> tuple[list[Any], Any]:
    """The first ``count`` batches of the Census-Income train dataloader, on ``device``."""
    dm = MultiTaskDataModule(CensusIncome(tasks=TASKS), batch_size=batch_size, layout=layout, seed=SEED)
    dm.setup("fit")
    loader: Iterator[Any] = iter(dm.train_dataloader())
    batches = [move_data_to_device(b, device) for b in itertools.islice(loader, count)]
    return batches, dm.source.input_spec()


# ------------------------------------------------------------------------------------------ report
def summarise(runners: list[Runner], batch_size: int) -> list[dict[str, Any]]:
    base = next(r for r in runners if r.name == SHARED_BOTTOM)
    rows = []
    for r in runners:
        ratios = [a / b for a, b in zip(r.steps_per_s, base.steps_per_s, strict=True)]
        neck = r.module.neck
        rows.append(
            {
                "variant": r.name,
                "experts_per_row": r.experts,
                "neck_parameters": sum(p.numel() for p in neck.parameters()),
                "parameters": sum(p.numel() for p in r.module.parameters()),
                "steps_per_s": statistics.median(r.steps_per_s),
                "ms_per_step": 1e3 / statistics.median(r.steps_per_s),
                "examples_per_s": batch_size * statistics.median(r.steps_per_s),
                "ratio_to_shared_bottom": statistics.median(ratios),
                "cpu_ms_per_step": statistics.median(r.cpu_ms_per_step),
                "runs_steps_per_s": [round(x, 2) for x in r.steps_per_s],
            }
        )
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| variant | experts per row | parameters (neck) | steps/s | ms/step | ratio to shared-bottom | "
        "slower than shared-bottom |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['experts_per_row']} | {r['parameters']:,} ({r['neck_parameters']:,}) | "
            f"{r['steps_per_s']:.1f} | {r['ms_per_step']:.1f} | {r['ratio_to_shared_bottom']:.3f} | "
            f"{1 / r['ratio_to_shared_bottom']:.2f}x |"
        )
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    p.add_argument("--device", choices=["cpu", "cuda"], default=default_device)
    p.add_argument("--steps", type=int, default=50, help="timed steps per variant per repeat")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps per variant first")
    p.add_argument("--repeats", type=int, default=7, help="lockstep rounds (medians reported)")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--batches", type=int, default=40, help="distinct real batches, cycled")
    p.add_argument("--num-experts", type=int, default=8, help="experts per neck (multiple of 4)")
    p.add_argument("--layout", choices=["homogeneous", "mixed", "all_tasks"], default="homogeneous")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (CPU)")
    p.add_argument("--no-wait", action="store_true", help="time at once, without waiting for WAIT_FOR")
    p.add_argument("--out-dir", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    p.add_argument("--no-save", action="store_true", help="print the table only")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available here (torch.cuda.is_available() is False).")
    if min(args.steps, args.warmup, args.repeats, args.batch_size, args.batches, args.threads) < 1:
        p.error("--steps, --warmup, --repeats, --batch-size, --batches and --threads must be >= 1.")
    if args.num_experts < 4 or args.num_experts % 4:
        p.error(
            f"--num-experts must be a multiple of 4 (CGC/PLE/HoME split them), but got {args.num_experts}."
        )
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start_benchmark(args.threads)
    device = torch.device(args.device)
    difference = check_looped_reference()
    if difference > 1e-5:
        raise AssertionError(
            f"Expected LoopedMMoE to match MMoE with the same weights, but they differ by {difference}."
        )
    log.info("LoopedMMoE matches MMoE with the same weights (max abs difference %.1e).", difference)
    batches, spec = fetch_batches(args.batch_size, args.batches, args.layout, device)
    runners = []
    for name, variant in census_variants(args.num_experts).items():
        torch.manual_seed(SEED)
        module = build(spec, variant.hidden, variant.neck()).to(device)
        module.train()
        runners.append(Runner(name, variant.experts, module, module.configure_optimizers(), batches, device))
    waited = 0.0 if args.no_wait else wait_for_quiet(WAIT_FOR)
    load_before = load_average()
    start = time.perf_counter()
    lockstep(runners, args.steps, args.warmup, args.repeats)
    rows = summarise(runners, args.batch_size)
    table = markdown_table(rows)
    print(table)
    if args.no_save:
        return
    config = {k: v for k, v in vars(args).items() if k not in ("out_dir", "no_save")} | {
        "trunk": f"TabularMLPEncoder hidden [{TRUNK}]",
        "expert_width": WIDTH,
        "heads": f"BinaryHead(hidden=[{HEAD_HIDDEN}]) per task {list(TASKS)}",
        "optimizer": f"AdamW(lr={LR})",
        "looped_reference_max_abs_difference": difference,
        "timed_seconds": round(time.perf_counter() - start, 1),
    }
    info = describe_machine(device) | {
        "waited_for_other_processes_s": round(waited),
        "load_average_1min_before": load_before,
        "load_average_1min_after": load_average(),
    }
    slow = next(r for r in rows if r["variant"] == LOOPED)
    fast = next(r for r in rows if r["variant"] == "MMoE")
    md = [
        f"# Neck training speed against shared-bottom on Census-Income ({args.device})",
        "",
        f"Steps/s of a training step (forward, losses, backward, AdamW) on real Census-Income batches of "
        f"{args.batch_size} ({args.layout} layout), trunk {config['trunk']}, every expert one ReLU layer of "
        f"{WIDTH} units (shared-bottom: one shared layer of {WIDTH}), {config['heads']}; "
        f"{args.num_experts} experts per neck. Lockstep: {args.repeats} rounds of {args.steps} steps per "
        f"variant after {args.warmup} warm-up steps, the order rotated every round; medians over rounds "
        f"(the ratio: median of each round's ratio). {args.threads} torch thread(s). Generated by "
        "`benchmarks/necks_speed.py`.",
        "",
        table,
        "",
        f"Batched MMoE vs the Python loop over `nn.Linear` experts: {fast['steps_per_s'] / slow['steps_per_s']:.2f}x "
        f"the steps/s ({fast['ratio_to_shared_bottom']:.3f} vs {slow['ratio_to_shared_bottom']:.3f} of "
        "shared-bottom's).",
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in info.items() if v is not None) + ".",
        "",
    ]
    payload = {"config": config, "machine": info, "results": rows}
    path = save_results(args.out_dir, f"necks-speed-{args.device}", "\n".join(md), payload)
    log.info("Wrote %s and .json", path)


if __name__ == "__main__":
    main()
