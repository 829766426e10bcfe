"""The task-affinity contract: a callback that measures a ``[T, T]`` matrix during one joint training run.

``A[i, j]`` says how much training on task ``i`` helps task ``j`` (higher = better together). The
grouping methods of `mtl.grouping` read it; every measurement method (TAG lookahead, gradient cosine,
data maps) is one subclass of `AffinityCallback`. Step-based methods derive from
`StepAffinityCallback`, which measures every ``every_n_steps`` optimizer steps on training batches
that hold every task, before the optimizer takes its step, and averages the measurements over
training; each epoch's mean is kept as well (`AffinityCallback.trajectory`), since affinities can
change sign as training goes on (related tasks help each other while they learn shared features and
may compete once those are learnt).

All measurements need ``data.layout: all_tasks`` (every task's loss on the same step). Under DDP the
measured quantities are averaged across ranks before anything is derived from them, so every rank
holds the same matrix. The accumulated sums travel in the callback's checkpoint state, so a resumed
run continues the average.
"""

from __future__ import annotations

import abc
import csv
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor, nn

from mtl import plots

__all__ = [
    "AffinityCallback",
    "StepAffinityCallback",
    "load_affinity",
    "preserved_state",
    "shared_parameters",
]

#: The most tasks for which `StepAffinityCallback.save` draws the affinity over training (a row per
#: ordered pair: 132 rows at 12 tasks); the CSV is written for any number.
MAX_TRAJECTORY_TASKS = 12


def shared_parameters(pl_module: LightningModule) -> list[nn.Parameter]:
    """The trainable parameters every task shares: the encoder's and the neck's (not the heads')."""
    if not callable(getattr(pl_module, "shared_parameters", None)):
        raise TypeError(
            f"Expected a MultiTaskModule (with an `encoder`, a `neck` and `heads`), but got "
            f"{type(pl_module).__name__}. Measure task affinity on an mtl MultiTaskModule."
        )
    return pl_module.shared_parameters()


