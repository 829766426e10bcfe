"""Step time and peak memory of every balancing method relative to equal weighting (EW).

Issue 5's speed benchmark. For each model (``--models``) and number of tasks ``T`` (``--tasks``), every
variant trains the same model from the same initialisation on the same pre-fetched batches (the
`MultiTaskDataModule` train loader with ``layout="all_tasks"``: a sub-batch of ``--batch-size``
examples of every task at every step) under `lightning.Trainer.fit`, exactly as a user would run it:

* ``EW`` (the reference; `mtl.weighting.EW`) and every other loss weighting (UW, DWA, GLS, RLW, FAMO,
  IMTLL, STCH, GradNorm): one backward pass, automatic optimization;
* every gradient aggregator of `mtl.balancing` with ``balance_on="shared"`` (the exact methods: the
  per-task gradients of every shared parameter), with the module's default ``gradient_engine="auto"``
  (the per-task loop on CPU, the batched pass on a GPU; the ``engine`` column says which ran);
* ``<method>:representation`` for MGDA, IMTLG, AlignedMTL and GradDrop (per-task gradients of the
  encoder's output, the cheap variant) and ``MGDA:last_layer`` (MGDA's weights found on the encoder's
  last layer, then one weighted backward pass);
* ``MGDA:batched`` / ``MGDA:loop`` and ``MGDA:representation:batched`` / ``...:loop``: MGDA with each
  engine forced (``gradient_engine``): the batched pass of `mtl.balancing.engine.task_gradients`
  against ``T`` backward passes (the LibMTL approach). The script checks first that both engines give
  the same gradient matrix on the benchmark model;
* ``floor``: the least an exact method must compute, written out by hand as a `MultiTaskModule`
  subclass (`FloorModule`) so that it runs in the same Lightning loop: one forward pass, one
  ``torch.autograd.grad`` per task through the shared part and that task's head, the gradients summed
  into ``.grad``, and the optimizer step (no aggregation, no gradient matrix).

Models: ``census``, the quickstart model (``configs/quickstart.yaml``: `TabularMLPEncoder` [256, 128],
dropout 0.1, a `BinaryHead` [64] per task, AdamW lr 1e-3, weight decay 1e-4) on Census-Income; and
``minilm``, the text example's model (``configs/examples/text_minilm.yaml``: the bundled
all-MiniLM-L6-v2 with mean pooling, a `ClassificationHead` per task, AdamW lr 5e-5 / heads 1e-3) on
`TextTasks` (``--max-length`` tokens). For ``T`` larger than the source's number of tasks (4 for both)
the tasks are replicated (`ReplicatedTasks`): task ``i`` is the source's task ``i mod 4`` under its
own name, with its own head and its own sub-batch.

Timing: a step's time is the interval between consecutive ``on_train_batch_start`` calls, so it holds
everything the loop does per step (the training step, the optimizer step, FAMO's after-step forward,
Lightning's bookkeeping); the data pipeline is excluded (batches are fetched before timing and
cycled; see ``sampling.py``) and so are the dashboard logs (no logger). Each run warms up for
``--warmup`` steps, then times ``--steps`` steps; runs are repeated ``--repeats`` times, every repeat
running every variant once in an order rotated every repeat (`common.rotated`), so that drift in the
machine's speed hits all variants alike. Reported: the median over repeats of ms per step, and the
medians of the per-repeat ratios to EW and to the floor of the same repeat, on wall time and on the
process CPU time (`time.process_time`). On CPU the targets are judged on CPU time: with one torch
thread it is the step's work, whereas wall time also counts the time other processes hold the core
(on a shared 2-core machine, the dominant noise); on a GPU, on wall time.

Peak memory: measured on one extra step after the timed ones (first repeat only), from its
``on_train_batch_start`` to the end of training: the peak of the tensor memory that the step itself
allocates (activations, gradients, the gradient matrix, temporaries), on top of what exists before
it (parameters, optimizer state, batches). On CPU it is read from `torch.profiler` with
``profile_memory=True``: the CPU allocator's allocations and frees during the step, summed in time
order (`peak_above_start`; frees of blocks allocated before the step are not reported by the
allocator, so they do not lower the count); the script first checks the meter on allocations of
known size. On CUDA it is ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``
minus the memory allocated at the step's start (there the previous step's gradients, freed by
``zero_grad``, do lower it). The floor sums the per-task gradients as they come, so it is a floor
of time, not of memory (an exact method holds all ``T`` gradients at once).

Targets of issue 5 at ``T = 10``: on CPU, every exact method within 15 % of the floor and the
representation variants within 1.5x of EW; on a GPU, the batched engine at no more than half of the
loop's step time. The tables say which are met.

Run (from the repository root; ``nice -n 10`` on a shared machine)::

    .venv/bin/python benchmarks/balancing.py --models census                  # ~6 min on 2 idle cores
    .venv/bin/python benchmarks/balancing.py --models minilm --batch-size 4 --steps 2 --warmup 1 --repeats 2
    .venv/bin/python benchmarks/balancing.py --models census --tasks 2 --methods EW,MGDA --steps 3 \\
        --repeats 1 --no-save --no-wait                                       # smoke test, seconds
    python benchmarks/balancing.py --device cuda --precision bf16-mixed        # on a GPU

Writes ``benchmarks/results/balancing-<device>-<model>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import gc
import logging
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor

from mtl.balancing import (
    DBMTL,
    IMTLG,
    MGDA,
    AlignedMTL,
    CAGrad,
    FairGrad,
    GradDrop,
    GradientAggregator,
    GradVac,
    NashMTL,
    PCGrad,
    UPGrad,
)
from mtl.balancing.engine import resolve_engine, task_gradients
from mtl.data.datamodule import MultiTaskDataModule
from mtl.data.sources.base import DataSource, TaskSplits
from mtl.encoders import Encoder
from mtl.heads import BinaryHead, ClassificationHead, Head
from mtl.module import MultiTaskModule
from mtl.weighting import DWA, EW, FAMO, GLS, IMTLL, RLW, STCH, UW, GradNorm, LossWeighting

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    REPO_ROOT,
    describe_machine,
    load_average,
    other_processes,
    rotated,
    save_results,
    start_benchmark,
    wait_for_quiet,
)

SEED = 0
BASELINE, FLOOR = "EW", "floor"
FLOOR_TARGET, REPRESENTATION_TARGET, GPU_LOOP_TARGET = 1.15, 1.5, 0.5
WAIT_FOR = [
    "pytest",
    "benchmarks/overhead.py",
    "benchmarks/sampling.py",
    "benchmarks/necks_speed.py",
    "benchmarks/balancing_quality.py",
]

WEIGHTINGS: dict[str, Callable[[], LossWeighting]] = {
    "EW": EW,
    "UW": UW,
    "DWA": DWA,
    "GLS": GLS,
    "RLW": RLW,
    "FAMO": FAMO,
    "IMTLL": IMTLL,
    "STCH": STCH,
    "GradNorm": GradNorm,
}
AGGREGATORS: dict[str, Callable[[], GradientAggregator]] = {
    "PCGrad": PCGrad,
    "GradVac": GradVac,
    "CAGrad": CAGrad,
    "MGDA": MGDA,
    "IMTLG": IMTLG,
    "GradDrop": GradDrop,
    "UPGrad": UPGrad,
    "AlignedMTL": AlignedMTL,
    "NashMTL": NashMTL,
    "DBMTL": DBMTL,
    "FairGrad": FairGrad,
}
ON_REPRESENTATION = ("MGDA", "IMTLG", "AlignedMTL", "GradDrop")
ON_LAST_LAYER = ("MGDA",)
CPU_TIME_NOTE = (
    "On CPU the targets are judged on the process CPU time: with one torch thread it is the work of the step, "
    "while wall time also counts the time other processes hold the core on a shared machine (the load "
    "averages below)."
)
WITH_LOOP = (("MGDA", "shared"), ("MGDA", "representation"))  # (method, balance_on)

log = logging.getLogger("balancing")


# ------------------------------------------------------------------------------------------- data
class ReplicatedTasks(DataSource):
    """``num_tasks`` tasks made of an already loaded source's ``n`` tasks: task ``i`` is the source's
    task ``i mod n`` (same examples and labels) under its own name: the task's own name for the first
    ``n``, then ``<task>_<copy>`` (``income_1``, ...). Each copy gets its own head and, under the
    ``all_tasks`` layout, its own sub-batch, so ``T`` is what the balancing methods see.

    Args:
        splits: the loaded source's splits, by task (in order).
        spec: the loaded source's `input_spec`.
        num_tasks: ``T`` >= 1.
    """

    def __init__(self, splits: Mapping[str, TaskSplits], spec: dict[str, Any], num_tasks: int) -> None:
        if num_tasks < 1:
            raise ValueError(f"Expected `num_tasks` to be >= 1, but got {num_tasks}.")
        if not splits:
            raise ValueError("Expected `splits` to hold at least one task, but got none.")
        real = list(splits)
        self.origin: dict[str, str] = {}
        for i in range(num_tasks):
            task, copy = real[i % len(real)], i // len(real)
            self.origin[task if copy == 0 else f"{task}_{copy}"] = task
        self.splits, self.spec = dict(splits), spec
        self.tasks = self.available_tasks = tuple(self.origin)

    def load(self) -> dict[str, TaskSplits]:
        return {task: self.splits[real] for task, real in self.origin.items()}

    def input_spec(self) -> dict[str, Any]:
        return dict(self.spec)


# ------------------------------------------------------------------------------------------- models
@dataclass
class Workload:
    """A loaded data source and the model trained on it (as in the shipped config it mirrors)."""

    name: str
    description: str
    splits: dict[str, TaskSplits]
    spec: dict[str, Any]
    num_classes: dict[str, int]
    encoder: Callable[[], Encoder]
    head: Callable[[int], Head]
    optimizer: Callable[..., torch.optim.Optimizer]
    batch_size: int
    module_kwargs: dict[str, Any] = field(default_factory=dict)

    def module(
        self,
        origin: Mapping[str, str],
        cls: type[MultiTaskModule] = MultiTaskModule,
        **kwargs: Any,
    ) -> MultiTaskModule:
        """A fresh model with one head per task of ``origin`` (task -> the source's task it copies)."""
        heads = {task: self.head(self.num_classes[real]) for task, real in origin.items()}
        return cls(self.encoder(), heads, optimizer=self.optimizer, **self.module_kwargs, **kwargs)


def census_workload(batch_size: int = 512, max_train_examples: int | None = None) -> Workload:
    """The quickstart model on Census-Income (all four tasks loaded; ``max_train_examples``: a random
    subset of the training rows, for smoke tests)."""
    from mtl.data.sources import CensusIncome
    from mtl.encoders import TabularMLPEncoder

    source = CensusIncome(tasks=CensusIncome.available_tasks, max_train_examples=max_train_examples)
    splits = source.load()
    spec = source.input_spec()
    return Workload(
        name="census",
        description="Census-Income; quickstart model: TabularMLPEncoder [256, 128] (dropout 0.1), "
        "BinaryHead [64] per task, AdamW(lr 1e-3, weight decay 1e-4)",
        splits=splits,
        spec=spec,
        num_classes=dict.fromkeys(splits, 2),
        encoder=lambda: TabularMLPEncoder(
            spec["num_numeric"], spec["cardinalities"], hidden=(256, 128), dropout=0.1
        ),
        head=lambda n: BinaryHead(hidden=[64]),
        optimizer=partial(torch.optim.AdamW, lr=1e-3, weight_decay=1e-4),
        batch_size=batch_size,
    )


def minilm_workload(
    batch_size: int = 8,
    max_length: int = 32,
    max_train_examples: int = 600,
    max_eval_examples: int = 300,
    tasks: Sequence[str] | None = None,
) -> Workload:
    """The text example's model (bundled all-MiniLM-L6-v2, mean pooling) on `TextTasks`."""
    from mtl.data.sources import TextTasks
    from mtl.encoders import HuggingFaceEncoder

    source = TextTasks(
        tasks=list(tasks or TextTasks.available_tasks),
        tokenizer="bundled:all-MiniLM-L6-v2",
        max_length=max_length,
        max_train_examples=max_train_examples,
        max_eval_examples=max_eval_examples,
    )
    splits = source.load()
    return Workload(
        name="minilm",
        description=f"TextTasks (max_length {max_length}); text example's model: all-MiniLM-L6-v2 (bundled, "
        "mean pooling), ClassificationHead (dropout 0.1) per task, AdamW(lr 5e-5, weight decay 0.01), "
        "head_lr 1e-3",
        splits=splits,
        spec=source.input_spec(),
        num_classes=source.num_classes,
        encoder=lambda: HuggingFaceEncoder(pretrained="bundled:all-MiniLM-L6-v2", pooling="mean"),
        head=lambda n: ClassificationHead(num_classes=n, dropout=0.1),
        optimizer=partial(torch.optim.AdamW, lr=5e-5, weight_decay=0.01),
        batch_size=batch_size,
        module_kwargs={"encoder_lr": 5e-5, "head_lr": 1e-3},
    )


WORKLOADS: dict[str, Callable[..., Workload]] = {"census": census_workload, "minilm": minilm_workload}
DEFAULTS = {"census": {"steps": 20, "warmup": 3}, "minilm": {"steps": 3, "warmup": 1}}


class FloorModule(MultiTaskModule):
    """The floor of an exact gradient method's step: one forward pass, one backward pass per task
    through the shared part and that task's head (``torch.autograd.grad``), the gradients summed into
    ``.grad``, and the optimizer step; the module's usual bookkeeping (`MultiTaskModule._record`)
    included, as every method pays it. No gradient matrix, no aggregation."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.automatic_optimization = False

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        step = self.task_losses(batch)
        total = self._record(step, batch, "train")
        optimizer = self.optimizers()
        optimizer.zero_grad()
        shared = [p for p in [*self.encoder.parameters(), *self.neck.parameters()] if p.requires_grad]
        summed: list[Tensor] | None = None
        last = len(step.losses) - 1
        for i, (task, loss) in enumerate(step.losses.items()):
            head = [p for p in self.heads[task].parameters() if p.requires_grad]
            grads = torch.autograd.grad(loss, shared + head, retain_graph=i < last, allow_unused=True)
            own = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, shared + head, strict=True)]
            if summed is None:
                summed = own[: len(shared)]
            else:
                for total_grad, g in zip(summed, own[: len(shared)], strict=True):
                    total_grad.add_(g)
            for p, g in zip(head, own[len(shared) :], strict=True):
                p.grad = g
        for p, g in zip(shared, summed or [], strict=True):
            p.grad = g
        optimizer.step()
        return total.detach()


# ------------------------------------------------------------------------------------------- variants
@dataclass(frozen=True)
class Variant:
    """One method as the benchmark runs it: ``key`` is its name on the command line and in the tables
    (``PCGrad``, ``MGDA:representation``, ``MGDA:loop``, ``floor``)."""

    key: str
    method: str
    balance_on: str = "shared"
    engine_choice: str = "auto"  #: the module's ``gradient_engine``

    @property
    def family(self) -> str:
        if self.method == FLOOR:
            return "floor"
        return "loss weighting" if self.method in WEIGHTINGS else "gradient aggregation"

    @property
    def exact(self) -> bool:
        """An aggregator of the per-task gradients of every shared parameter (the 15 % target)."""
        return self.method in AGGREGATORS and self.balance_on == "shared" and self.engine_choice == "auto"

    def engine(self, device: torch.device) -> str:
        """How the per-task gradients are computed: the batched pass, the loop, or none (``-``)."""
        if self.method in AGGREGATORS or self.method == "GradNorm":  # GradNorm: at the last layer
            return resolve_engine(self.engine_choice, device)
        return "loop" if self.method == FLOOR else "-"

    def build(self, workload: Workload, origin: Mapping[str, str]) -> MultiTaskModule:
        torch.manual_seed(SEED)  # the same initialisation for every variant
        if self.method == FLOOR:
            return workload.module(origin, cls=FloorModule)
        factory = WEIGHTINGS.get(self.method) or AGGREGATORS[self.method]
        return workload.module(
            origin, balancer=factory(), balance_on=self.balance_on, gradient_engine=self.engine_choice
        )


def _key(method: str, balance_on: str) -> str:
    return method if balance_on == "shared" else f"{method}:{balance_on}"


def all_variants() -> list[Variant]:
    out = [Variant(m, m) for m in WEIGHTINGS] + [Variant(m, m) for m in AGGREGATORS]
    out += [Variant(_key(m, "representation"), m, "representation") for m in ON_REPRESENTATION]
    out += [Variant(_key(m, "last_layer"), m, "last_layer") for m in ON_LAST_LAYER]
    out += [
        Variant(f"{_key(m, on)}:{engine}", m, on, engine)
        for m, on in WITH_LOOP
        for engine in ("batched", "loop")
    ]
    return [*out, Variant(FLOOR, FLOOR)]


def select_variants(methods: str) -> list[Variant]:
    """``all`` or a comma-separated list of variant keys; EW and the floor are always included."""
    variants = {v.key: v for v in all_variants()}
    if methods == "all":
        return list(variants.values())
    keys = [k.strip() for k in methods.split(",") if k.strip()]
    unknown = [k for k in keys if k not in variants]
    if unknown:
        raise ValueError(
            f"Expected `--methods` to be 'all' or names from {list(variants)}, but got {unknown}. "
            "Separate names with commas, e.g. --methods EW,PCGrad,MGDA:representation."
        )
    wanted = {BASELINE, FLOOR, *keys}
    return [v for k, v in variants.items() if k in wanted]


# ------------------------------------------------------------------------------------------- memory
def peak_above_start(deltas: Iterable[int]) -> int:
    """The highest running sum of allocation deltas (bytes; frees negative), i.e. the peak memory
    allocated above the level at the start (0 when nothing is allocated above it)."""
    level = peak = 0
    for delta in deltas:
        level += delta
        peak = max(peak, level)
    return peak


class PeakMemory:
    """Peak tensor memory (bytes) allocated between `start` and `stop` on top of what existed before.

    CPU: the allocator's events recorded by `torch.profiler` (``profile_memory=True``), summed in time
    order; blocks allocated before `start` are invisible (the allocator reports no size when they are
    freed). CUDA: ``max_memory_allocated`` after ``reset_peak_memory_stats``, minus the start level.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._profiler: torch.profiler.profile | None = None
        self._base = 0

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return
        self._profiler = torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
        )
        self._profiler.start()

    def stop(self) -> int:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) - self._base
        assert self._profiler is not None
        self._profiler.stop()
        events = self._profiler.profiler.kineto_results.events()
        cpu = torch.autograd.DeviceType.CPU
        memory = [e for e in events if e.name() == "[memory]" and e.device_type() == cpu]
        memory.sort(key=lambda e: e.start_ns())  # stable: simultaneous events keep their order
        self._profiler = None
        return peak_above_start(e.nbytes() for e in memory)


