"""Sampler throughput, and the data pipeline's share of a training step (CPU).

1. Indices per second of one epoch of each training batch sampler (every task sampler under every
   layout, and `EvaluationBatchSampler`; index arithmetic only) for Census-Income-sized tasks and 20
   uneven tasks, on 1 rank and on rank 0 of 2.
2. A plain loop over the `MultiTaskDataModule` train dataloader (``num_workers=0``) for the quickstart
   and the text example: data (``next(iterator)``) / (data + compute) per step. The quickstart runs
   the shipped loader (`TaggedConcat.__getitems__` gathers tensor datasets a batch at a time) and the
   per-example baseline: the same `TaggedConcat` behind `PerExample` (``__len__``/``__getitem__``
   only, so PyTorch's fetcher calls ``__getitem__`` per index), same batch sampler and collate. Both
   must give identical batches under every layout (checked).
3. The quickstart's data path per stage, per-example (before) and shipped (after).

Waits first until ``pgrep -f`` finds no `benchmarks/overhead.py` and no pytest (every 30 s, at most
10 minutes)::

    .venv/bin/python benchmarks/sampling.py                     # about 1.5 minutes on 2 cores
    .venv/bin/python benchmarks/sampling.py --quick --no-save   # smoke test, under a minute
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import statistics
import sys
import time
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from itertools import chain, islice, repeat
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from mtl.data import LAYOUTS, EvaluationBatchSampler, MultiTaskDataModule, TaggedConcat
from mtl.data.samplers import (
    AnnealedSampler,
    LinearInterpolation,
    ProportionalSampler,
    RoundRobinSampler,
    ScheduledSampler,
    SpecifiedSampler,
    TaskSampler,
    TemperatureSampler,
    UniformSampler,
)
from mtl.module import MultiTaskModule

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    REPO_ROOT,
    describe_machine,
    other_processes,
    quiet_logs,
    rotated,
    save_results,
    wait_for_quiet,
)

SEED = 0
WAIT_FOR = ["benchmarks/overhead.py", "pytest"]  # `pgrep -f` patterns that must find nothing first
CHECK_BATCHES = 20  # batches per layout compared between the shipped and the per-example loader
SHIPPED = "batched `__getitems__` (shipped)"
PER_EXAMPLE = "per-example `__getitem__` (baseline)"
RAGGED = "shipped (ragged tokens: per example)"
med = statistics.median
log = logging.getLogger("sampling")


# =========================================================================== part 1: samplers
SamplerCase = namedtuple("SamplerCase", "name sizes batch_size num_replicas rank", defaults=(1, 0))


def sampler_cases(quick: bool) -> list[SamplerCase]:
    scale = 10 if quick else 1
    ratio = (500 / 50_000) ** (1 / 19)  # 20 sizes from 50,000 down to 500, geometrically spaced
    many = [max(64, round(50_000 * ratio**t) // scale) for t in range(20)]
    return [
        SamplerCase("census (2 x 199,523, batch 1024)", [199_523 // scale] * 2, 1024),
        SamplerCase("20 tasks (500..50,000, batch 32)", many, 32),
        SamplerCase("20 tasks, 2 ranks, rank 0 (batch 32 per rank)", many, 32, num_replicas=2),
    ]


TASK_SAMPLERS: dict[str, Callable[[Sequence[int]], TaskSampler]] = {
    "ProportionalSampler": lambda sizes: ProportionalSampler(seed=SEED),
    "UniformSampler": lambda sizes: UniformSampler(seed=SEED),
    "TemperatureSampler(T=2)": lambda sizes: TemperatureSampler(temperature=2.0, seed=SEED),
    # half the steps on task 0 (a "main" task), the rest shared equally by the others
    "SpecifiedSampler": lambda s: SpecifiedSampler([0.5] + [0.5 / (len(s) - 1)] * (len(s) - 1), seed=SEED),
    "AnnealedSampler(E=10)": lambda sizes: AnnealedSampler(num_epochs=10, seed=SEED),
    # from proportional to uniform, linearly over 10,000 steps (the schedule runs at every step)
    "ScheduledSampler(LinearInterpolation)": lambda s: ScheduledSampler(
        LinearInterpolation([n / sum(s) for n in s], [1 / len(s)] * len(s), steps=10_000), seed=SEED
    ),
    "RoundRobinSampler": lambda sizes: RoundRobinSampler(seed=SEED),
}
EVALUATION = "EvaluationBatchSampler"


def _time_epochs(batches: Any, set_epoch: Callable[[int], None], repeats: int) -> dict[str, Any]:
    """Iterate ``repeats`` epochs (epoch numbers 0, 1, ...) with the cyclic garbage collector off, as
    in `timeit`: a full collection of this process's many objects outlasts most epochs."""
    seconds: list[float] = []
    steps = indices = 0
    for r in range(repeats):
        set_epoch(r)
        steps = indices = 0
        gc.disable()
        try:
            start = time.perf_counter()
            for batch in batches:
                steps += 1
                indices += len(batch)
            seconds.append(time.perf_counter() - start)
        finally:
            gc.enable()
    return {
        "steps_per_epoch": steps,
        "indices_per_epoch": indices,
        "indices_per_s": med(indices / s for s in seconds),
        "us_per_batch": 1e6 * med(seconds) / max(steps, 1),
        "runs_s": [round(s, 5) for s in seconds],
    }


