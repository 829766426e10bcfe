"""Distributed guarantees on CPU with gloo: 2 ranks under torchrun, and 2 "nodes" x 1 process.

Each scenario runs tests/distributed/worker.py in fresh processes (the real launcher, no mocking)
with a timeout, so a hang fails the test instead of stalling the suite.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer

from mtl.data import MultiTaskDataModule
from tests.distributed import worker
from tests.toy import ToySource

WORKER = Path(worker.__file__)
ROOT = WORKER.parents[2]
TIMEOUT = 240


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def torchrun(out: Path, scenario: str, *options: str, nproc: int = 2) -> list[dict]:
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
        "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
        str(WORKER), scenario, str(out), *options,
    ]  # fmt: skip
    done = subprocess.run(cmd, env=env(), timeout=TIMEOUT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(nproc)]


def single_process(
    batch_size: int, layout: str = "homogeneous", validate: bool = False, balancer: str = "none", **source
) -> dict:
    """The same model and data on one process (the worker's `build`), for comparison."""
    args = worker.argparse.Namespace(**{"n": 96, "sizes": None, "val_n": None, **source})
    args.batch_size, args.layout, args.balancer = batch_size, layout, balancer
    module, data = worker.build(args)
    trainer = Trainer(
        accelerator="cpu", devices=1, max_epochs=2, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    if validate:
        return trainer.validate(module, datamodule=data, verbose=False)[0]
    trainer.fit(module, datamodule=data)
    return module.state_dict()


def assert_close_weights(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0, msg=key)


@pytest.mark.parametrize("layout", ["homogeneous", "all_tasks"])
def test_two_ranks_agree_and_equal_one_rank_on_the_global_batch(tmp_path, layout):
    ranks = torchrun(tmp_path, "fit", "--layout", layout, "--batch_size", "8")
    assert ranks[0]["world_size"] == 2
    assert ranks[0]["steps"] == ranks[1]["steps"]  # same tasks, same row counts, every step
    if layout == "homogeneous":
        assert all(len(step) == 1 for step in ranks[0]["steps"])
    assert_close_weights(ranks[0]["state_dict"], ranks[1]["state_dict"], atol=0)
    assert_close_weights(ranks[0]["state_dict"], single_process(batch_size=16, layout=layout), atol=1e-5)
    # a homogeneous step leaves two heads without gradient; an all-tasks step uses every head
    assert ranks[0]["find_unused_parameters"] is (layout == "homogeneous")


@pytest.mark.parametrize("balancer", ["pcgrad", "mgda", "imtlg-representation"])
def test_gradient_balancing_on_two_ranks_equals_one_rank(tmp_path, balancer):
    # imtlg-representation: the representation gradients are gathered across ranks, not averaged.
    ranks = torchrun(tmp_path, "fit", "--layout", "all_tasks", "--batch_size", "8", "--balancer", balancer)
    assert_close_weights(ranks[0]["state_dict"], ranks[1]["state_dict"], atol=0)
    alone = single_process(batch_size=16, layout="all_tasks", balancer=balancer)
    assert_close_weights(ranks[0]["state_dict"], alone, atol=1e-5)


def test_a_loss_weighting_keeps_the_same_state_on_every_rank(tmp_path):
    # FAMO updates its logits outside of gradients, from losses averaged across ranks.
    ranks = torchrun(tmp_path, "fit", "--layout", "all_tasks", "--batch_size", "8", "--balancer", "famo")
    assert_close_weights(ranks[0]["state_dict"], ranks[1]["state_dict"], atol=0)
    assert ranks[0]["state_dict"]["weighting.logits"].abs().sum() > 0


def test_uneven_tasks_finish_without_hang(tmp_path):
    ranks = torchrun(tmp_path, "fit", "--sizes", "301", "9", "40", "--batch_size", "4", "--epochs", "1")
    assert len(ranks[0]["steps"]) == len(ranks[1]["steps"]) == 38 + 2 + 5  # ceil(n_t / (2 x 4))


def test_validation_on_two_ranks_equals_one_process_on_an_odd_set(tmp_path):
    ranks = torchrun(tmp_path, "validate", "--val_n", "37")
    alone = single_process(batch_size=8, validate=True, val_n=37)
    for key in (
        "val/cls/accuracy",
        "val/cls/f1_macro",
        "val/reg/mse",
        "val/reg/r2",
        "val/bin/auroc",
        "val/mean",
    ):
        for rank in ranks:
            assert rank["metrics"][key] == pytest.approx(alone[key], abs=1e-6), key


def test_two_nodes_one_process_each(tmp_path):
    port = str(free_port())
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--nproc-per-node",
                "1",
                "--node-rank",
                str(node),
                "--master-addr",
                "127.0.0.1",
                "--master-port",
                port,
                str(WORKER),
                "fit",
                str(tmp_path),
                "--num_nodes",
                "2",
                "--devices",
                "1",
                "--batch_size",
                "8",
            ],
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for node in (0, 1)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0, err[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["world_size"] == 2
    assert ranks[0]["steps"] == ranks[1]["steps"]
    assert_close_weights(ranks[0]["state_dict"], ranks[1]["state_dict"], atol=0)
    assert_close_weights(ranks[0]["state_dict"], single_process(batch_size=16), atol=1e-5)


def test_lightning_distributed_sampler_is_refused_with_a_clear_error(monkeypatch):
    trainer = Trainer(accelerator="cpu", devices=1, logger=False)
    data = MultiTaskDataModule(ToySource(n=16), batch_size=4)
    data.trainer = trainer
    monkeypatch.setattr(Trainer, "world_size", property(lambda self: 2))  # as seen on 2 ranks
    with pytest.raises(RuntimeError, match="use_distributed_sampler=False"):
        data._world()
