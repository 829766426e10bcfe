"""Each task's primary metric on a set of batches, outside a Trainer (single process).

Pruning evaluates the same model under many head masks; a plain loop over the batches with fresh
torchmetrics collections is all that needs, and leaves the model's own metric states untouched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch.utilities import move_data_to_device

if TYPE_CHECKING:
    from mtl.module import MultiTaskModule

__all__ = ["evaluate_tasks"]


@torch.no_grad()
def evaluate_tasks(model: MultiTaskModule, batches: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """``{task: value of its head's primary metric}`` over every labelled example in ``batches``.

    The model runs in eval mode (its training mode is restored). Tasks without labelled examples are
    left out.
    """
    device = next(model.parameters()).device
    collections = {task: head.metrics().to(device) for task, head in model.heads.items()}
    seen: set[str] = set()
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            batch = move_data_to_device(batch, device)
            step = model.task_losses(batch)
            for task, predictions in step.predictions.items():
                head = model.heads[task]
                collections[task].update(*head.metric_inputs(predictions, batch["targets"][task]))
                seen.add(task)
    finally:
        model.train(was_training)
    return {
        task: float(collections[task].compute()[head.primary_metric])
        for task, head in model.heads.items()
        if task in seen
    }
