"""Write the predictions of ``mtl predict`` to files: per task, in the order of the task's examples."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor

from mtl.data.batch_samplers.base import offsets_of

__all__ = ["PredictionWriter", "load_predictions"]

Predictions = dict[str, dict[str, Tensor]]


def _save_atomic(payload: Any, path: Path) -> None:
    """``torch.save`` through a temporary file and a rename, so a reader never sees a torn file."""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_predictions(path: str | Path) -> Predictions:
    """Read ``predictions.pt`` (tensors only: ``weights_only=True``)."""
    return torch.load(path, map_location="cpu", weights_only=True)


class PredictionWriter(BasePredictionWriter):
    """Writes what `Trainer.predict` (``mtl predict``) returns for a `MultiTaskModule` on a
    `MultiTaskDataModule`.

    `MultiTaskModule.predict_step` predicts every task for every row; each task keeps its head's
    predictions (`Head.predict`: probabilities, classes or values) for its own examples, ordered by
    their index in the task's dataset (the split the data module predicts on, its test split).

    Files in ``directory``:

    * ``predictions.pt``: ``{task: {"index": int64 [N], "prediction": [N, ...]}}``, readable with
      `load_predictions` (``torch.load(..., weights_only=True)``);
    * ``{task}.csv`` for predictions of one value or one vector per example: a column ``index`` and
      ``prediction`` (one value) or ``prediction_0 .. prediction_{K-1}`` (e.g. class probabilities).
      Per-token predictions (sequence tasks) are in the ``.pt`` file only, padded to the longest
      sequence with NaN (floating point) or ``-100`` (integers).

    Under DDP every rank predicts its shard of each task; each writes its part, and global rank 0
    merges the parts in example order once every rank has written (so the files equal a one-process
    run's) and removes them. Files are written through a temporary file and a rename.

    Args:
        directory: where to write; ``None`` for ``{trainer.default_root_dir}/predictions``.
    """

    def __init__(self, directory: str | Path | None = None) -> None:
        super().__init__(write_interval="epoch")
        self.directory = None if directory is None else Path(directory)

    def output_directory(self, trainer: Trainer) -> Path:
        """Where the files go for ``trainer``."""
        return self.directory or Path(trainer.default_root_dir) / "predictions"

    def write_on_epoch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        predictions: Sequence[Any],
        batch_indices: Sequence[Any],
    ) -> None:
        dataset = getattr(trainer.predict_dataloaders, "dataset", None)
        if not hasattr(dataset, "tasks") or not hasattr(dataset, "sizes"):
            raise TypeError(
                "Expected a single predict dataloader of a MultiTaskDataModule (its dataset knows the tasks "
                f"of its rows), but got {type(trainer.predict_dataloaders).__name__}. Predict with the "
                "MultiTaskDataModule of the run's config."
            )
        if not batch_indices or not batch_indices[0]:
            raise RuntimeError(
                "Expected Lightning to record the example indices of each predict batch, but got none; "
                "without them predictions cannot be matched to examples."
            )
        part = _own_examples(predictions, batch_indices[0], dataset.tasks, offsets_of(dataset.sizes))
        directory = self.output_directory(trainer)
        directory.mkdir(parents=True, exist_ok=True)
        if trainer.world_size == 1:
            _write(directory, part)
            return
        parts = directory / "parts"
        parts.mkdir(exist_ok=True)
        _save_atomic(part, parts / f"rank{trainer.global_rank}.pt")
        trainer.strategy.barrier("prediction_parts")
        if trainer.is_global_zero:
            paths = [parts / f"rank{r}.pt" for r in range(trainer.world_size)]
            _write(directory, _merge([load_predictions(p) for p in paths]))
            for path in paths:
                path.unlink()
            parts.rmdir()
        trainer.strategy.barrier("prediction_merged")


def _own_examples(
    outputs: Sequence[dict[str, Tensor]],
    indices: Sequence[Sequence[int]],
    tasks: Sequence[str],
    offsets: list[int],
) -> Predictions:
    """Each task's predictions for its own rows, with the rows' indices in the task's dataset, sorted."""
    found: dict[str, tuple[list[Tensor], list[Tensor]]] = {t: ([], []) for t in tasks}
    for output, rows in zip(outputs, indices, strict=True):
        rows = torch.as_tensor(list(rows), dtype=torch.long)
        task_of_row = torch.bucketize(rows, torch.tensor(offsets[1:], dtype=torch.long), right=True)
        for k, task in enumerate(tasks):
            mine = task_of_row == k
            if bool(mine.any()):
                found[task][0].append(rows[mine] - offsets[k])
                found[task][1].append(output[task][mine].detach().cpu())
    return {t: _sorted(torch.cat(i), _cat(p)) for t, (i, p) in found.items() if i}


def _cat(parts: Sequence[Tensor]) -> Tensor:
    """Concatenate along the examples; per-token parts of different lengths are first padded to the
    longest (NaN for floating point, ``-100`` for integers, as missing labels are)."""
    if len({p.shape[1:] for p in parts}) > 1:
        longest = max(p.shape[1] for p in parts)
        fill = float("nan") if parts[0].is_floating_point() else -100
        parts = [
            torch.cat([p, p.new_full((p.shape[0], longest - p.shape[1], *p.shape[2:]), fill)], dim=1)
            for p in parts
        ]
    return torch.cat(list(parts))


def _sorted(index: Tensor, prediction: Tensor) -> dict[str, Tensor]:
    order = torch.argsort(index)
    return {"index": index[order], "prediction": prediction[order]}


def _merge(parts: Sequence[Predictions]) -> Predictions:
    """The ranks' parts as one, in example order."""
    tasks = list(dict.fromkeys(t for part in parts for t in part))
    return {
        t: _sorted(
            torch.cat([p[t]["index"] for p in parts if t in p]),
            _cat([p[t]["prediction"] for p in parts if t in p]),
        )
        for t in tasks
    }


def _write(directory: Path, predictions: Predictions) -> None:
    _save_atomic(predictions, directory / "predictions.pt")
    for task, found in predictions.items():
        values = found["prediction"]
        if values.dim() > 2:
            continue
        columns = ["prediction"] if values.dim() == 1 else [f"prediction_{k}" for k in range(values.shape[1])]
        rows = values.reshape(len(values), -1).tolist()
        path = directory / f"{task}.csv"
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["index", *columns])
            for index, row in zip(found["index"].tolist(), rows, strict=True):
                writer.writerow([index, *row])
        os.replace(tmp, path)