def run_samplers(cases: list[SamplerCase], repeats: int) -> list[dict[str, Any]]:
    """Every task sampler under every layout, then the evaluation sampler, for every case."""
    results = []
    for c in cases:
        for name, make in TASK_SAMPLERS.items():
            for layout, cls in LAYOUTS.items():
                b = cls(c.sizes, c.batch_size, make(c.sizes), c.num_replicas, c.rank, seed=SEED)
                timing = _time_epochs(b, b.sampler.set_epoch, repeats)
                results.append({"case": c.name, "sampler": name, "layout": layout, **timing})
        evaluation = EvaluationBatchSampler(c.sizes, c.batch_size, c.num_replicas, c.rank)
        timing = _time_epochs(evaluation, lambda epoch: None, repeats)
        results.append({"case": c.name, "sampler": EVALUATION, "layout": "evaluation", **timing})
        log.info("Samplers: %s done", c.name)
    return results


def sampler_tables(results: list[dict[str, Any]]) -> str:
    """One table per case: samplers x layouts, in M indices/s (µs per batch)."""
    out: list[str] = []
    cases = list(dict.fromkeys(r["case"] for r in results))
    for case in cases:
        by = {(r["sampler"], r["layout"]): r for r in results if r["case"] == case}
        shape = ", ".join(
            f"{lay} {by['ProportionalSampler', lay]['steps_per_epoch']:,} steps / "
            f"{by['ProportionalSampler', lay]['indices_per_epoch']:,} indices"
            for lay in LAYOUTS
        )
        out += [f"**{case}**: M indices/s (µs per batch); one epoch per rank = {shape}.", ""]
        out += ["| sampler | " + " | ".join(LAYOUTS) + " |", "| --- |" + " ---: |" * len(LAYOUTS)]
        for s in TASK_SAMPLERS:
            cells = [
                f"{by[s, lay]['indices_per_s'] / 1e6:.2f} ({by[s, lay]['us_per_batch']:.0f} µs)"
                for lay in LAYOUTS
            ]
            out.append(f"| {s} | " + " | ".join(cells) + " |")
        ev = by[EVALUATION, "evaluation"]
        out += [
            "",
            f"{EVALUATION}: {ev['indices_per_s'] / 1e6:.2f} M indices/s ({ev['us_per_batch']:.1f} µs per batch; "
            f"{ev['steps_per_epoch']:,} batches / {ev['indices_per_epoch']:,} indices).",
            "",
        ]
    return "\n".join(out).rstrip()


# =========================================================================== part 2: data share
Workload = namedtuple("Workload", "name datamodule build clip", defaults=(None,))  # as in a config


def quickstart_workload() -> Workload:
    """`configs/quickstart.yaml`: Census-Income (income, marital), batch 1024."""
    from mtl.data.sources.census_income import CensusIncome
    from mtl.encoders import TabularMLPEncoder
    from mtl.heads import BinaryHead

    dm = MultiTaskDataModule(CensusIncome(tasks=("income", "marital")), batch_size=1024, seed=SEED)
    dm.setup("fit")
    spec = dm.source.input_spec()

    def build() -> MultiTaskModule:
        encoder = TabularMLPEncoder(
            spec["num_numeric"], spec["cardinalities"], hidden=(256, 128), dropout=0.1
        )
        heads = {"income": BinaryHead(hidden=[64]), "marital": BinaryHead(hidden=[64])}
        return MultiTaskModule(
            encoder, heads, optimizer=partial(torch.optim.AdamW, lr=1e-3, weight_decay=1e-4)
        )

    name = "quickstart: census-income (income, marital), TabularMLPEncoder [256, 128], 2 BinaryHead [64], batch 1024"
    return Workload(name, dm, build)