def check_memory_meter(device: torch.device) -> int:
    """Measure allocations of known size (4 MB and 8 MB alive together, then freed): the meter must
    report 12 MB, give or take 64 kB of the interpreter's own small tensors. Returns the reading."""
    mb = 1 << 20
    meter = PeakMemory(device)
    meter.start()
    a = torch.ones(mb, device=device, dtype=torch.float32)  # 4 MB
    b = torch.ones(2 * mb, device=device, dtype=torch.float32)  # 8 MB
    del a, b
    reading = meter.stop()
    if not 12 * mb <= reading <= 12 * mb + 64 * 1024:
        raise AssertionError(
            f"Expected the memory meter to read 12 MB (12,582,912 bytes) for a 4 MB and an 8 MB tensor, "
            f"but it read {reading:,} bytes: the profiler's memory events are not what this script assumes."
        )
    return reading


# ------------------------------------------------------------------------------------------- timing
class CachedBatches:
    """Pre-fetched batches as a train "dataloader": one epoch is one pass over them."""

    def __init__(self, batches: list[Any]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[Any]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class StepClock(Callback):
    """Times ``steps`` steps after ``warmup`` (the interval between consecutive batch starts), then
    measures the peak memory of one more step (with ``memory``) until training ends."""

    def __init__(self, warmup: int, steps: int, device: torch.device, memory: bool) -> None:
        self.warmup, self.steps, self.device = warmup, steps, device
        self.meter = PeakMemory(device) if memory else None
        self.started = 0
        self.seconds = self.cpu_seconds = 0.0
        self.peak_bytes: int | None = None
        self._t0 = (0.0, 0.0)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.started == self.warmup:
            self._sync()
            self._t0 = (time.perf_counter(), time.process_time())
        elif self.started == self.warmup + self.steps:
            self._sync()
            self.seconds = time.perf_counter() - self._t0[0]
            self.cpu_seconds = time.process_time() - self._t0[1]
            if self.meter is not None:
                self.meter.start()
        self.started += 1

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.meter is not None and self.started == self.warmup + self.steps + 1:
            self.peak_bytes = self.meter.stop()


@dataclass
class Run:
    """One variant's timed run."""

    key: str
    ms_per_step: float
    cpu_ms_per_step: float
    peak_mb: float | None


def run_variant(
    variant: Variant,
    workload: Workload,
    origin: Mapping[str, str],
    batches: CachedBatches,
    args: argparse.Namespace,
    memory: bool,
) -> Run:
    """`Trainer.fit` of the variant for ``warmup + steps + 1`` steps; see `StepClock`."""
    module = variant.build(workload, origin)
    clock = StepClock(args.warmup, args.steps, args.device, memory)
    trainer = Trainer(
        use_distributed_sampler=False,
        accelerator=args.device.type,
        devices=1,
        precision=args.precision,
        max_steps=args.warmup + args.steps + 1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[clock],
    )
    trainer.fit(module, train_dataloaders=batches)
    if clock.started != args.warmup + args.steps + 1:
        raise RuntimeError(
            f"Expected {args.warmup + args.steps + 1} steps of {variant.key}, but got {clock.started}."
        )
    peak = None if clock.peak_bytes is None else clock.peak_bytes / 2**20
    return Run(variant.key, 1e3 * clock.seconds / args.steps, 1e3 * clock.cpu_seconds / args.steps, peak)


def fetch_batches(
    workload: Workload, num_tasks: int, count: int, device: torch.device
) -> tuple[dict[str, str], CachedBatches]:
    """``count`` batches of the ``all_tasks`` train loader over ``num_tasks`` (replicated) tasks."""
    source = ReplicatedTasks(workload.splits, workload.spec, num_tasks)
    dm = MultiTaskDataModule(source, batch_size=workload.batch_size, layout="all_tasks", seed=SEED)
    dm.setup("fit")
    batches = [move_data_to_device(b, device) for b in islice(iter(dm.train_dataloader()), count)]
    return source.origin, CachedBatches(batches)


def check_engines(workload: Workload, origin: Mapping[str, str], batch: Any, device: torch.device) -> float:
    """The largest difference between the batched and the looped gradient matrix ``G`` of the shared
    parameters on one batch of the benchmark model, relative to ``G``'s largest entry."""
    torch.manual_seed(SEED)
    module = workload.module(origin).to(device).train()
    step = module.task_losses(batch)
    losses = [step.losses[t] for t in origin]
    shared = [p for p in [*module.encoder.parameters(), *module.neck.parameters()] if p.requires_grad]
    batched = task_gradients(losses, shared, engine="batched")
    looped = task_gradients(losses, shared, engine="loop")
    return float((batched - looped).abs().max() / looped.abs().max().clamp_min(1e-30))


def time_variants(
    variants: list[Variant],
    workload: Workload,
    origin: Mapping[str, str],
    batches: CachedBatches,
    args: argparse.Namespace,
) -> dict[str, list[Run]]:
    """``repeats`` rounds of one run per variant, in an order rotated every round."""
    runs: dict[str, list[Run]] = {v.key: [] for v in variants}
    for r in range(args.repeats):
        for variant in rotated(variants, r):
            gc.collect()  # free the previous run's model outside the timing
            if args.device.type == "cuda":
                torch.cuda.empty_cache()
            run = run_variant(variant, workload, origin, batches, args, memory=r == 0)
            runs[variant.key].append(run)
            log.info(
                "  T=%d repeat %d/%d %s: %.1f ms/step",
                len(origin),
                r + 1,
                args.repeats,
                variant.key,
                run.ms_per_step,
            )
    return runs


# ------------------------------------------------------------------------------------------- report
def summarise(
    variants: list[Variant], runs: dict[str, list[Run]], num_tasks: int, device: torch.device
) -> list[dict[str, Any]]:
    """Per variant: median ms/step, and the medians of the per-repeat ratios to EW and to the floor."""
    rows = []
    for v in variants:
        own = runs[v.key]

        def ratio(reference: str, own: list[Run] = own, cpu: bool = False) -> float:
            pairs = zip(own, runs[reference], strict=True)
            if cpu:
                return statistics.median(a.cpu_ms_per_step / b.cpu_ms_per_step for a, b in pairs)
            return statistics.median(a.ms_per_step / b.ms_per_step for a, b in pairs)

        peak, base_peak = own[0].peak_mb, runs[BASELINE][0].peak_mb
        rows.append(
            {
                "tasks": num_tasks,
                "variant": v.key,
                "family": v.family,
                "balance_on": v.balance_on if v.family == "gradient aggregation" else "-",
                "engine": v.engine(device),
                "engine_choice": v.engine_choice,
                "exact": v.exact,
                "ms_per_step": statistics.median(r.ms_per_step for r in own),
                "cpu_ms_per_step": statistics.median(r.cpu_ms_per_step for r in own),
                "ratio_to_ew": ratio(BASELINE),
                "ratio_to_floor": ratio(FLOOR),
                "cpu_ratio_to_ew": ratio(BASELINE, cpu=True),
                "cpu_ratio_to_floor": ratio(FLOOR, cpu=True),
                "peak_mb": peak,
                "memory_ratio_to_ew": None if peak is None or not base_peak else peak / base_peak,
                "runs_ms_per_step": [round(r.ms_per_step, 2) for r in own],
                "runs_cpu_ms_per_step": [round(r.cpu_ms_per_step, 2) for r in own],
            }
        )
    return rows


def targets(rows: list[dict[str, Any]], device: torch.device) -> dict[str, Any]:
    """Issue 5's targets at the largest ``T`` measured (10 by default): on CPU on the process CPU time
    (`CPU_TIME_NOTE`), on a GPU on wall time."""
    largest = max(r["tasks"] for r in rows)
    at = [r for r in rows if r["tasks"] == largest]
    cpu = device.type == "cpu"
    prefix, runs_key = ("cpu_", "runs_cpu_ms_per_step") if cpu else ("", "runs_ms_per_step")
    out: dict[str, Any] = {"tasks": largest, "clock": "process CPU time" if cpu else "wall time"}
    exact = {r["variant"]: round(r[prefix + "ratio_to_floor"], 3) for r in at if r["exact"]}
    out["exact_within_15pct_of_floor"] = {k: v <= FLOOR_TARGET for k, v in exact.items()}
    out["exact_ratio_to_floor"] = exact
    rep = {
        r["variant"]: round(r[prefix + "ratio_to_ew"], 3)
        for r in at
        if r["balance_on"] == "representation" and r["engine_choice"] == "auto"
    }
    out["representation_within_1.5x_of_ew"] = {k: v <= REPRESENTATION_TARGET for k, v in rep.items()}
    out["representation_ratio_to_ew"] = rep
    by = {r["variant"]: r for r in at}
    out["batched_over_loop"] = {}  # median over repeats of the batched / looped step time
    for method, on in WITH_LOOP:
        batched, looped = by.get(_key(method, on) + ":batched"), by.get(_key(method, on) + ":loop")
        if batched is not None and looped is not None:
            pairs = zip(batched[runs_key], looped[runs_key], strict=True)
            out["batched_over_loop"][_key(method, on)] = round(statistics.median(a / b for a, b in pairs), 3)
    if device.type == "cuda":
        out["batched_at_most_half_of_loop"] = {
            k: v <= GPU_LOOP_TARGET for k, v in out["batched_over_loop"].items()
        }
    return out


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| T | variant | family | balance_on | engine | ms/step | x EW | x floor | CPU ms/step | CPU x EW "
        "| CPU x floor | peak MB | memory x EW |",
        "| ---: | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['tasks']} | {r['variant']} | {r['family']} | {r['balance_on']} | {r['engine']} | "
            f"{r['ms_per_step']:.1f} | {r['ratio_to_ew']:.2f} | {r['ratio_to_floor']:.2f} | "
            f"{r['cpu_ms_per_step']:.1f} | {r['cpu_ratio_to_ew']:.2f} | {r['cpu_ratio_to_floor']:.2f} | "
            f"{_fmt(r['peak_mb'], '.1f')} | {_fmt(r['memory_ratio_to_ew'], '.2f')} |"
        )
    return "\n".join(lines)


