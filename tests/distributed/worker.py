"""Run under torchrun by tests/distributed/test_ddp.py: one scenario, per-rank results to a file.

    torchrun --nproc-per-node 2 tests/distributed/worker.py SCENARIO OUT_DIR [options]

Each rank writes ``OUT_DIR/rank{r}.pt`` (loaded with weights_only=True): the tasks of every
training step, the final weights, the validation metrics and the DDP settings it ran with, and with
``--diagnostics`` what `ExpertDiagnostics` computed at the last validation.

Options choose the parts (``--neck``, ``--balancer``, the data layout); `run` is also what the tests
call in-process for the one-rank reference (``strategy="auto"``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from lightning.pytorch import Callback, Trainer, seed_everything

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mtl.balancing import IMTLG, MGDA, PCGrad
from mtl.callbacks import ExpertDiagnostics
from mtl.data import MultiTaskDataModule
from mtl.heads import BinaryHead, ClassificationHead, RegressionHead
from mtl.module import MultiTaskModule
from mtl.necks import MMoE, TaskSparseMoE
from mtl.weighting import FAMO
from tests.toy import TinyEncoder, ToySource


class Record(Callback):
    """Remembers the tasks (and row counts) of every training batch on this rank."""

    def __init__(self) -> None:
        self.steps: list[list[tuple[str, int]]] = []
        self.find_unused_parameters: bool | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        self.find_unused_parameters = getattr(trainer.strategy.model, "find_unused_parameters", None)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.steps.append(sorted((t, len(y)) for t, y in batch["targets"].items()))


BALANCERS = {
    "none": lambda: None,
    "pcgrad": PCGrad,
    "mgda": MGDA,
    "imtlg-representation": IMTLG,
    "famo": FAMO,
}
BALANCE_ON = {"imtlg-representation": "representation"}  # default: "shared"
# The sparse neck routes without noise: noise is drawn per rank, so it would differ from one rank's.
NECKS = {
    "none": lambda: None,
    "mmoe": lambda: MMoE(num_experts=3, expert_hidden=[8]),
    "sparse": lambda: TaskSparseMoE(
        num_experts=4,
        k=2,
        expert_hidden=[8],
        noisy=False,
        load_balance_weight=0.1,
        z_loss_weight=0.01,
        mutual_information_weight=0.1,
    ),
}


def build(args: argparse.Namespace) -> tuple[MultiTaskModule, MultiTaskDataModule]:
    seed_everything(0)
    heads = {"cls": ClassificationHead(num_classes=3), "reg": RegressionHead(), "bin": BinaryHead()}
    module = MultiTaskModule(
        encoder=TinyEncoder(),
        heads=heads,
        neck=NECKS[getattr(args, "neck", "none")](),
        optimizer=lambda p: torch.optim.Adam(p, lr=0.01),
        balancer=BALANCERS[args.balancer](),
        balance_on=BALANCE_ON.get(args.balancer, "shared"),
    )
    source = ToySource(n=args.n, sizes=args.sizes, val_n=args.val_n)
    return module, MultiTaskDataModule(
        source, batch_size=args.batch_size, layout=args.layout, eval_batch_size=5
    )


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=["fit", "validate"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--layout", default="homogeneous")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--n", type=int, default=96)
    parser.add_argument("--sizes", type=int, nargs="*", default=None)
    parser.add_argument("--val_n", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--num_nodes", type=int, default=1)
    parser.add_argument("--balancer", choices=sorted(BALANCERS), default="none")
    parser.add_argument("--neck", choices=sorted(NECKS), default="none")
    parser.add_argument("--diagnostics", action="store_true", help="attach ExpertDiagnostics")
    parser.add_argument("--devices", type=int, default=int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return parser.parse_args(argv)


def run(args: argparse.Namespace, strategy: str = "ddp") -> dict:
    """Run the scenario; what this rank saw and ended with (see the module docstring)."""
    module, data = build(args)
    record = Record()
    diagnostics = ExpertDiagnostics(save_images=False) if args.diagnostics else None
    trainer = Trainer(
        accelerator="cpu",
        strategy=strategy,
        devices=args.devices,
        num_nodes=args.num_nodes,
        max_epochs=args.epochs,
        use_distributed_sampler=False,
        callbacks=[record] + ([diagnostics] if diagnostics is not None else []),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    metrics = (
        trainer.validate(module, datamodule=data, verbose=False)[0] if args.scenario == "validate" else {}
    )
    if args.scenario == "fit":
        trainer.fit(module, datamodule=data)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    result = {
        "steps": record.steps,
        "state_dict": {k: v.detach().clone() for k, v in module.state_dict().items()},
        "metrics": metrics,
        "find_unused_parameters": record.find_unused_parameters,
        "world_size": trainer.world_size,
        "global_rank": trainer.global_rank,
    }
    if diagnostics is not None and diagnostics.utilisation is not None:
        result["diagnostics"] = {
            "tasks": diagnostics.utilisation[0],
            "utilisation": diagnostics.utilisation[1],
            "gate_entropy": diagnostics.gate_entropy,
            "zero_shares": diagnostics.zero_shares,
        }
    return result


def main() -> None:
    args = parse()
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(result, args.out / f"rank{result['global_rank']}.pt")


if __name__ == "__main__":
    main()
