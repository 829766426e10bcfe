"""The affinity-callback contract: every method on a tiny joint training run, files, checks, state."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything

from mtl.data import MultiTaskDataModule
from mtl.grouping import (
    AffinityCallback,
    DataMapAffinity,
    GradientCosineAffinity,
    TAGAffinity,
    load_affinity,
)
from mtl.heads import BinaryHead, ClassificationHead, RegressionHead
from mtl.module import MultiTaskModule
from tests.toy import TinyEncoder, ToySource

TASKS = ["cls", "reg", "bin"]


def toy_module(optimizer: Callable = lambda p: torch.optim.SGD(p, lr=0.1), **kwargs) -> MultiTaskModule:
    heads = {"cls": ClassificationHead(num_classes=3), "reg": RegressionHead(), "bin": BinaryHead()}
    return MultiTaskModule(encoder=TinyEncoder(), heads=heads, optimizer=optimizer, **kwargs)


def fit(
    callback: AffinityCallback | None,
    module: MultiTaskModule | None = None,
    layout: str = "all_tasks",
    source: ToySource | None = None,
    root: Path | None = None,
    epochs: int = 2,
) -> Trainer:
    """Train the toy model for ``epochs`` with ``callback`` attached (64 examples a task, batches of 16,
    so 4 steps an epoch)."""
    seed_everything(0)
    data = MultiTaskDataModule(source or ToySource(n=64), batch_size=16, layout=layout)
    # Without `root`, what the callback writes at fit end goes to a scratch folder, not the cwd.
    with tempfile.TemporaryDirectory() as scratch:
        trainer = Trainer(
            max_epochs=epochs,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            accelerator="cpu",
            devices=1,
            callbacks=[] if callback is None else [callback],
            default_root_dir=root or scratch,
            limit_val_batches=0,
        )
        trainer.fit(module or toy_module(), datamodule=data)
    return trainer


CALLBACKS: dict[str, Callable[[Path], AffinityCallback]] = {
    "tag": lambda d: TAGAffinity(every_n_steps=2, directory=d),
    "cosine": lambda d: GradientCosineAffinity(every_n_steps=2, directory=d),
    "datamap": lambda d: DataMapAffinity(probe_size=32, directory=d),
}


@pytest.mark.parametrize("method", sorted(CALLBACKS))
def test_every_method_measures_a_matrix_and_writes_it(method: str, tmp_path: Path) -> None:
    callback = CALLBACKS[method](tmp_path / "out")
    fit(callback)
    assert callback.method == method and callback.task_names == TASKS
    A = callback.affinity()
    assert A.shape == (3, 3) and A.dtype == torch.float64 and A.device.type == "cpu"
    assert torch.isfinite(A).all()
    # 4 steps an epoch, 2 epochs: every other step for the step methods, every epoch for data maps.
    assert callback.measurements == (2 if method == "datamap" else 4)
    names, read = load_affinity(tmp_path / "out" / "affinity.csv")
    assert names == TASKS and torch.equal(read, A)  # 17 significant digits: exact round trip
    assert (tmp_path / "out" / "affinity.png").stat().st_size > 0
    if method == "datamap":  # the data map itself travels too, for clustering after training
        restored = DataMapAffinity.from_directory(tmp_path / "out")
        assert torch.equal(restored.affinity(), A)
        assert torch.equal(restored.memberships(2), callback.memberships(2))


def test_default_directory_is_under_the_log_dir(tmp_path: Path) -> None:
    trainer = fit(GradientCosineAffinity(), root=tmp_path, epochs=1)
    assert (Path(trainer.default_root_dir) / "affinity" / "affinity.csv").exists()


@pytest.mark.parametrize("method", sorted(CALLBACKS))
@pytest.mark.parametrize("layout", ["homogeneous", "mixed"])
def test_layout_other_than_all_tasks_is_refused(method: str, layout: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"Expected `data.layout` to be `all_tasks`.*got `" + layout):
        fit(CALLBACKS[method](tmp_path), layout=layout)


def test_affinity_before_any_measurement_is_an_error() -> None:
    for callback in (TAGAffinity(), GradientCosineAffinity(), DataMapAffinity()):
        with pytest.raises(RuntimeError, match="Expected at least one"):
            callback.affinity()


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_every_n_steps_must_be_a_positive_integer(bad) -> None:
    with pytest.raises(ValueError, match="Expected `every_n_steps` to be an integer >= 1"):
        TAGAffinity(every_n_steps=bad)


def test_mean_over_measurements_and_state_round_trip() -> None:
    callback = GradientCosineAffinity()
    callback.task_names = ["a", "b"]
    callback.accumulate(torch.tensor([[1.0, 0.5], [0.5, 1.0]]), epoch=0)
    callback.accumulate(torch.tensor([[1.0, -0.1], [-0.1, 1.0]]), epoch=0)
    callback.accumulate(torch.tensor([[1.0, -0.4], [-0.4, 1.0]]), epoch=2)
    # The mean over every measurement (not over epochs): (0.5 - 0.1 - 0.4) / 3 = 0.
    expected = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert torch.allclose(callback.affinity(), expected)
    epochs, means = callback.trajectory()
    assert epochs == [0, 2]
    assert torch.allclose(means[:, 0, 1], torch.tensor([0.2, -0.4], dtype=torch.float64))
    restored = GradientCosineAffinity()
    restored.load_state_dict(callback.state_dict())
    assert restored.task_names == ["a", "b"] and restored.measurements == 3
    assert torch.equal(restored.affinity(), callback.affinity())
    assert restored.trajectory()[0] == epochs and torch.equal(restored.trajectory()[1], means)
    with pytest.raises(ValueError, match=r"Expected a measurement of shape \(2, 2\)"):
        callback.accumulate(torch.zeros(3, 3))


def test_trajectory_follows_the_epochs_of_a_run(tmp_path: Path) -> None:
    callback = TAGAffinity(every_n_steps=1, directory=tmp_path)
    fit(callback, epochs=3)  # 4 steps an epoch
    epochs, means = callback.trajectory()
    assert epochs == [0, 1, 2] and means.shape == (3, 3, 3)
    assert torch.allclose(means.mean(dim=0), callback.affinity())  # equal counts: the mean of the means
    rows = (tmp_path / "affinity_by_epoch.csv").read_text().splitlines()
    assert rows[0] == "epoch,measurements,source,target,affinity" and len(rows) == 1 + 3 * 9
    epoch, count, source, target, value = rows[1 + 9 + 1].split(",")  # epoch 1, cls -> reg
    assert (epoch, count, source, target) == ("1", "4", "cls", "reg")
    assert float(value) == float(means[1, 0, 1])
    assert (tmp_path / "affinity_over_training.png").stat().st_size > 0


def test_no_trajectory_image_for_a_single_epoch(tmp_path: Path) -> None:
    callback = GradientCosineAffinity()
    callback.task_names = ["x", "y"]
    callback.accumulate(torch.eye(2))
    paths = callback.save(tmp_path)
    assert "over_training" not in paths and not (tmp_path / "affinity_over_training.png").exists()
    assert paths["by_epoch"].read_text().splitlines()[1:3] == ["0,1,x,x,1", "0,1,x,y,0"]


def test_save_writes_a_labelled_csv(tmp_path: Path) -> None:
    callback = TAGAffinity()
    callback.task_names = ["x", "y"]
    callback.accumulate(torch.tensor([[0.0, 0.25], [-0.5, 0.125]]))
    paths = callback.save(tmp_path)
    lines = paths["csv"].read_text().splitlines()
    assert lines == ["task,x,y", "x,0,0.25", "y,-0.5,0.125"]
    assert paths["png"] == tmp_path / "affinity.png" and paths["png"].exists()


def test_load_affinity_rejects_other_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("name,a,b\na,1,2\nb,3,4\n")
    with pytest.raises(ValueError, match="header starts with `task`"):
        load_affinity(bad)
    bad.write_text("task,a,b\nb,1,2\na,3,4\n")
    with pytest.raises(ValueError, match="square matrix labelled by the same tasks"):
        load_affinity(bad)
