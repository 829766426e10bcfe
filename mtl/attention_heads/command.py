"""``mtl heads``: per-task attention-head importance and a pruning curve for a trained checkpoint.

    mtl heads --config BASE.yaml [--config OVERLAY.yaml ...] --ckpt_path CKPT [--batches N]
              [--prune-steps K] [--prune-per-step X] [--prune-by mean|all|TASK ...] [--recompute]
              [--out DIR] [--key value ...]

Builds the model and the data from the configs exactly as ``mtl fit`` does (further ``--key value``
flags override them, e.g. ``--data.source.init_args.max_eval_examples 200``), loads the checkpoint's
weights (``torch.load(..., weights_only=True)``), then writes to ``DIR``:

* ``importance/{task}.csv|png``: the task's head importance (Michel et al., NeurIPS 2019), layers x
  heads, estimated on ``N`` batches of the task's training examples; ``{task}_layer_normalized.csv``:
  the same with each layer scaled to unit L2 norm (what the ranking uses by default);
* ``pruning_curve.csv|png``: every task's validation metric as the least important heads are switched
  off, a share at a time, without retraining; one curve per ranking (``--prune-by``);
* ``summary.json``: the settings, the timings and the full pruning order of each ranking.

Runs in one process, on ``--device`` (default: CUDA when available). The figures are also logged to
the config's W&B / TensorBoard loggers unless ``--no-log``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mtl.attention_heads.batches import task_batches
from mtl.attention_heads.evaluation import evaluate_tasks
from mtl.attention_heads.importance import head_importance, maskable_encoder, normalize_by_layer
from mtl.attention_heads.outputs import write_curve, write_importance
from mtl.attention_heads.pruning import PruningStep, prune_curve, pruning_schedule
from mtl.attention_heads.ranking import MEAN

__all__ = ["build_parser", "main"]


def _per_step(text: str) -> float | int:
    """``"4"`` -> 4 heads per step; ``"0.1"`` -> 10 % of the heads per step."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"Expected --prune-per-step to be a count (e.g. 4) or a fraction (e.g. 0.1), but got {text!r}."
        ) from None


def build_parser() -> argparse.ArgumentParser:
    """The ``mtl heads`` options; unknown ``--key value`` pairs go to the config parser."""
    parser = argparse.ArgumentParser(
        prog="mtl heads", description=__doc__.split("\n\n")[0], allow_abbrev=False
    )
    parser.add_argument("--config", action="append", required=True, help="config file (repeatable)")
    parser.add_argument("--ckpt_path", "--ckpt-path", required=True, help="checkpoint of the trained model")
    parser.add_argument("--out", default="runs/heads", help="output directory (default: runs/heads)")
    parser.add_argument("--batches", type=int, default=8, help="batches per task for importance (default 8)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the data's eval_batch_size")
    parser.add_argument(
        "--importance-split", choices=("train", "val", "test"), default="train", help="data of the importance"
    )
    parser.add_argument("--per-batch", action="store_true", help="|batch gradient| instead of per example")
    parser.add_argument("--prune-steps", type=int, default=10, help="pruning steps; 0 for importance only")
    parser.add_argument(
        "--prune-per-step", type=_per_step, default=None, help="fraction (0.1) or count (4); default 1/steps"
    )
    parser.add_argument(
        "--prune-by",
        nargs="+",
        default=[MEAN],
        help="rankings: 'mean' over tasks, task names, or 'all' (mean and every task); default mean",
    )
    parser.add_argument("--recompute", action="store_true", help="recompute importance before every step")
    parser.add_argument("--no-normalize", action="store_true", help="rank without per-layer l2 normalisation")
    parser.add_argument("--min-heads-per-layer", type=int, default=0, help="never prune a layer below this")
    parser.add_argument("--seed", type=int, default=0, help="seed of the importance sample")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--no-log", action="store_true", help="do not log figures to the config's loggers")
    return parser


def _build(configs: Sequence[str], overrides: Sequence[str]) -> tuple[Any, Any, list[Any]]:
    """Model, data module and loggers from the configs, as ``mtl fit`` builds them."""
    from mtl.cli import build_cli

    cli = build_cli([*(item for c in configs for item in ("--config", c)), *overrides], log_config=False)
    return cli.model, cli.datamodule, list(cli.trainer.loggers)