def targets_text(t: dict[str, Any]) -> list[str]:
    def verdict(checks: dict[str, bool], ratios: dict[str, float], what: str) -> str:
        if not checks:
            return f"- {what}: not measured."
        missed = [f"{k} ({ratios[k]:.2f}x)" for k, ok in checks.items() if not ok]
        met = sum(checks.values())
        return f"- {what}: **{met} of {len(checks)} met**" + (
            f"; missed by {', '.join(missed)}." if missed else "."
        )

    lines = [
        f"Targets of issue 5 at T = {t['tasks']} (ratios of {t['clock']}):",
        "",
        verdict(
            t["exact_within_15pct_of_floor"],
            t["exact_ratio_to_floor"],
            "exact methods within 15 % of the floor",
        ),
        verdict(
            t["representation_within_1.5x_of_ew"],
            t["representation_ratio_to_ew"],
            "representation variants within 1.5x of EW",
        ),
    ]
    for method, ratio in t["batched_over_loop"].items():
        gpu = t.get("batched_at_most_half_of_loop", {}).get(method)
        note = "" if gpu is None else f" (GPU target <= 0.5: {'met' if gpu else '**missed**'})"
        lines.append(f"- {method}: batched engine / per-task loop step time = {ratio:.2f}{note}.")
    return lines


