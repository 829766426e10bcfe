"""`mtl predict` writes its predictions: each task's own examples, in order, equal to the checkpoint's
model applied by hand; under DDP (2 CPU ranks, gloo, torchrun) the merged files equal one process's.

The DDP test runs this file as the worker: ``torchrun --nproc-per-node 2 test_prediction_writer.py OUT``.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtl.callbacks import PredictionWriter, load_predictions
from mtl.callbacks.prediction_writer import _cat, _own_examples
from mtl.cli import main
from mtl.data import MultiTaskDataModule
from mtl.heads import BinaryHead, ClassificationHead, RegressionHead
from mtl.module import MultiTaskModule
from tests.test_cli import write_config
from tests.toy import TinyEncoder, ToySource

TIMEOUT = 240


def test_each_task_keeps_its_own_rows_in_example_order() -> None:
    # Two tasks of 3 and 2 examples (global rows 0-2 and 3-4), predicted in two batches out of order.
    outputs = [
        {"a": torch.tensor([10.0, 12.0]), "b": torch.tensor([-1.0, -2.0])},
        {"a": torch.tensor([11.0, 0.0, 0.0]), "b": torch.tensor([0.0, 7.0, 6.0])},
    ]
    found = _own_examples(outputs, [[0, 2], [1, 4, 3]], ["a", "b"], [0, 3])
    assert found["a"]["index"].tolist() == [0, 1, 2] and found["a"]["prediction"].tolist() == [10, 11, 12]
    assert found["b"]["index"].tolist() == [0, 1] and found["b"]["prediction"].tolist() == [6, 7]


def test_per_token_predictions_of_different_lengths_are_padded() -> None:
    joined = _cat([torch.ones(2, 3), torch.zeros(1, 5)])
    assert joined.shape == (3, 5) and joined[:2, 3:].isnan().all() and joined[2].eq(0).all()
    assert _cat([torch.ones(1, 2, dtype=torch.long), torch.ones(1, 1, dtype=torch.long)])[1, 1] == -100


def test_mtl_predict_writes_each_tasks_predictions(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    config = str(write_config(tmp_path, run))
    main(["fit", "--config", config, "--trainer.max_epochs", "1", "--trainer.logger", "false"])
    checkpoint = next(run.rglob("last.ckpt"))
    main(["predict", "--config", config, "--ckpt_path", str(checkpoint), "--trainer.logger", "false"])
    assert f"Predictions written to {run / 'predictions'}" in capsys.readouterr().out

    # The checkpoint's model applied by hand to each task's test examples.
    heads = {"cls": ClassificationHead(num_classes=3), "reg": RegressionHead()}
    model = MultiTaskModule(encoder=TinyEncoder(), heads=heads)
    model.load_state_dict(torch.load(checkpoint, weights_only=True)["state_dict"])
    model.eval()
    splits = ToySource(n=64, tasks=("cls", "reg")).load()
    written = load_predictions(run / "predictions" / "predictions.pt")
    assert sorted(written) == ["cls", "reg"]
    for task in ("cls", "reg"):
        inputs = splits[task].test.inputs
        with torch.no_grad():
            expected = model.heads[task].predict(model(inputs)[task])
        assert written[task]["index"].tolist() == list(range(len(inputs)))
        torch.testing.assert_close(written[task]["prediction"], expected)
        rows = list(csv.reader((run / "predictions" / f"{task}.csv").open()))
        columns = ["prediction"] if expected.dim() == 1 else [f"prediction_{k}" for k in range(3)]
        assert rows[0] == ["index", *columns] and len(rows) == 1 + len(inputs)
        assert [float(v) for v in rows[5][1:]] == pytest.approx(expected[4].reshape(-1).tolist())


def predict(devices: int, out: Path) -> None:
    """Predict the three toy tasks with a seeded untrained model (odd sizes: uneven shards, a last short
    batch per rank) into ``out``."""
    seed_everything(0)
    heads = {"cls": ClassificationHead(num_classes=3), "reg": RegressionHead(), "bin": BinaryHead()}
    model = MultiTaskModule(encoder=TinyEncoder(), heads=heads)
    trainer = Trainer(
        accelerator="cpu",
        strategy="ddp" if devices > 1 else "auto",
        devices=devices,
        use_distributed_sampler=False,
        callbacks=[PredictionWriter(out)],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    data = MultiTaskDataModule(ToySource(n=64, val_n=23), batch_size=8, eval_batch_size=5)
    trainer.predict(model, datamodule=data, return_predictions=False)


def test_two_ranks_write_what_one_process_writes(tmp_path: Path) -> None:
    from tests.distributed.test_ddp import env, free_port

    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(free_port()), __file__, str(tmp_path / "ddp"),
    ]  # fmt: skip
    done = subprocess.run(cmd, env=env(), timeout=TIMEOUT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    predict(devices=1, out=tmp_path / "single")
    both, single = (load_predictions(tmp_path / d / "predictions.pt") for d in ("ddp", "single"))
    assert sorted(both) == sorted(single) == ["bin", "cls", "reg"]
    for task in single:
        assert both[task]["index"].tolist() == list(range(23))
        assert torch.equal(both[task]["index"], single[task]["index"])
        torch.testing.assert_close(both[task]["prediction"], single[task]["prediction"])
    assert not (tmp_path / "ddp" / "parts").exists()  # the ranks' parts are merged and removed


if __name__ == "__main__":
    predict(devices=2, out=Path(sys.argv[1]))