def _rankings(requested: Sequence[str], tasks: Sequence[str]) -> list[str]:
    rankings = [MEAN, *tasks] if "all" in requested else list(dict.fromkeys(requested))
    unknown = [r for r in rankings if r != MEAN and r not in tasks]
    if unknown:
        raise SystemExit(
            f"Expected --prune-by to name 'mean', 'all' or tasks of the model {list(tasks)}, but got {unknown}."
        )
    return rankings


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``mtl heads`` (dispatched from `mtl.cli.main`)."""
    args, overrides = build_parser().parse_known_args(argv)
    if args.batches < 1 or args.prune_steps < 0 or args.min_heads_per_layer < 0:
        raise SystemExit(
            "Expected --batches >= 1, --prune-steps >= 0 and --min-heads-per-layer >= 0, but got "
            f"{args.batches}, {args.prune_steps} and {args.min_heads_per_layer}."
        )
    model, datamodule, loggers = _build(args.config, overrides)
    encoder = maskable_encoder(model)
    checkpoint = torch.load(args.ckpt_path, map_location="cpu", weights_only=True)
    model.load_state_dict(checkpoint["state_dict"])
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device)
    datamodule.setup("validate")
    loggers = [] if args.no_log else loggers
    out = Path(args.out)
    tasks = list(model.heads)
    rankings = _rankings(args.prune_by, tasks)
    layers, heads = encoder.attention_shape

    samples = {
        task: task_batches(datamodule, task, args.importance_split, args.batch_size, args.batches, args.seed)
        for task in tasks
    }

    def importance() -> dict[str, torch.Tensor]:
        return head_importance(
            model, itertools.chain(*samples.values()), tasks, per_example=not args.per_batch
        )

    started = time.perf_counter()
    scores = importance()
    importance_seconds = time.perf_counter() - started
    for task, matrix in scores.items():
        write_importance(matrix, out / "importance", task, f"head importance: {task}", loggers)
        write_importance(
            normalize_by_layer(matrix),
            out / "importance",
            f"{task}_layer_normalized",
            f"head importance: {task} (each layer l2-normalised)",
            plot=False,
        )

    curves: dict[str, list[PruningStep]] = {}
    evaluated: dict[tuple[float, ...], dict[str, float]] = {}
    started = time.perf_counter()
    if args.prune_steps > 0:
        schedule = pruning_schedule(layers * heads, args.prune_steps, args.prune_per_step)
        validation = datamodule.val_dataloader()

        def evaluate() -> dict[str, float]:
            # Rankings share their first and last points (nothing or everything pruned): evaluate once.
            mask = encoder.head_mask
            key = () if mask is None else tuple(mask.flatten().tolist())
            if key not in evaluated:
                evaluated[key] = evaluate_tasks(model, validation)
            return evaluated[key]

        for ranking in rankings:
            curves[ranking] = prune_curve(
                model,
                # The up-front scores serve every ranking; only --recompute needs fresh ones.
                importance if args.recompute else lambda: scores,
                evaluate,
                schedule,
                by=ranking,
                normalize=not args.no_normalize,
                recompute=args.recompute,
                min_heads_per_layer=args.min_heads_per_layer,
            )
        metric_names = {task: head.primary_metric for task, head in model.heads.items()}
        write_curve(curves, metric_names, out, loggers)
    pruning_seconds = time.perf_counter() - started

    summary = {
        "checkpoint": str(args.ckpt_path),
        "configs": list(args.config),
        "overrides": list(overrides),
        "layers": layers,
        "heads_per_layer": heads,
        "tasks": tasks,
        "importance_examples_per_task": {t: sum(len(b["targets"][t]) for b in samples[t]) for t in tasks},
        "settings": {k: v for k, v in vars(args).items() if k not in ("config", "ckpt_path", "out")},
        "device": str(device),
        "importance_seconds": round(importance_seconds, 2),
        "pruning_seconds": round(pruning_seconds, 2),
        "pruning_evaluations": len(evaluated),
        "pruning_order": {r: [list(p) for s in c for p in s.newly_pruned] for r, c in curves.items()},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    _print_summary(scores, curves, importance_seconds, pruning_seconds, out)


def _print_summary(
    scores: dict[str, torch.Tensor],
    curves: dict[str, list[PruningStep]],
    importance_seconds: float,
    pruning_seconds: float,
    out: Path,
) -> None:
    print(f"head importance ({importance_seconds:.1f} s): share of each task's total importance per layer")
    for task, matrix in scores.items():
        shares = matrix.sum(1) / matrix.sum().clamp_min(1e-20)
        print(f"  {task:<20}" + " ".join(f"L{i}:{100 * s:4.1f}%" for i, s in enumerate(shares.tolist())))
    for ranking, steps in curves.items():
        print(f"pruning by {ranking} ({pruning_seconds:.1f} s for all rankings):")
        for point in steps:
            values = " ".join(f"{task}={value:.4f}" for task, value in point.metrics.items())
            print(f"  {100 * point.share_pruned:5.1f}% pruned  {values}")
    print(f"written to {out}")