def render(
    workload: Workload, rows: list[dict[str, Any]], info: dict[str, Any], config: dict[str, Any]
) -> str:
    device = config["device"]
    memory = (
        "`torch.cuda.max_memory_allocated` after `reset_peak_memory_stats`"
        if device == "cuda"
        else "`torch.profiler` (profile_memory=True): the CPU allocator's allocations and frees during the step, in "
        "time order, summed"
    )
    md = [
        f"# Balancing methods: step time and peak memory ({device}, {workload.name})",
        "",
        f"Model: {workload.description}; {config['batch_size']} examples per task per step (`all_tasks`), "
        f"precision {config['precision']}, {config['threads']} torch thread(s). Every variant trains the same "
        "initialisation on the same pre-fetched real batches under `Trainer.fit` (no logger); for T above 4 the "
        "source's tasks are replicated with their own heads. ms/step = median over "
        f"{config['repeats']} interleaved repeats of {config['steps']} timed steps after {config['warmup']} "
        "warm-up steps; x EW and x floor = median of the per-repeat ratios; CPU ms/step and its ratios: the "
        "same on the process CPU time. " + (CPU_TIME_NOTE + " " if device == "cpu" else "") + "Floor = one "
        "forward pass plus one "
        "backward pass per task through the shared part and its head, summed into `.grad`, plus the optimizer "
        f"step. Peak MB = the peak of the tensor memory allocated during one step (on top of the parameters, "
        f"optimizer state and batches), by {memory}. "
        "Generated by `benchmarks/balancing.py`.",
        "",
        markdown_table(rows),
        "",
        *targets_text(config["targets"]),
        "",
        f"Batched and looped per-task gradients agree on this model (largest relative difference "
        f"{config['engine_check_relative_difference']:.1e}).",
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in info.items() if v is not None) + ".",
        "",
    ]
    return "\n".join(md)


