"""Reading a finished run: the validation metrics of its best checkpoint, from the run's CSV log."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtl.grouping.training import run_name, task_metrics, weighted_run_name, with_validation

HEADER = "epoch,step,train/loss_step,val/mean,val/a/accuracy,val/a/loss,test/a/accuracy\n"


def results(best: float) -> dict:
    return {
        "metrics": {"best/val/mean": best, "test/a/accuracy": 0.7, "test/a/loss": 0.6},
        "higher_is_better": {"best/val/mean": True, "test/a/accuracy": True, "test/a/loss": False},
    }


def log(run: Path, version: int, rows: list[str]) -> None:
    path = run / "csv" / f"version_{version}" / "metrics.csv"
    path.parent.mkdir(parents=True)
    path.write_text(HEADER + "".join(rows))


def test_the_row_of_the_best_monitored_value_across_resumed_versions(tmp_path: Path) -> None:
    """Epoch 0 scores 0.6, epoch 1 0.8 (best); the run resumed into version_1 (ties 0.8 in epoch 2: the
    checkpoint kept is the first, epoch 1's)."""
    log(tmp_path, 0, [",3,0.9,,,,\n", "0,3,,0.6,0.6,0.7,\n", "1,7,,0.8,0.8,0.5,\n"])
    log(tmp_path, 1, ["2,11,,0.8,0.8,0.4,\n", "2,11,,,,,0.7\n"])
    read = with_validation(tmp_path, results(0.8))
    values, directions = task_metrics(read, "a", split="val")
    assert values == {"accuracy": 0.8} and directions == {"accuracy": True}  # the loss is no quality metric
    assert read["metrics"]["val/a/loss"] == 0.5 and read["higher_is_better"]["val/a/loss"] is False
    assert read["metrics"]["test/a/accuracy"] == 0.7  # test metrics untouched


def test_runs_without_a_log_or_with_validation_metrics_are_left_as_they_are(tmp_path: Path) -> None:
    assert with_validation(tmp_path, results(0.8)) == results(0.8)  # no CSV log
    given = results(0.8)
    given["metrics"]["val/a/accuracy"] = 0.5
    assert with_validation(tmp_path, given) == given
    with pytest.raises(KeyError, match=r"Expected `val/a/<metric>` entries.*CSV logger"):
        task_metrics(results(0.8), "a", split="val")


def test_runs_are_named_by_their_tasks() -> None:
    assert run_name(["polarity"]) == "polarity" and run_name(["a", "b", "c"]) == "a+b+c"
    with pytest.raises(ValueError, match="at least one task"):
        run_name([])


def test_weighted_runs_are_named_by_their_weights() -> None:
    name = weighted_run_name({"a": 0.9, "b": 0.1})
    assert name.startswith("weighted-") and len(name) == len("weighted-") + 10
    assert weighted_run_name({"b": 0.1, "a": 0.9}) == name  # the order of the mapping does not matter
    assert weighted_run_name({"a": 0.9, "b": 0.1 + 1e-12}) == name  # 6 significant digits
    assert weighted_run_name({"a": 0.1, "b": 0.9}) != name
    assert weighted_run_name({"a": 0.9, "b": 0.1}, ["a"]) != name  # the served tasks are part of it