@contextmanager
def preserved_state(module: nn.Module) -> Iterator[None]:
    """Run extra forwards on ``module`` without leaving a trace on training.

    Buffers (batch-norm running statistics) and the random number generators (dropout masks) are
    restored exactly on exit, so a measurement neither shifts the running statistics nor changes the
    random stream the training step draws from.
    """
    buffers = [(b, b.detach().clone()) for b in module.buffers()]
    tensors = [*module.parameters(), *module.buffers()]
    devices = sorted({t.device.index or 0 for t in tensors if t.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            with torch.no_grad():
                for buffer, saved in buffers:
                    buffer.copy_(saved)


def write_affinity_csv(path: Path, task_names: list[str], matrix: Tensor) -> None:
    """``matrix`` as a labelled CSV: a header ``task, t_1..t_T`` and one row per task (17 digits)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["task", *task_names])
        for name, row in zip(task_names, matrix.tolist(), strict=True):
            writer.writerow([name, *(f"{v:.17g}" for v in row)])


def load_affinity(path: str | Path) -> tuple[list[str], Tensor]:
    """Read an ``affinity.csv`` written by `AffinityCallback.save`: (task names, ``[T, T]`` float64)."""
    with Path(path).open(newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows or rows[0][:1] != ["task"]:
        raise ValueError(
            f"Expected `path` to be an affinity CSV whose header starts with `task`, but got {path}. "
            "Pass the affinity.csv that an affinity callback wrote."
        )
    names = rows[0][1:]
    body = rows[1:]
    if [r[0] for r in body] != names or any(len(r) != len(names) + 1 for r in body):
        raise ValueError(
            f"Expected `path` to hold a square matrix labelled by the same tasks in rows and columns, "
            f"but {path} does not (columns: {names}). Rewrite it with `AffinityCallback.save`."
        )
    return names, torch.tensor([[float(v) for v in r[1:]] for r in body], dtype=torch.float64)


class AffinityCallback(Callback, abc.ABC):
    """Measures a ``[T, T]`` task-affinity matrix during one joint training run.

    Subclasses set ``method`` and feed measurements to `accumulate`, tagged with the training epoch
    (or override `affinity`); `affinity` is the mean of all of them, `trajectory` each epoch's mean. At the
    end of fitting the matrix is written with `save` to ``directory`` (default
    ``{trainer.log_dir}/affinity``) on the global-zero rank, when anything was measured.

    Args:
        directory: where `on_fit_end` writes ``affinity.csv`` and ``affinity.png``; ``None`` for
            ``{trainer.log_dir or trainer.default_root_dir}/affinity``.
    """

    method: ClassVar[str]

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = None if directory is None else Path(directory)
        #: Task names, in the order of the matrix's rows and columns; set at `setup`.
        self.task_names: list[str] = []
        # Sums and counts per training epoch: the mean over training, and how it moved (`trajectory`).
        self._sums: dict[int, Tensor] = {}
        self._counts: dict[int, int] = {}

    # ------------------------------------------------------------------------------- set-up
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        names = getattr(pl_module, "task_names", None)
        if not names:
            raise TypeError(
                f"Expected a MultiTaskModule with `task_names`, but got {type(pl_module).__name__}. "
                f"{type(self).__name__} measures the affinity of an mtl MultiTaskModule's tasks."
            )
        if self.task_names and list(names) != self.task_names:
            raise ValueError(
                f"Expected the tasks {self.task_names} this callback measured so far, but the model has "
                f"{list(names)}. Use a fresh {type(self).__name__} for a different set of tasks."
            )
        self.task_names = list(names)
        if stage != "fit":
            return
        datamodule = getattr(trainer, "datamodule", None)
        layout = getattr(datamodule, "layout", None)
        if layout != "all_tasks":
            raise ValueError(
                f"Expected `data.layout` to be `all_tasks` for the {self.method} affinity, but got "
                f"`{layout}`: affinity compares every task on the same step. Set `data.layout: all_tasks` "
                "(MultiTaskDataModule)."
            )

    # ------------------------------------------------------------------------------- accumulation
    def accumulate(self, matrix: Tensor, epoch: int = 0) -> None:
        """Add one measurement ``[T, T]`` (the same on every rank), taken in training epoch ``epoch``."""
        t = len(self.task_names)
        if matrix.shape != (t, t):
            raise ValueError(f"Expected a measurement of shape ({t}, {t}), but got {tuple(matrix.shape)}.")
        matrix = matrix.detach().to("cpu", torch.float64)
        self._sums[epoch] = self._sums[epoch] + matrix if epoch in self._sums else matrix
        self._counts[epoch] = self._counts.get(epoch, 0) + 1

    @property
    def measurements(self) -> int:
        """How many measurements the mean covers."""
        return sum(self._counts.values())

    def _check_measured(self) -> None:
        if not self._counts:
            raise RuntimeError(
                f"Expected at least one {self.method} affinity measurement, but got none. Train for at "
                "least one step (or epoch) with the callback attached, or lower `every_n_steps`."
            )

    def affinity(self) -> Tensor:
        """``A`` ``[T, T]`` float64 on the CPU: ``A[i, j]``, how much training on task ``i`` helps task ``j``
        (the mean over every measurement)."""
        self._check_measured()
        return torch.stack(list(self._sums.values())).sum(dim=0) / self.measurements

    def trajectory(self) -> tuple[list[int], Tensor]:
        """How the affinity moved during training: the epochs with measurements, in order, and
        ``[E, T, T]`` float64, the mean of each epoch's measurements."""
        self._check_measured()
        epochs = sorted(self._sums)
        return epochs, torch.stack([self._sums[e] / self._counts[e] for e in epochs])

    # ------------------------------------------------------------------------------- output
    def save(self, directory: str | Path, loggers: Iterable[Any] = ()) -> dict[str, Path]:
        """Write ``affinity.csv`` and ``affinity.png`` under ``directory``; log the image to ``loggers``.

        The heatmap uses a diverging colour map centred on 0 (affinities are signed). Call on the
        global-zero rank only. Returns ``{"csv": path, "png": path}``.
        """
        matrix = self.affinity()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        csv_path = directory / "affinity.csv"
        write_affinity_csv(csv_path, self.task_names, matrix)
        figure = plots.signed_heatmap(
            matrix,
            self.task_names,
            self.task_names,
            title=f"{self.method} task affinity",
            xlabel="task j (helped)",
            ylabel="task i (trained on)",
            colorbar_label="affinity",
        )
        png = plots.log_figure(
            figure, directory / "affinity.png", f"grouping/{self.method}/affinity", loggers
        )
        figure.clear()
        return {"csv": csv_path, "png": png}

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        directory = self.directory or Path(trainer.log_dir or trainer.default_root_dir) / "affinity"
        if trainer.is_global_zero and self.measurements > 0:
            self.save(directory, trainer.loggers)

    # ------------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"task_names": list(self.task_names), "sums": dict(self._sums), "counts": dict(self._counts)}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.task_names = list(state_dict["task_names"])
        self._sums = {int(e): v for e, v in state_dict["sums"].items()}
        self._counts = {int(e): int(v) for e, v in state_dict["counts"].items()}


class StepAffinityCallback(AffinityCallback):
    """An affinity measured from training batches, every ``every_n_steps`` optimizer steps.

    The measurement runs in ``on_train_batch_start``, on the batch the step is about to train on and
    with the parameters before that step's update. Batches in which a task has no labelled row (on
    any rank) are skipped on every rank alike.

    Args:
        every_n_steps: measure when ``trainer.global_step`` is a multiple of this (>= 1).
        directory: see `AffinityCallback`.
    """

    def __init__(self, every_n_steps: int = 1, directory: str | Path | None = None) -> None:
        if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(
                f"Expected `every_n_steps` to be an integer >= 1, but got {every_n_steps!r}. Pass how many "
                "optimizer steps lie between two measurements."
            )
        super().__init__(directory)
        self.every_n_steps = every_n_steps
        self._last_step = -1

    @abc.abstractmethod
    def measure(self, trainer: Trainer, pl_module: LightningModule, batch: Mapping[str, Any]) -> Tensor:
        """One measurement ``[T, T]`` on ``batch`` (every task present), identical on every rank."""

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step % self.every_n_steps or step == self._last_step:
            return  # with gradient accumulation several batches share one optimizer step
        self._last_step = step
        present = torch.tensor(
            float(all(len(batch["targets"].get(t, ())) > 0 for t in self.task_names)), device=pl_module.device
        )
        if float(trainer.strategy.reduce(present, reduce_op="min")) < 1:
            return
        with preserved_state(pl_module):
            self.accumulate(self.measure(trainer, pl_module, batch), trainer.current_epoch)

    def save(self, directory: str | Path, loggers: Iterable[Any] = ()) -> dict[str, Path]:
        """`AffinityCallback.save`, plus how the affinity moved during training:
        ``affinity_by_epoch.csv`` (one row per epoch and ordered pair: ``epoch, measurements, source,
        target, affinity``, the epoch's mean) and, when at least two epochs were measured and there are
        at most `MAX_TRAJECTORY_TASKS` tasks, ``affinity_over_training.png`` (also logged to
        ``loggers``): one row per ordered pair ``i → j``, one column per epoch, each epoch's values
        divided by its mean absolute self-affinity ``|A[t, t]|`` so that epochs of different scale
        (TAG's lookahead gains grow as the losses shrink) share one colour scale."""
        paths = super().save(directory, loggers)
        epochs, means = self.trajectory()
        names = self.task_names
        paths["by_epoch"] = Path(directory) / "affinity_by_epoch.csv"
        with paths["by_epoch"].open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["epoch", "measurements", "source", "target", "affinity"])
            for epoch, matrix in zip(epochs, means.tolist(), strict=True):
                for i, source in enumerate(names):
                    for j, target in enumerate(names):
                        writer.writerow([epoch, self._counts[epoch], source, target, f"{matrix[i][j]:.17g}"])
        if len(epochs) >= 2 and len(names) <= MAX_TRAJECTORY_TASKS:
            pairs = [(i, j) for i in range(len(names)) for j in range(len(names)) if i != j]
            scale = means.diagonal(dim1=1, dim2=2).abs().mean(dim=1).clamp_min(1e-300)
            relative = (means / scale[:, None, None])[:, [i for i, _ in pairs], [j for _, j in pairs]].T
            figure = plots.signed_heatmap(
                relative,
                [f"{names[i]} → {names[j]}" for i, j in pairs],
                [str(e) for e in epochs],
                title=f"{self.method} task affinity over training",
                xlabel="epoch",
                ylabel="task i → task j (helped)",
                colorbar_label="affinity / mean |self-affinity| of the epoch",
            )
            paths["over_training"] = plots.log_figure(
                figure,
                Path(directory) / "affinity_over_training.png",
                f"grouping/{self.method}/affinity_over_training",
                loggers,
            )
            figure.clear()
        return paths

    def task_losses(self, pl_module: LightningModule, batch: Mapping[str, Any]) -> Tensor:
        """``[T]`` the per-task losses of ``batch`` (in `task_names` order), with the graph kept."""
        losses = pl_module.task_losses(batch).losses
        return torch.stack([losses[t] for t in self.task_names])

    def weighted(self, pl_module: LightningModule, losses: Mapping[str, Tensor]) -> list[Tensor]:
        """``w_t L_t`` for the per-task ``losses`` of a batch (in `task_names` order), each its own scalar:
        `task_gradients` then differentiates each task through its own head only."""
        return [losses[t] * pl_module.loss_weights[t] for t in self.task_names]