# ------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="census,minilm", help="comma-separated: census, minilm")
    p.add_argument("--tasks", default="2,5,10", help="comma-separated numbers of tasks T")
    p.add_argument(
        "--methods", default="all", help="'all' or comma-separated variant names (EW and floor always run)"
    )
    p.add_argument(
        "--steps", type=int, default=None, help="timed steps per run (default: census 20, minilm 3)"
    )
    p.add_argument(
        "--warmup", type=int, default=None, help="untimed steps first (default: census 3, minilm 1)"
    )
    p.add_argument(
        "--repeats", type=int, default=3, help="interleaved runs of every variant (medians reported)"
    )
    p.add_argument(
        "--batch-size", type=int, default=None, help="examples per task per step (census 512, minilm 8)"
    )
    p.add_argument("--batches", type=int, default=8, help="distinct real batches, cycled")
    p.add_argument("--max-length", type=int, default=32, help="minilm: tokens per example")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--precision", choices=["32-true", "bf16-mixed"], default="32-true")
    p.add_argument(
        "--threads", type=int, default=1, help="torch.set_num_threads (default 1: stabler on a shared CPU)"
    )
    p.add_argument("--no-wait", action="store_true", help=f"do not wait for {WAIT_FOR} to finish first")
    p.add_argument("--out-dir", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    p.add_argument("--no-save", action="store_true", help="print the tables only")
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not args.models or any(m not in WORKLOADS for m in args.models):
        p.error(f"--models must name some of {list(WORKLOADS)}, but got {args.models}.")
    try:
        args.tasks = sorted({int(t) for t in args.tasks.split(",")})
    except ValueError:
        p.error(f"--tasks must be comma-separated integers, but got {args.tasks!r}.")
    if min(args.tasks) < 2:
        p.error(f"--tasks must be >= 2 (balancing needs two tasks), but got {args.tasks}.")
    try:
        args.variants = select_variants(args.methods)
    except ValueError as err:
        p.error(str(err))
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available here (torch.cuda.is_available() is False).")
    args.device = torch.device(args.device)
    for name in ("steps", "warmup", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, but got {value}.")
    if min(args.repeats, args.batches, args.threads) < 1:
        p.error("--repeats, --batches and --threads must be >= 1.")
    return args


def run_model(model: str, args: argparse.Namespace, load_before: float | None) -> str:
    """Every T and every variant for one model; returns the Markdown report."""
    opts = argparse.Namespace(**vars(args))
    for key, value in DEFAULTS[model].items():
        if getattr(opts, key) is None:
            setattr(opts, key, value)
    kwargs = {} if args.batch_size is None else {"batch_size": args.batch_size}
    if model == "minilm":
        kwargs["max_length"] = args.max_length
    workload = WORKLOADS[model](**kwargs)
    rows: list[dict[str, Any]] = []
    engine_check = 0.0
    for num_tasks in args.tasks:
        origin, batches = fetch_batches(workload, num_tasks, args.batches, args.device)
        if num_tasks == args.tasks[0]:
            engine_check = check_engines(workload, origin, batches.batches[0], args.device)
            if engine_check > 1e-4:
                raise AssertionError(
                    f"Expected the batched and the looped per-task gradients to agree, but they differ by "
                    f"{engine_check:.1e} (relative) on {model}: the loop comparison would not be like for like."
                )
        log.info("%s, T=%d: %d variants x %d repeats ...", model, num_tasks, len(args.variants), args.repeats)
        runs = time_variants(args.variants, workload, origin, batches, opts)
        rows += summarise(args.variants, runs, num_tasks, args.device)
    table = markdown_table(rows)
    print(table)
    config = {
        "model": model,
        "device": args.device.type,
        "precision": args.precision,
        "tasks": args.tasks,
        "variants": [v.key for v in args.variants],
        "batch_size": workload.batch_size,
        "batches": args.batches,
        "steps": opts.steps,
        "warmup": opts.warmup,
        "repeats": args.repeats,
        "threads": args.threads,
        "max_length": args.max_length if model == "minilm" else None,
        "engine_check_relative_difference": engine_check,
        "targets": targets(rows, args.device),
    }
    info = describe_machine(args.device) | {
        "load_average_1min_before": load_before,
        "load_average_1min_after": load_average(),
        "other_processes_after": other_processes(WAIT_FOR) or "none",
    }
    markdown = render(workload, rows, info, config)
    print("\n".join(targets_text(config["targets"])))
    if not args.no_save:
        stem = f"balancing-{args.device.type}-{model}"
        path = save_results(
            args.out_dir, stem, markdown, {"config": config, "machine": info, "results": rows}
        )
        log.info("Wrote %s and .json", path)
    return markdown


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start_benchmark(args.threads)
    reading = check_memory_meter(args.device)
    log.info("Memory meter reads %d bytes for 12 MB of known allocations.", reading)
    waited = 0.0 if args.no_wait else wait_for_quiet(WAIT_FOR)
    if waited:
        log.info("Waited %.0f s for other processes.", waited)
    start = time.perf_counter()
    for model in args.models:
        run_model(model, args, load_average())
    log.info("Done in %.0f s.", time.perf_counter() - start)


if __name__ == "__main__":
    main()