def text_workload() -> Workload:
    """`configs/examples/text_minilm.yaml`: TextTasks (3 tasks, caps 1500/500, max_length 48), batch 32."""
    from mtl.data.sources.text_tasks import TextTasks
    from mtl.encoders import HuggingFaceEncoder
    from mtl.heads import ClassificationHead

    tasks = ["polarity", "subjectivity", "tweet_sentiment"]
    kw = {"max_length": 48, "max_train_examples": 1500, "max_eval_examples": 500}
    source = TextTasks(tasks=tasks, tokenizer="bundled:all-MiniLM-L6-v2", **kw)
    dm = MultiTaskDataModule(source, batch_size=32, seed=SEED)
    dm.setup("fit")

    def build() -> MultiTaskModule:
        encoder = HuggingFaceEncoder(pretrained="bundled:all-MiniLM-L6-v2", pooling="mean")
        heads = {t: ClassificationHead(num_classes=n, dropout=0.1) for t, n in source.num_classes.items()}
        optimizer = partial(torch.optim.AdamW, lr=5e-5, weight_decay=0.01)
        return MultiTaskModule(encoder, heads, optimizer=optimizer, encoder_lr=5e-5, head_lr=1e-3)

    name = (
        "text example: TextTasks (polarity, subjectivity, tweet_sentiment; 1500 train each, max_length 48), "
        "all-MiniLM-L6-v2 (bundled), batch 32"
    )
    return Workload(name, dm, build, clip=1.0)


class PerExample(Dataset):
    """Only a dataset's ``__len__`` and ``__getitem__``: with no ``__getitems__``, PyTorch's fetcher
    builds each batch with one ``__getitem__`` call per index."""

    def __init__(self, dataset: TaggedConcat) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[index]


def train_loader(dm: MultiTaskDataModule, per_example: bool = False) -> DataLoader:
    """The data module's train loader or, ``per_example``, its batch sampler and collate over `PerExample`."""
    loader = dm.train_dataloader()
    if not per_example:
        return loader
    return DataLoader(
        PerExample(loader.dataset), batch_sampler=loader.batch_sampler, collate_fn=loader.collate_fn
    )


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return a is None and b is None


def check_identical(dm: MultiTaskDataModule, batches: int) -> dict[str, bool]:
    """Per layout, whether the shipped loader's first ``batches`` batches equal the per-example ones."""
    out: dict[str, bool] = {}
    layout = dm.layout
    try:
        for name in LAYOUTS:
            dm.layout = name
            shipped, slow = (list(islice(train_loader(dm, p), batches)) for p in (False, True))
            out[name] = len(shipped) == len(slow) == batches and all(map(_same, shipped, slow))
    finally:
        dm.layout = layout
    return out


class Runner:
    """One variant of a workload (data path, torch threads) with its own model, optimizer and loader,
    so that the variants' timed windows can be interleaved."""

    def __init__(self, workload: Workload, variant: str, threads: int) -> None:
        self.workload, self.variant, self.threads = workload, variant, threads
        torch.set_num_threads(threads)
        torch.manual_seed(SEED)
        self.module = workload.build().train()
        self.optimizer = self.module.configure_optimizers()
        self.params = [p for group in self.optimizer.param_groups for p in group["params"]]
        loader = train_loader(workload.datamodule, per_example=variant == PER_EXAMPLE)
        self.batches = chain.from_iterable(repeat(loader))  # epoch after epoch
        self.windows: list[tuple[float, float]] = []  # (data ms, compute ms) per step, mean of a window

    def run(self, steps: int, timed: bool = True) -> None:
        torch.set_num_threads(self.threads)
        data = compute = 0.0
        for _ in range(steps):
            t0 = time.perf_counter()
            batch = next(self.batches)
            t1 = time.perf_counter()
            loss = self.module.task_losses(batch).total
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.workload.clip is not None:
                nn.utils.clip_grad_norm_(self.params, self.workload.clip)
            self.optimizer.step()
            data, compute = data + t1 - t0, compute + time.perf_counter() - t1
        if timed:
            self.windows.append((1e3 * data / steps, 1e3 * compute / steps))

    def result(self, steps: int) -> dict[str, Any]:
        shares = [100 * d / (d + c) for d, c in self.windows]
        return {
            "workload": self.workload.name.split(":")[0],
            "variant": self.variant,
            "threads": self.threads,
            "steps": steps,
            "data_ms": med(d for d, _ in self.windows),
            "compute_ms": med(c for _, c in self.windows),
            "share_pct": med(shares),
            "runs_share_pct": [round(x, 1) for x in shares],
            "runs_data_compute_ms": [(round(d, 2), round(c, 2)) for d, c in self.windows],
        }


