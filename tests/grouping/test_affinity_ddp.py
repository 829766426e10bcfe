"""Affinity under DDP (2 CPU ranks, gloo, torchrun): every rank holds the same matrix, and it equals the
single-process matrix on the global batch (per-task gradients and losses are averaged across ranks).

The test runs this file as the worker: ``torchrun --nproc-per-node 2 test_affinity_ddp.py OUT_DIR``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from lightning.pytorch import Trainer, seed_everything

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mtl.data import MultiTaskDataModule
from mtl.grouping import DataMapAffinity, GradientCosineAffinity, TAGAffinity
from mtl.heads import BinaryHead, ClassificationHead, RegressionHead
from mtl.module import MultiTaskModule
from tests.toy import TinyEncoder, ToySource

TIMEOUT = 240


def run(devices: int, batch_size: int, out: Path) -> dict[str, torch.Tensor]:
    """Fit the toy model for 2 epochs with the three affinity callbacks; their matrices by method."""
    seed_everything(0)
    heads = {"cls": ClassificationHead(num_classes=3), "reg": RegressionHead(), "bin": BinaryHead()}
    module = MultiTaskModule(
        encoder=TinyEncoder(), heads=heads, optimizer=lambda p: torch.optim.Adam(p, lr=0.01)
    )
    callbacks = [
        TAGAffinity(directory=out / "tag"),
        GradientCosineAffinity(every_n_steps=2, directory=out / "cosine"),
        DataMapAffinity(probe_size=32, directory=out / "datamap"),
    ]
    trainer = Trainer(
        accelerator="cpu",
        strategy="ddp" if devices > 1 else "auto",
        devices=devices,
        max_epochs=2,
        use_distributed_sampler=False,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    data = MultiTaskDataModule(ToySource(n=96), batch_size=batch_size, layout="all_tasks")
    trainer.fit(module, datamodule=data)
    return {c.method: c.affinity() for c in callbacks}


def test_ranks_agree_and_equal_one_process(tmp_path: Path) -> None:
    from tests.distributed.test_ddp import env, free_port

    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(free_port()), __file__, str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(cmd, env=env(), timeout=TIMEOUT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    single = run(devices=1, batch_size=16, out=tmp_path / "single")
    for method, matrix in single.items():
        assert torch.equal(ranks[0][method], ranks[1][method]), method
        torch.testing.assert_close(ranks[0][method], matrix, atol=1e-4, rtol=0, msg=method)
        assert (tmp_path / method / "affinity.csv").exists()  # written once, by rank 0


if __name__ == "__main__":
    out = Path(sys.argv[1])
    matrices = run(devices=2, batch_size=8, out=out)
    rank = torch.distributed.get_rank()
    torch.save(matrices, out / f"rank{rank}.pt")
