"""The importance sample's batches, and the CSV / PNG files written for importance and pruning curves."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from mtl.attention_heads import PruningStep, task_batches
from mtl.attention_heads.outputs import CURVE_COLUMNS, write_curve, write_importance
from mtl.data.datamodule import MultiTaskDataModule
from tests.attention_heads.builders import TokenSource


def _datamodule() -> MultiTaskDataModule:
    datamodule = MultiTaskDataModule(TokenSource(n=40), batch_size=8, eval_batch_size=6)
    datamodule.setup()
    return datamodule


def test_task_batches_are_a_fixed_seeded_sample_of_one_task() -> None:
    datamodule = _datamodule()
    loader = task_batches(datamodule, "last", "train", batch_size=7, max_batches=3, seed=1)
    batches = list(loader)
    assert [len(b["targets"]["last"]) for b in batches] == [7, 7, 7]
    assert all(list(b["targets"]) == ["last"] for b in batches)
    again = list(loader)
    assert all(
        torch.equal(a["inputs"]["input_ids"], b["inputs"]["input_ids"])
        for a, b in zip(batches, again, strict=True)
    )
    dataset = datamodule.datasets("train")["last"]
    order = torch.randperm(40, generator=torch.Generator().manual_seed(1))[:21].tolist()
    assert torch.equal(torch.cat([b["targets"]["last"] for b in batches]), dataset.targets[order])
    # Without a cap: every example once, in batches of the data module's evaluation batch size (6).
    whole = list(task_batches(datamodule, "first", "val"))
    assert [len(b["targets"]["first"]) for b in whole] == [6, 6, 6, 2]


def test_task_batches_errors() -> None:
    datamodule = _datamodule()
    with pytest.raises(
        ValueError, match=r"Expected `task` to be one of the tasks with a train split, \['first', 'last'\]"
    ):
        task_batches(datamodule, "nope")
    with pytest.raises(ValueError, match="Expected `batch_size` and `max_batches` to be at least 1"):
        task_batches(datamodule, "first", max_batches=0)


def test_write_importance(tmp_path: Path) -> None:
    matrix = torch.tensor([[0.5, 0.25, 1.0], [2.0, 0.0, 3.5]])
    csv_path, png_path = write_importance(matrix, tmp_path / "imp", "first", "head importance: first")
    rows = list(csv.reader(csv_path.open()))
    assert rows[0] == ["layer", "head_0", "head_1", "head_2"]
    assert [[float(v) for v in row] for row in rows[1:]] == [[0, 0.5, 0.25, 1.0], [1, 2.0, 0.0, 3.5]]
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_write_curve(tmp_path: Path) -> None:
    curve = [
        PruningStep(0, 0, 0.0, (), {"first": 0.9, "last": 0.5}),
        PruningStep(1, 2, 0.5, ((1, 0), (0, 1)), {"first": 0.8, "last": 0.25}),
    ]
    csv_path, png_path = write_curve(
        {"mean": curve, "first": curve}, {"first": "accuracy", "last": "mse"}, tmp_path
    )
    rows = list(csv.DictReader(csv_path.open()))
    assert tuple(rows[0]) == CURVE_COLUMNS and len(rows) == 2 * 2 * 2
    assert rows[2] == {
        "ranking": "mean",
        "step": "1",
        "heads_pruned": "2",
        "share_pruned": "0.5",
        "task": "first",
        "metric": "accuracy",
        "value": "0.8",
        "newly_pruned": "1:0 0:1",
    }
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
