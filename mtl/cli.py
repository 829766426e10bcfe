"""The ``mtl`` command: ``mtl fit | validate | test | predict --config FILE [--config OVERLAY ...]``.

``mtl group``, ``mtl ablate`` and ``mtl report`` are dispatched to their own modules (`COMMANDS`).

A thin `LightningCLI` over `MultiTaskModule` and `MultiTaskDataModule`: encoders, necks, heads and
data sources are chosen with ``class_path`` / ``init_args``; later ``--config`` files override earlier
ones. Additions: ``--test_after_fit true`` tests the best checkpoint when ``fit`` ends (and prints
the per-task test metrics), the resolved config is logged to every logger as hyper-parameters, and
``predict`` writes its predictions to files (`mtl.callbacks.PredictionWriter`, under
``{trainer.default_root_dir}/predictions`` unless the config adds a prediction writer itself).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from mtl.callbacks.prediction_writer import PredictionWriter
from mtl.data.datamodule import MultiTaskDataModule
from mtl.module import MultiTaskModule

__all__ = ["COMMANDS", "LogConfigCallback", "MultiTaskCLI", "build_cli", "main", "write_json_atomic"]


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    if isinstance(tree, list | tuple):
        return {prefix[:-1]: str(tree)}
    return {prefix[:-1]: tree}


class LogConfigCallback(SaveConfigCallback):
    """Saves ``config.yaml`` to the log directory and logs the flattened config to every logger."""

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        flat = _flatten(json.loads(self.parser.dump(self.config, skip_none=False, format="json")))
        for logger in trainer.loggers:
            logger.log_hyperparams(flat)


class MultiTaskCLI(LightningCLI):
    """LightningCLI for mtl; see the module docstring."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # MultiTaskDataModule shards every task by rank itself (the same task on every rank at a step).
        parser.set_defaults({"trainer.use_distributed_sampler": False})
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=False,
            help="After `fit`, run `test` on the best checkpoint (by the checkpoint callback's monitor).",
        )
        parser.add_argument(
            "--results_file",
            type=str | None,
            default=None,
            help="With --test_after_fit: write the test metrics (and the best validation score) to this JSON "
            "file, atomically, once the run has finished: {metrics: {name: value}, higher_is_better: {name: "
            "bool}} (read by `mtl ablate`, `mtl group`, `mtl report`).",
        )

    def before_predict(self) -> None:
        # `predict` returns the predictions to Python only; on the command line they go to files.
        if not any(isinstance(cb, BasePredictionWriter) for cb in self.trainer.callbacks):
            self.trainer.callbacks.append(PredictionWriter())

    def after_predict(self) -> None:
        writers = [cb for cb in self.trainer.callbacks if isinstance(cb, PredictionWriter)]
        if self.trainer.is_global_zero:
            for writer in writers:
                print(f"Predictions written to {writer.output_directory(self.trainer)}")

    def after_fit(self) -> None:
        if not self.config.fit.get("test_after_fit"):
            return
        checkpoints = [cb for cb in self.trainer.callbacks if isinstance(cb, ModelCheckpoint)]
        has_best = any(cb.best_model_path for cb in checkpoints)
        results = self.trainer.test(
            self.model, datamodule=self.datamodule, ckpt_path="best" if has_best else None
        )
        path = self.config.fit.get("results_file")
        if path and self.trainer.is_global_zero:
            metrics = {k: float(v) for k, v in results[0].items()} if results else {}
            directions = self.model.metric_directions()
            best = next((cb for cb in checkpoints if cb.best_model_score is not None), None)
            if best is not None:
                metrics[f"best/{best.monitor}"] = float(best.best_model_score)
                directions[f"best/{best.monitor}"] = best.mode == "max"
            payload = {
                "metrics": metrics,
                "higher_is_better": {k: v for k, v in directions.items() if k in metrics},
            }
            write_json_atomic(Path(path), payload)


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write ``payload`` as JSON to ``path`` via a temporary file and a rename (never a torn file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    os.replace(tmp, path)


#: Commands beyond Lightning's subcommands: name -> module whose ``main(args)`` runs it (imported lazily).
COMMANDS = {
    "group": "mtl.grouping.command",
    "ablate": "mtl.ablation.command",
    "report": "mtl.report.command",
    "heads": "mtl.attention_heads.command",
}


def build_cli(args: Sequence[str], *, log_config: bool = True, run: bool = False) -> MultiTaskCLI:
    """The ``mtl`` CLI on ``args``: with ``run`` it runs the subcommand (``fit --config ...``); without, it
    only builds the trainer, model and data module of ``--config ...`` for a command that drives them
    itself (``mtl group``'s affinity run, ``mtl heads``). ``log_config``: save ``config.yaml`` and log
    the config to the loggers, as ``mtl fit`` does."""
    with warnings.catch_warnings():
        # LightningCLI warns when `args` differs from the process's command line (`mtl group ...`): intended.
        warnings.filterwarnings("ignore", message=".*args parameter")
        return MultiTaskCLI(
            MultiTaskModule,
            MultiTaskDataModule,
            save_config_callback=LogConfigCallback if log_config else None,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
            args=list(args),
            run=run,
        )


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``mtl`` console script.

    The command's W&B run is finished when it returns or fails (Lightning leaves it open for a later
    `test`): a run is then complete on the dashboard, and a later command in the same process (a
    notebook, a test, a forked run, which skips ``atexit``) starts its own run instead of logging into
    this one.
    """
    argv = sys.argv[1:] if args is None else list(args)
    try:
        if argv and argv[0] in COMMANDS:
            importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])
        else:
            build_cli(argv, run=True)
    finally:
        wandb = sys.modules.get("wandb")
        if wandb is not None and getattr(wandb, "run", None) is not None:
            wandb.finish()


if __name__ == "__main__":
    main(sys.argv[1:])
