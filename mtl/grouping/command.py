"""``mtl group``: measure task affinity, choose groups under a budget, write their configs, compare.

    mtl group --config BASE.yaml [--config OVERLAY.yaml ...] --method tag|cosine|datamap|hoa --budget K
              [--out DIR] [--every-n-steps N] [--tag-step optimizer|sgd] [--disjoint]
              [--search auto|exhaustive|branch_and_bound|beam] [--membership-weights] [--train] [--seeds N]
              [--pairwise DIR]
              [--wandb-project NAME | --no-wandb]

1. Affinity. ``tag``, ``cosine`` and ``datamap`` train the configured model once, in this process,
   with the matching callback (`mtl.grouping.measure`; data layout ``all_tasks``); ``hoa`` reads the
   single-task and pairwise runs (``--pairwise``, default ``OUT/runs``) or, with ``--train``, trains
   the missing ones (`mtl.grouping.hoa`). ``OUT/affinity.csv`` and ``OUT/affinity.png`` hold the
   matrix (for tag/cosine/datamap also logged to the run's dashboard).
2. Selection. tag, cosine, hoa: `mtl.grouping.selection.select_groups` on the pairwise scores
   (overlapping groups unless ``--disjoint``; TAG's convention that a task trains alone only as a
   last resort for tag and cosine, and the single-task result for hoa); datamap: the STG-MTL
   clustering into ``K`` groups (each task in the cluster of its highest membership; the paper's
   fuzzy memberships are recorded, and are near one-hot at its fuzziness 1.07).
   ``OUT/groups.json`` holds the groups, the group serving each task, the scores.
3. Configs. ``OUT/group_<k>.yaml``: the resolved base config restricted to group ``k``'s tasks, ready
   for ``mtl fit``. datamap with ``--membership-weights``: STG-MTL's soft groups instead, one model
   per cluster trained on every task, each task's loss weighted by its membership in the cluster
   (`mtl.grouping.configs.weight_config`); a task is still served by the cluster of its highest
   membership, and each model's ``val/mean`` (its checkpoint's monitor) averages the tasks it serves
   (``model.mean_over``).
4. ``--train``: trains all tasks together, every group and every task alone (``--seeds`` seeds each,
   averaged) and writes ``OUT/comparison.md`` / ``.csv``: each task's test metric together / in its
   group / alone, and Δm. Runs are named by their tasks under ``OUT/runs`` (hoa: the pairwise runs
   directory), so a set of tasks is trained once (HOA's single-task runs are the baselines, a chosen
   pair is HOA's pair run), finished runs are reused and interrupted ones resume
   (`mtl.grouping.training`). Runs in one process start as forks of a preloaded server on Linux
   (`mtl.runs.ForkServerLauncher`), which saves the import time of every run.

A measurement is reused by a later ``mtl group`` on the same ``--out`` (e.g. with another
``--budget`` or with ``--train``) when the method, its settings and the resolved config are the
same; ``--remeasure`` measures again.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtl import plots
from mtl.ablation.resolved import class_path_modules, fingerprint, primary_metrics, single_process
from mtl.ablation.resolved import tasks as config_tasks
from mtl.grouping.affinity import load_affinity, write_affinity_csv
from mtl.grouping.comparison import compare, to_markdown, write_comparison
from mtl.grouping.configs import (
    resolve_config,
    restrict_config,
    restriction_problem,
    weight_config,
    write_config,
)
from mtl.grouping.datamap import DataMapAffinity
from mtl.grouping.hoa import hoa_scores, read_pairwise_results, train_pairwise_results
from mtl.grouping.scores import PairwiseScores
from mtl.grouping.selection import (
    SEARCHES,
    Selection,
    check_budget,
    resolve_search,
    select_groups,
    selection_from_memberships,
)
from mtl.grouping.training import run_name, train_averaged, weighted_run_name
from mtl.runs import ForkServerLauncher, Launcher, SubprocessLauncher

__all__ = ["METHODS", "build_parser", "main"]

log = logging.getLogger(__name__)

METHODS = ("tag", "cosine", "datamap", "hoa")

#: Written next to ``affinity.csv`` once a measurement has finished: what was measured, on what.
MEASUREMENT = "measurement.json"

#: Trains (or reuses) a set of tasks, optionally with loss weights for every task: its averaged results.
Train = Callable[..., dict[str, Any]]


def build_parser() -> argparse.ArgumentParser:
    """The ``mtl group`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="mtl group",
        description="Measure task affinity, choose groups of tasks under a budget of networks, write one "
        "config per group, and (with --train) compare the groups against all tasks together and each "
        "task alone.",
    )
    parser.add_argument(
        "--config", action="append", required=True, help="an `mtl fit` config; repeat for overlays"
    )
    parser.add_argument("--method", required=True, choices=METHODS, help="how task affinity is measured")
    parser.add_argument("--budget", required=True, type=int, help="K: the most groups (networks) to train")
    parser.add_argument("--out", default=None, help="output directory (default: runs/group/<method>)")
    parser.add_argument(
        "--every-n-steps", type=int, default=None, help="tag/cosine: measure every N optimizer steps"
    )
    parser.add_argument(
        "--tag-step",
        choices=("optimizer", "sgd"),
        default="optimizer",
        help="tag: the lookahead step (the optimizer's own update, or -lr g)",
    )
    parser.add_argument("--disjoint", action="store_true", help="groups must partition the tasks")
    parser.add_argument(
        "--membership-weights",
        action="store_true",
        help="datamap: each cluster's model trains every task, weighted by its membership (STG-MTL)",
    )
    parser.add_argument(
        "--remeasure",
        action="store_true",
        help="measure the affinity again even if OUT holds a finished measurement of the same method and config",
    )
    parser.add_argument(
        "--search", choices=SEARCHES, default="auto", help="the selection search (tag, cosine, hoa)"
    )
    parser.add_argument(
        "--train", action="store_true", help="train the groups, all tasks together and each task alone"
    )
    parser.add_argument("--seeds", type=int, default=1, help="seeds per trained run (results averaged)")
    parser.add_argument(
        "--pairwise",
        default=None,
        help="hoa: directory of the single-task and pairwise runs (default OUT/runs); with --train, every "
        "run (all together, groups) is trained there",
    )
    parser.add_argument(
        "--wandb-project", default="mtl", help="W&B project of every run (offline without login)"
    )
    parser.add_argument("--no-wandb", action="store_true", help="log to CSV only (no dashboard)")
    return parser


def _check_arguments(args: argparse.Namespace) -> None:
    """The checks that need neither the config nor the data."""
    if args.seeds < 1:
        raise ValueError(
            f"Expected `--seeds` to be >= 1, but got {args.seeds}. Pass how many seeds each run trains."
        )
    if args.every_n_steps is not None and args.method not in ("tag", "cosine"):
        raise ValueError(
            f"Expected `--every-n-steps` only with --method tag or cosine (measured every N steps), but got "
            f"--method {args.method}: data maps are recorded once per epoch and HOA trains whole runs."
        )
    if args.membership_weights and args.method != "datamap":
        raise ValueError(
            f"Expected `--membership-weights` only with --method datamap (the fuzzy memberships of the data-map "
            f"clusters weight each cluster's tasks), but got --method {args.method}. Drop it."
        )
    if args.method == "datamap" and (args.search != "auto" or args.disjoint):
        raise ValueError(
            f"Expected no `--search` or `--disjoint` with --method datamap (its groups are the k-means "
            f"clusters of the data maps, always disjoint), but got --search {args.search}"
            f"{' --disjoint' if args.disjoint else ''}. Drop them."
        )


def _launcher(resolved: Mapping[str, Any]) -> Launcher:
    """Forks of a preloaded server for one-process runs on Linux (no import time per run), else a fresh
    interpreter (multi-device strategies re-launch ``sys.argv``, which a fork does not have)."""
    if sys.platform == "linux" and single_process(resolved):
        return ForkServerLauncher(class_path_modules(resolved))
    return SubprocessLauncher()


def _hoa_heatmap(
    out: Path, names: Sequence[str], matrix: np.ndarray, wandb: Mapping[str, Any] | None
) -> None:
    """``affinity.csv`` and ``affinity.png`` of HOA's gains (built here, not by a callback), and the image
    on the dashboard: a W&B run of its own, as no training run holds the matrix."""
    write_affinity_csv(out / "affinity.csv", list(names), torch.from_numpy(matrix))
    figure = plots.signed_heatmap(
        matrix,
        names,
        names,
        title="HOA: gain of task j from training with task i (%)",
        xlabel="task j (helped)",
        ylabel="task i (trained with)",
        colorbar_label="gain of j over alone (%)",
        fmt="{:.1f}",
    )
    loggers = []
    if wandb is not None:
        from mtl.loggers import WandbLogger

        loggers.append(WandbLogger(**{"project": "mtl", **wandb, "name": "group-hoa", "save_dir": str(out)}))
    plots.log_figure(figure, out / "affinity.png", "grouping/hoa/affinity", loggers)
    figure.clear()
    for logger in loggers:
        logger.experiment.finish()


def _group_names(selection: Selection) -> list[str]:
    return [f"group_{k + 1}" for k in range(len(selection.groups))]


def _write_groups(
    out: Path,
    args: argparse.Namespace,
    selection: Selection,
    configs: Mapping[str, Path | None],
    extra: Mapping[str, Any],
    weights: Sequence[Mapping[str, float]] | None,
) -> Path:
    names = _group_names(selection)
    served = {name: _served(selection, k) for k, name in enumerate(names)}
    payload = {
        "method": args.method,
        "budget": args.budget,
        "disjoint": selection.disjoint,
        "search": selection.search,
        "tasks": list(selection.task_names),
        "groups": [
            {
                "name": name,
                "tasks": list(group),
                "serves": served[name],
                "config": None if configs[name] is None else configs[name].name,
                **({} if weights is None else {"loss_weights": dict(weights[k])}),
            }
            for k, (name, group) in enumerate(zip(names, selection.groups, strict=True))
        ],
        "membership_weights": weights is not None,
        "serving": {t: names[g] for t, g in selection.serving.items()},
        "task_scores": selection.task_scores,
        "score": selection.score,
        "affinity": "affinity.csv",
        **extra,
    }
    path = out / "groups.json"
    path.write_text(json.dumps(payload, indent=2))
    return path


def _measurement_record(args: argparse.Namespace, resolved: Mapping[str, Any]) -> dict[str, Any]:
    """What a measurement depends on: the method and its settings, the tasks, the resolved config."""
    settings: dict[str, Any] = {}
    if args.method in ("tag", "cosine"):
        settings["every_n_steps"] = args.every_n_steps
    if args.method == "tag":
        settings["tag_step"] = args.tag_step
    return {
        "method": args.method,
        **settings,
        "tasks": config_tasks(resolved),
        "seed_everything": resolved.get("seed_everything"),
        "config_fingerprint": fingerprint(resolved),
        "configs": [str(c) for c in args.config],
    }


def _reusable_measurement(
    args: argparse.Namespace, out: Path, record: Mapping[str, Any]
) -> torch.Tensor | DataMapAffinity | None:
    """The finished measurement in ``out`` with the same ``record`` (the matrix, or the data-map callback
    restored from ``datamap.pt``); ``None`` when there is none or ``--remeasure`` is given."""
    path = out / MEASUREMENT
    if args.remeasure or not path.is_file() or not (out / "affinity.csv").is_file():
        return None
    found = json.loads(path.read_text())
    same = {k: v for k, v in found.items() if k != "configs"} == {
        k: v for k, v in record.items() if k != "configs"
    }
    if not same:
        return None
    log.warning(
        "Reusing the %s affinity measured in %s (pass --remeasure to measure again).", args.method, out
    )
    if args.method == "datamap":
        return DataMapAffinity.from_directory(out)
    return load_affinity(out / "affinity.csv")[1]


def _choose(
    args: argparse.Namespace,
    out: Path,
    resolved: Mapping[str, Any],
    search: str,
    train: Train,
    runs: Path,
    wandb: Mapping[str, Any] | None,
) -> tuple[Selection, dict[str, Any]] | None:
    """Measure the affinity and select the groups; ``None`` in the non-zero ranks of a multi-process fit.
    Returns the selection and what ``groups.json`` records besides it."""
    tasks = config_tasks(resolved)
    if args.method == "hoa":
        if args.train:
            results = train_pairwise_results(train, runs, tasks, args.seeds)
        else:
            results = read_pairwise_results(runs, tasks, args.seeds)
        scores = hoa_scores(results)
        _hoa_heatmap(out, tasks, scores.matrix, wandb)
        return _select(args, scores, search), {"pairwise_runs": str(runs)}
    record = _measurement_record(args, resolved)
    measured = _reusable_measurement(args, out, record)
    if measured is None:
        from mtl.grouping.measure import make_callback, measure_affinity

        callback = make_callback(args.method, out, args.every_n_steps, args.tag_step)
        trainer = measure_affinity(args.config, callback, out / "affinity_run", wandb=wandb)
        if not trainer.is_global_zero:
            return None  # the other processes of a multi-process fit stop here
        (out / MEASUREMENT).write_text(json.dumps(record, indent=2))
        measured = callback if isinstance(callback, DataMapAffinity) else callback.affinity()
    if isinstance(measured, DataMapAffinity):
        memberships = measured.memberships(args.budget)
        selection = selection_from_memberships(tasks, memberships)
        return selection, {"memberships": dict(zip(tasks, memberships.tolist(), strict=True))}
    # TAG's network selection: a task trains alone only when no chosen group can serve it.
    scores = PairwiseScores(tasks, measured, alone=None)
    return _select(args, scores, search), {}


def _select(args: argparse.Namespace, scores: PairwiseScores, search: str) -> Selection:
    return select_groups(scores, args.budget, disjoint=args.disjoint, search=search)  # type: ignore[arg-type]


def _write_group_configs(
    args: argparse.Namespace,
    out: Path,
    resolved: Mapping[str, Any],
    selection: Selection,
    problem: str | None,
    weights: Sequence[Mapping[str, float]] | None,
) -> dict[str, Path | None]:
    """``group_<k>.yaml`` per group: the config restricted to the group's tasks (none when it cannot be
    restricted), or with ``weights`` every task with the group's loss weights."""
    if problem is not None and weights is None:
        log.warning("No group configs written: %s", problem)
    configs: dict[str, Path | None] = {}
    for k, (name, group) in enumerate(zip(_group_names(selection), selection.groups, strict=True)):
        if weights is not None:
            serves = _served(selection, k)
            config, what = weight_config(resolved, weights[k], serves), "every task, weighted by membership"
        elif problem is None:
            config, what = restrict_config(resolved, group), "tasks " + ", ".join(group)
        else:
            configs[name] = None
            continue
        header = (
            f"{name} of `mtl group --method {args.method} --budget {args.budget}`: {what}; serves "
            f"{', '.join(t for t in selection.task_names if selection.serving[t] == k)}.\n"
            f"Run:  mtl fit --config {out / f'{name}.yaml'} --test_after_fit true"
        )
        configs[name] = write_config(out / f"{name}.yaml", config, header)
    return configs


def _served(selection: Selection, group: int) -> list[str]:
    """The tasks that group ``group`` serves, in task order."""
    return [t for t in selection.task_names if selection.serving[t] == group]


def _membership_weights(
    selection: Selection, memberships: Mapping[str, Sequence[float]]
) -> list[dict[str, float]]:
    """Each group's loss weights for STG-MTL's soft groups: every task's membership in the group's cluster
    (the cluster its members have their highest membership in)."""
    weights = []
    for group in selection.groups:
        column = int(np.argmax(memberships[group[0]]))
        weights.append({t: float(memberships[t][column]) for t in selection.task_names})
    return weights


def _train_and_compare(
    out: Path,
    resolved: Mapping[str, Any],
    selection: Selection,
    train: Train,
    weights: Sequence[Mapping[str, float]] | None,
) -> None:
    """Train all tasks together, every group (with ``weights``: every task, weighted) and every task
    alone; write and print the comparison."""
    tasks, names = list(selection.task_names), _group_names(selection)
    together = train(tasks)
    grouped = {
        name: train(group) if weights is None else train(_served(selection, k), weights[k])
        for k, (name, group) in enumerate(zip(names, selection.groups, strict=True))
    }
    single = {t: train([t]) for t in tasks}
    serving = {t: names[g] for t, g in selection.serving.items()}
    rows = compare(tasks, primary_metrics(resolved), together, grouped, serving, single)
    paths = write_comparison(out, rows)
    print(f"\n{to_markdown(rows)}\nwritten to {paths['markdown']} and {paths['csv']}")


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``mtl group`` (see the module docstring) with ``argv`` (default: the command line)."""
    args = build_parser().parse_args(None if argv is None else list(argv))
    _check_arguments(args)
    out = Path(args.out or Path("runs") / "group" / args.method)
    resolved = resolve_config(args.config)
    tasks = config_tasks(resolved)
    # Every check that needs no training runs first, so that bad input fails in seconds.
    if args.method == "datamap":
        check_budget(len(tasks), args.budget, disjoint=True)
        search = "clustering"
    else:
        search = resolve_search(len(tasks), args.budget, args.disjoint, args.search)
    problem = restriction_problem(resolved)
    if problem is not None and (args.train or args.method == "hoa"):
        raise ValueError(f"{problem} (`mtl group --train` and `--method hoa` train groups of tasks.)")
    wandb = None if args.no_wandb else {"project": args.wandb_project}
    runs = Path(args.pairwise) if args.method == "hoa" and args.pairwise else out / "runs"
    out.mkdir(parents=True, exist_ok=True)
    write_config(out / "config.yaml", resolved, "The resolved base config of this `mtl group` run.")
    launcher = _launcher(resolved)  # a fork server starts on the first run only

    def train(members: Sequence[str], weights: Mapping[str, float] | None = None) -> dict[str, Any]:
        """Train (or reuse) the base config restricted to ``members`` (or, with ``weights``, every task
        with those loss weights), every seed, under ``runs``."""
        members = [t for t in tasks if t in members]
        if weights is None:
            config, name = restrict_config(resolved, members), run_name(members)
            header = f"The base config restricted to {', '.join(members)} (written by `mtl group`)."
        else:  # `members`: the tasks the weighted model serves, its checkpoint's monitor
            config, name = weight_config(resolved, weights, members), weighted_run_name(weights, members)
            header = (
                f"The base config with loss weights {dict(weights)}, val/mean over {', '.join(members)} "
                "(written by `mtl group`)."
            )
        path = write_config(out / "configs" / f"{name}.yaml", config, header)
        print(f"mtl group: run {name} ({args.seeds} seed(s)) under {runs}", flush=True)
        return train_averaged(path, config, runs, args.seeds, wandb=wandb, launcher=launcher, name=name)

    chosen = _choose(args, out, resolved, search, train, runs, wandb)
    if chosen is None:
        return
    selection, extra = chosen
    weights = _membership_weights(selection, extra["memberships"]) if args.membership_weights else None
    configs = _write_group_configs(args, out, resolved, selection, problem, weights)
    groups_path = _write_groups(out, args, selection, configs, extra, weights)
    print(f"Groups ({selection.search}, score {selection.score:.4g}) written to {groups_path}:")
    for name, group in zip(_group_names(selection), selection.groups, strict=True):
        print(f"  {name}: {', '.join(group)}")
    if args.train:
        _train_and_compare(out, resolved, selection, train, weights)
