"""`MultiTaskDataModule`: per-task datasets from a `DataSource`, served one task per training batch."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from functools import partial
from typing import Any, Literal

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader

from mtl.data.batch_samplers import (
    AllTasksBatchSampler,
    EvaluationBatchSampler,
    HomogeneousBatchSampler,
    MixedBatchSampler,
    MultiTaskBatchSampler,
)
from mtl.data.collate import collate
from mtl.data.samplers import TaskSampler
from mtl.data.sources.base import DataSource, TaskSplits
from mtl.data.tagged_concat import TaggedConcat
from mtl.data.task_dataset import TaskDataset

__all__ = ["LAYOUTS", "MultiTaskDataModule"]

Split = Literal["train", "val", "test"]
Layout = Literal["homogeneous", "mixed", "all_tasks"]
LAYOUTS: dict[str, type[MultiTaskBatchSampler]] = {
    "homogeneous": HomogeneousBatchSampler,
    "mixed": MixedBatchSampler,
    "all_tasks": AllTasksBatchSampler,
}


class MultiTaskDataModule(LightningDataModule):
    """Serves a multi-task `DataSource` to a `MultiTaskModule`, on one process or many.

    Training: the ``layout`` says what a step holds (one task, a mix, or every task) and the task
    ``sampler`` which tasks; both are the same on every rank at every step, each task's examples are
    sharded by rank, and every rank gets the same number of batches (see
    `mtl.data.batch_samplers`). Validation and test cover every example of every task exactly once
    across ranks. The position in the epoch goes into checkpoints, so a run resumed mid-epoch sees
    exactly the batches the uninterrupted run would have seen.

    Under several processes, Lightning must not wrap the loaders in its own distributed sampler:
    ``Trainer(use_distributed_sampler=False)`` (the ``mtl`` CLI sets it).

    Args:
        source: the data (e.g. `mtl.data.sources.CensusIncome`).
        batch_size: training examples per rank per step (per task for ``all_tasks``).
        eval_batch_size: examples per validation/test/predict batch (default: ``batch_size``).
        layout: ``homogeneous`` (one task per step), ``mixed`` (several tasks per step in the
            sampler's proportions) or ``all_tasks`` (a sub-batch of every task at every step).
        sampler: which task(s) each step draws (default `mtl.data.samplers.ProportionalSampler`).
        num_workers: data-loading worker processes.
        pin_memory: pin host memory (faster copies to a GPU).
        seed: seed of the task order and of the per-task shuffles (epoch ``e`` uses ``(seed, e)``).
    """

    def __init__(
        self,
        source: DataSource,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        layout: Layout = "homogeneous",
        sampler: TaskSampler | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"Expected `batch_size` to be at least 1, but got {batch_size}.")
        if layout not in LAYOUTS:
            raise ValueError(f"Expected `layout` to be one of {sorted(LAYOUTS)}, but got {layout!r}.")
        self.source = source
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.layout = layout
        self.sampler = sampler
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.seed = seed
        self.splits: dict[str, TaskSplits] | None = None
        self.train_batches: MultiTaskBatchSampler | None = None
        self._resume: dict[str, Any] | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.splits is None:
            self.splits = self.source.load()
            empty = [t for t, s in self.splits.items() if len(s.train) == 0]
            if empty:
                raise ValueError(f"Expected every task to have training examples, but {empty} have none.")

    @property
    def task_names(self) -> list[str]:
        """Tasks in the source's order (after `setup`)."""
        return list(self._splits())

    def datasets(self, split: Split) -> dict[str, TaskDataset]:
        """The tasks' datasets of ``split`` (tasks without that split are left out)."""
        return {t: getattr(s, split) for t, s in self._splits().items() if getattr(s, split) is not None}

    def _splits(self) -> dict[str, TaskSplits]:
        if self.splits is None:
            raise RuntimeError("Call `setup()` before asking the data module for its tasks or datasets.")
        return self.splits

    def collate_fn(self, datasets: Mapping[str, TaskDataset]):
        """The collate function of this data module's loaders for ``datasets`` (pads token inputs with
        the source's pad id, per-token targets with the ignore index): for loaders built elsewhere on
        the same data, such as the attention-head scores and the data-map probes."""
        pad = {"input_ids": self.source.input_spec().get("pad_token_id", 0)}
        sequence_tasks = frozenset(t for t, ds in datasets.items() if not isinstance(ds.targets, Tensor))
        return partial(collate, pad_values=pad, sequence_tasks=sequence_tasks)

    def _world(self) -> tuple[int, int]:
        """``(num_replicas, rank)`` from the trainer, else from torch.distributed, else one process."""
        trainer = self.trainer
        if trainer is not None:
            if trainer.world_size > 1 and trainer._accelerator_connector.use_distributed_sampler:
                raise RuntimeError(
                    "Expected `Trainer(use_distributed_sampler=False)` with MultiTaskDataModule on "
                    f"{trainer.world_size} processes, but it is True: Lightning would replace mtl's rank-aware "
                    "task sampling with its own sampler. Pass `use_distributed_sampler=False` to the Trainer "
                    "(the `mtl` CLI does this by default)."
                )
            return trainer.world_size, trainer.global_rank
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_world_size(), torch.distributed.get_rank()
        return 1, 0

    def _loader(self, split: Split) -> DataLoader:
        datasets = self.datasets(split)
        concat = TaggedConcat(datasets)
        replicas, rank = self._world()
        batches: MultiTaskBatchSampler | EvaluationBatchSampler
        if split == "train":
            batches = LAYOUTS[self.layout](
                concat.sizes,
                self.batch_size,
                sampler=self.sampler,
                num_replicas=replicas,
                rank=rank,
                seed=self.seed,
            )
            if self._resume is not None:
                batches.load_state_dict(self._resume["batches"])
                batches.skip(self._resume["steps_done"], epoch=self._resume["epoch"])
                self._resume = None
            self.train_batches = batches
        else:
            batches = EvaluationBatchSampler(concat.sizes, self.eval_batch_size, replicas, rank)
        return DataLoader(
            concat,
            batch_sampler=batches,
            collate_fn=self.collate_fn(datasets),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        # Lightning cannot tell that a custom batch sampler yields every example; this one does
        # (EvaluationBatchSampler never drops or pads), so its warning would only alarm.
        warnings.filterwarnings(
            "ignore", message="You are using a custom batch sampler `EvaluationBatchSampler` for prediction"
        )
        return self._loader("test")

    # ----------------------------------------------------------------------------------- resume
    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint: the sampler's state and how far into the epoch training got."""
        if self.train_batches is None or self.trainer is None:
            return {}
        loop = self.trainer.fit_loop.epoch_loop
        # A checkpoint written at the end of an epoch resumes at the start of the next one.
        done = 0 if loop.batch_progress.is_last_batch else loop.batch_progress.current.processed
        return {
            "batches": self.train_batches.state_dict(),
            "epoch": self.trainer.current_epoch,
            "steps_done": done,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume = state or None
        if self._resume and self._resume.get("steps_done"):
            # Lightning warns that a mid-epoch resume is unreliable unless the *loader* object is
            # stateful; here the data module restores the position exactly (tests/test_resume.py).
            warnings.filterwarnings(
                "ignore", message="You're resuming from a checkpoint that ended before the epoch"
            )