def time_shares(runners: list[Runner], warmup: int, steps: int, repeats: int) -> list[dict[str, Any]]:
    """Warm every runner up, then ``repeats`` rounds of one window per runner, the order rotated every
    round (as in `overhead.py`) so that drift in the machine's speed spreads over all variants."""
    for runner in runners:
        runner.run(warmup, timed=False)
    for r in range(repeats):
        gc.collect()  # outside the windows: a full collection takes a while in this process
        for runner in rotated(runners, r):
            runner.run(steps)
    return [runner.result(steps) for runner in runners]


def share_table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| workload | data path | torch threads | data ms/step | compute ms/step | data share % | share per window % |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r['workload']} | {r['variant']} | {r['threads']} | {r['data_ms']:.2f} | {r['compute_ms']:.2f} "
            f"| {r['share_pct']:.1f} | {r['runs_share_pct']} |"
        )
    return "\n".join(lines)


def headline(shares: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per torch thread count: the quickstart's data share, shipped and per-example, and how many
    times faster the shipped data fetch is (per-example data ms / shipped data ms)."""
    by = {(r["variant"], r["threads"]): r for r in shares if r["workload"] == "quickstart"}
    return {
        str(t): {
            "share_shipped_pct": round(fast["share_pct"], 1),
            "share_per_example_pct": round(by[PER_EXAMPLE, t]["share_pct"], 1),
            "data_speedup": round(by[PER_EXAMPLE, t]["data_ms"] / fast["data_ms"], 1),
        }
        for (variant, t), fast in by.items()
        if variant == SHIPPED and (PER_EXAMPLE, t) in by
    }


# =========================================================================== part 3: per stage
def profile_data_path(dm: MultiTaskDataModule, batches: int) -> dict[str, Any]:
    """Each stage of both paths on the same index batches, ms per batch (median over the batches)."""
    loader = dm.train_dataloader()
    concat, collate_fn = loader.dataset, loader.collate_fn
    start = time.perf_counter()
    epoch = list(loader.batch_sampler)  # a whole epoch, so that the per-task permutations are amortised
    draw = 1e3 * (time.perf_counter() - start) / len(epoch)
    stages = {  # of (indices, examples, gathered batch)
        "getitem_ms": lambda idx, ex, g: [concat[i] for i in idx],
        "collate_ms": lambda idx, ex, g: collate_fn(ex),
        "stack_inputs_ms": lambda idx, ex, g: [torch.stack([e[1][k] for e in ex]) for k in ex[0][1]],
        "getitems_ms": lambda idx, ex, g: concat.__getitems__(idx),
        "collate_gathered_ms": lambda idx, ex, g: collate_fn(g),
    }
    times: dict[str, list[float]] = {name: [] for name in stages}
    for idx in epoch[:batches]:
        batch = idx, [concat[i] for i in idx], concat.__getitems__(idx)
        for name, stage in stages.items():
            start = time.perf_counter()
            stage(*batch)
            times[name].append(1e3 * (time.perf_counter() - start))
    p = {"batch_size": dm.batch_size, "batches": len(epoch[:batches]), "draw_ms": draw} | {
        k: med(v) for k, v in times.items()
    }
    p["collate_targets_ms"] = max(0.0, p["collate_ms"] - p["stack_inputs_ms"])
    p["per_example_ms"] = draw + p["getitem_ms"] + p["collate_ms"]
    p["shipped_ms"] = draw + p["getitems_ms"] + p["collate_gathered_ms"]
    p["speedup"] = p["per_example_ms"] / p["shipped_ms"]
    return p


def profile_table(p: dict[str, Any]) -> str:
    each = 1e3 * p["getitem_ms"] / p["batch_size"]
    rows = [
        ("per-example", "draw the indices (batch sampler)", p["draw_ms"]),
        ("", f"`TaggedConcat.__getitem__` x {p['batch_size']} ({each:.1f} µs each)", p["getitem_ms"]),
        ("", "`collate`: stack the inputs (numeric, categorical)", p["stack_inputs_ms"]),
        ("", "`collate`: stack the targets, labelled rows, routes", p["collate_targets_ms"]),
        ("**per-example**", "**total**", p["per_example_ms"]),
        ("shipped", "draw the indices (batch sampler)", p["draw_ms"]),
        ("", "`TaggedConcat.__getitems__`: one gather per tensor → `GatheredBatch`", p["getitems_ms"]),
        ("", "`collate(GatheredBatch)`: labelled rows, routes", p["collate_gathered_ms"]),
        ("**shipped**", "**total**", p["shipped_ms"]),
    ]
    lines = ["| path | stage (per quickstart batch) | ms | % of per-example |", "| --- | --- | ---: | ---: |"]
    lines += [f"| {a} | {b} | {ms:.2f} | {100 * ms / p['per_example_ms']:.0f} |" for a, b, ms in rows]
    return "\n".join(lines)


# =========================================================================== machine and output
def machine(load_before: list[float], waited_s: float, default_threads: int) -> dict[str, Any]:
    """CPU model, cores, versions, date, and the load averages (1, 5, 15 min) before and after."""
    return describe_machine(torch.device("cpu")) | {
        "torch_threads_default": default_threads,
        "waited_for_other_processes_s": round(waited_s),
        "load_average_1_5_15min_before": load_before,
        "load_average_1_5_15min_after": [round(x, 2) for x in os.getloadavg()],
    }


def render(samplers, shares, profile, identical, info, config) -> str:
    summary = "; ".join(
        f"{t} thread(s): {h['share_shipped_pct']} % shipped vs {h['share_per_example_pct']} % per-example, "
        f"data fetch {h['data_speedup']}x faster"
        for t, h in headline(shares).items()
    )
    same = ", ".join(f"{k} {'yes' if v else '**no**'}" for k, v in identical.items())
    md = [
        "# Sampler throughput and the data pipeline's share of a training step (cpu)",
        "",
        "Generated by `benchmarks/sampling.py`.",
        "",
        "## Sampler throughput",
        "",
        "Example indices per second of iterating one epoch of the training batch sampler (task sampler + "
        f"layout; index arithmetic only, no data loaded), median of {config['repeats']} epochs. For 2 ranks "
        "the indices are rank 0's (half of each global batch); every rank still draws each task's full "
        "permutations.",
        "",
        sampler_tables(samplers),
        "",
        "## Data pipeline share of a training step",
        "",
        "Plain loop over the `MultiTaskDataModule` train dataloader (num_workers=0, homogeneous, "
        "ProportionalSampler). Data = `next(iterator)`; compute = loss, backward, (clipping: text), AdamW "
        "step; share = data / (data + compute). Shipped = `dm.train_dataloader()`; per-example = its batch "
        "sampler and collate over a wrapper with only the `TaggedConcat`'s `__len__`/`__getitem__`. "
        f"Quickstart: {config['quickstart_warmup']} warm-up steps, then {config['repeats']} interleaved "
        f"windows of {config['quickstart_steps']} steps per variant, at 1 torch thread and at torch's default "
        f"(which `make quickstart` uses); text: one window of {config['text_steps']} steps after "
        f"{config['text_warmup']}, 1 thread (ragged token lists: the shipped loader fetches per example). "
        "Medians over windows; Lightning's own per-step work (`overhead.py`) excluded. **With "
        "`num_workers > 0` loading overlaps the compute.**",
        "",
        share_table(shares),
        "",
        *(f"- {w}." for w in config["workloads"]),
        "",
        f"**Quickstart data share**: {summary}.",
        "",
        "## The quickstart's data path per stage, before and after",
        "",
        f"Median over the same {profile['batches']} index batches, 1 torch thread: fetch + collate "
        f"{profile['per_example_ms']:.2f} ms per-example vs {profile['shipped_ms']:.2f} ms shipped "
        f"({profile['speedup']:.1f}x). Shipped batches identical to per-example ones (first "
        f"{config['check_batches']} per layout): {same}.",
        "",
        profile_table(profile),
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in info.items()) + ".",
        "",
    ]
    return "\n".join(md)


# =========================================================================== main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="epochs per sampler, quickstart windows")
    p.add_argument("--quickstart-steps", type=int, default=60, help="timed steps per quickstart window")
    p.add_argument("--text-steps", type=int, default=20, help="timed steps of the text example (0: skip it)")
    p.add_argument("--no-wait", action="store_true", help=f"do not wait for {WAIT_FOR} to finish")
    p.add_argument("--quick", action="store_true", help="smoke test: 1/10 sampler sizes, few steps")
    p.add_argument("--out-dir", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    p.add_argument("--no-save", action="store_true", help="print the tables only")
    args = p.parse_args(argv)
    args.quickstart_warmup, args.text_warmup, args.threads = 10, 3, 1  # 1 thread: less sensitive to load
    if args.quick:
        args.repeats, args.quickstart_steps, args.quickstart_warmup = 1, 10, 2
        args.text_steps, args.text_warmup = min(args.text_steps, 3), 1
    if min(args.repeats, args.quickstart_steps) < 1:
        p.error("--repeats and --quickstart-steps must be >= 1.")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    quiet_logs()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    default_threads = torch.get_num_threads()  # torch's default (the machine's cores)
    quickstart_threads = list(dict.fromkeys([1, default_threads]))
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    quickstart = quickstart_workload()
    text = text_workload() if args.text_steps > 0 else None
    if text is not None:
        text.build()  # load the encoder once before timing (file cache)
    log.info("Data loaded in %.1f s.", time.perf_counter() - start)

    waited = 0.0 if args.no_wait else wait_for_quiet(WAIT_FOR)
    load_before = [round(x, 2) for x in os.getloadavg()]
    timed_start = time.perf_counter()
    samplers = run_samplers(sampler_cases(args.quick), args.repeats)
    seen = {"samplers": other_processes(WAIT_FOR)}

    identical = check_identical(quickstart.datamodule, CHECK_BATCHES)
    log.info("Shipped batches identical to per-example batches: %s", identical)
    runners = [Runner(quickstart, v, t) for v in (SHIPPED, PER_EXAMPLE) for t in quickstart_threads]
    shares = time_shares(runners, args.quickstart_warmup, args.quickstart_steps, args.repeats)
    del runners
    torch.set_num_threads(args.threads)
    profile = profile_data_path(quickstart.datamodule, 10 if args.quick else 50)
    seen["quickstart"] = other_processes(WAIT_FOR)
    if text is not None:
        shares += time_shares([Runner(text, RAGGED, args.threads)], args.text_warmup, args.text_steps, 1)
        seen["text"] = other_processes(WAIT_FOR)
    timed_s = time.perf_counter() - timed_start

    skip = ("out_dir", "no_save", "no_wait")
    config = {k: v for k, v in vars(args).items() if k not in skip} | {
        "num_workers": 0,
        "check_batches": CHECK_BATCHES,
        "quickstart_threads": quickstart_threads,
        "workloads": [w.name for w in (quickstart, text) if w is not None],
        "waited_for": WAIT_FOR,
        "timed_seconds": round(timed_s, 1),
        "sampler_cases": [c._asdict() for c in sampler_cases(args.quick)],
    }
    info = machine(load_before, waited, default_threads)
    info["other_processes_after_each_part"] = {k: v for k, v in seen.items() if v} or "none"
    markdown = render(samplers, shares, profile, identical, info, config)
    print(markdown)
    log.info("Timed part took %.0f s (%.0f s in all).", timed_s, time.perf_counter() - start)
    if not args.no_save:
        payload = {"config": config, "machine": info, "headline": headline(shares), "identical": identical}
        payload |= {"samplers": samplers, "data_share": shares, "profile": profile}
        stem = "sampling-cpu" + ("-quick" if args.quick else "")
        save_results(args.out_dir, stem, markdown, payload)
        log.info("Wrote %s.md and .json", args.out_dir / stem)
    return 0 if all(identical.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
