"""A fixed random sample of one task's examples, in batches: the data importance is estimated on.

Michel et al. (2019) and their public code estimate importance on (a subset of) the training data;
a seeded sample keeps the estimate the same every time it is recomputed, and independent of how
the source happens to order its examples (e.g. sorted by label).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from torch.utils.data import DataLoader

from mtl.data.tagged_concat import TaggedConcat

if TYPE_CHECKING:
    from mtl.data.datamodule import MultiTaskDataModule

__all__ = ["task_batches"]


def task_batches(
    datamodule: MultiTaskDataModule,
    task: str,
    split: Literal["train", "val", "test"] = "train",
    batch_size: int | None = None,
    max_batches: int | None = None,
    seed: int = 0,
) -> DataLoader:
    """Batches (`mtl.data.collate` format) of a seeded random sample of ``task``'s ``split``.

    Iterating the loader twice gives the same batches. The data module must be set up.

    Args:
        datamodule: the data.
        task: the task whose examples to draw.
        split: which split to draw from.
        batch_size: examples per batch (default: the data module's evaluation batch size).
        max_batches: at most this many batches (default: every example once).
        seed: seed of the sample.
    """
    datasets = datamodule.datasets(split)
    if task not in datasets:
        raise ValueError(
            f"Expected `task` to be one of the tasks with a {split} split, {sorted(datasets)}, but got {task!r}."
        )
    batch_size = batch_size or datamodule.eval_batch_size
    if batch_size < 1 or (max_batches is not None and max_batches < 1):
        raise ValueError(
            f"Expected `batch_size` and `max_batches` to be at least 1, but got {batch_size} and {max_batches}."
        )
    dataset = {task: datasets[task]}
    order = torch.randperm(len(datasets[task]), generator=torch.Generator().manual_seed(seed)).tolist()
    if max_batches is not None:
        order = order[: max_batches * batch_size]
    chunks = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    return DataLoader(TaggedConcat(dataset), batch_sampler=chunks, collate_fn=datamodule.collate_fn(dataset))
