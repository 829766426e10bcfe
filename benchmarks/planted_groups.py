"""Planted groups: does each affinity method of `mtl group` recover K groups of related tasks?

Data: `mtl.data.sources.PlantedGroups` (an extension of the MMoE generator of Ma et al., KDD 2018):
``K = 3`` groups of ``m = 3`` regression tasks on shared inputs ``x ~ N(0, I_32)``; within a group the
task weights have cosine ``p`` (the within-group correlation), across groups they are orthogonal, so
tasks of different groups are independent. For every ``p`` and seed, a shared-bottom MLP
(`TabularMLPEncoder` [64], a `RegressionHead` [8] per task, Adam 1e-3, batch 64 per task) is trained on
all nine tasks at once (layout ``all_tasks``) with one affinity callback of `mtl.grouping.measure`:

* ``tag``: `TAGAffinity` with the plain lookahead step ``-lr g`` (``step="sgd"``, TAG's Eq. 1 as
  written), which isolates each source task's own gradient. The optimizer's own Adam step (``mtl
  group``'s default), whose moments hold every task's past gradients, recovered the groups as well in
  a check with these settings: ARI 1.0 / 0.07 / 1.0 on seeds 0-2 at p = 0.9 (``-lr g``: 1.0 / 0.27 /
  1.0) and 1.0 on all three at p = 1;
* ``cosine``: `GradientCosineAffinity`;
* ``datamap``: `DataMapAffinity` (STG-MTL): its k-means clusters, via the fuzzy memberships, as
  ``mtl group`` takes them;
* ``hoa``: Standley et al.'s higher-order approximation: every task alone and every pair trained (9 +
  36 models per setting, the best epoch by validation MSE, as ``mtl group --train`` does), scored by
  the relative gain in MSE on 2048 held-out examples (`mtl.grouping.hoa.hoa_scores`; ``mtl group``
  reads validation results instead, which here pick the best epoch). Each task's head starts from the
  same weights in every run it is part of, and every run sees the same encoder initialisation, so
  that the runs of a task differ by the company it keeps; ``--hoa-repeats`` (3) trainings per model
  with other initialisations and batch orders are averaged, ``--jobs`` models train at a time. HOA
  needs a regime where the company changes the test loss, and one where it changes it *by group*
  (see "HOA's regime" below). It is costly (45 models x 3 trainings per point): two correlations,
  four seeds.

Settings chosen here (not from a paper): affinities are averaged over 10 epochs, measured every 2
steps. In the first epochs each task's randomly initialised head maps the shared features its own
way, so gradient signals of related tasks barely align; with 4 epochs TAG reached ARI 0.64 / 1.0 /
0.64 and cosine 1.0 / 1.0 / 0.64 on three seeds at p = 0.9, with 10 epochs 1.0 / 0.27 / 1.0 and 1.0
on all three.

Why TAG trails cosine at p < 1 (the "affinity over training" table and
``planted-groups-over-training.png``, from each callback's per-epoch means): relative to each epoch's
self-affinity the two signals are nearly the same; related tasks stand out in epochs 2-4 (within
+0.19 against across +0.04 at p = 0.9, epoch 3) and much less once the shared features are learnt
(about +0.01 against -0.007 from epoch 7 on). Cosine weighs every step alike; TAG's raw lookahead gain
``lr g_i·g_j / L_j`` grows as the losses fall (its mean self-affinity rose about 33-fold from the
first tenth of training to the fifth in a seed-1 trial), so its average over training is dominated
by the late epochs, where the groups barely show. Averaging only the first half of training would
have recovered p = 0.9 on 9 of 10 seeds in a trial, and TAG normalised per step on 8 of 10; neither is
TAG as published, so the benchmark keeps the paper's plain average.

HOA's regime. Its runs use 256 training examples per task with label noise 1.0 and 150 epochs, where
a task alone overfits and its partner's examples can help. Pairwise gains come from more than
relatedness, though, and three settings decide whether the groups show (trials at p = 1, one training
per model, seeds 0-3, the ARI in that order):

1. MMoE's generator as is (one input tensor and one draw of the sines for all tasks, heads [8], 60
   epochs; the results before this regime, with 3 trainings per model: ARI 0.48 at p = 0.9 and 0.50
   at p = 1 over 4 seeds). In seeds 2 and 3 nearly every partner helped every task (seed 2, p = 1: 57
   of the 72 pairwise gains positive, up to +4.4 % across groups): every task's label is the same
   function of its own projection, so a partner from another group still teaches the shared layer
   that function, and a partner from the same group only adds a second noisy label on inputs the
   task already has (seed 2: +0.9 % within groups, +1.0 % across on average).
2. Each group its own sines (`PlantedGroups(sines_per_group=True)`): partners from other groups now
   mostly hurt (seed 2: -3.3 % on average, 7 % of the gains positive), but those of the same group
   still barely help (+0.3 %); seeds 0 and 2 gave 1.0 and 0.48.
3. Each task its own inputs as well (``shared_inputs=False``, as when every task comes from its own
   data set): a partner of the same group brings examples the task has not seen. Heads [8], 60
   epochs: 1.0 / 0.64 / 0.48 / 1.0; linear heads, 150 epochs (kept): 1.0 / 0.35 / 1.0 / 1.0 (these
   two trials cut one draw into per-task slices, the same distribution as the option's draws).

The within-group gains stay small (+1 to +3 %): the task's own head fits its own examples, and
doubling a task's data through a partner is not doubling its data. In a trial with linear tasks (no
sines), 64 examples per task and a shared layer of 64 units, a partner with the very same weights
improved the test MSE no more than an unrelated one (1.565 alone, 1.53 with the copy, 1.51 and 1.52
with unrelated tasks): with 65 head parameters per task on 64 examples, the task's own parameters
limit it. ``--hoa-shared-sines``, ``--hoa-shared-inputs``, ``--hoa-head-hidden 8`` and ``--hoa-epochs
60`` restore the earlier regime.

With 3 trainings per model this regime recovers the groups in all four seeds at p = 1 and in three
of four at p = 0.9. In seed 1 the third group's noiseless labels have standard deviation 0.19 against
the noise's 1.0 (its sines nearly cancel its linear part), so its tasks have little to share: the
gains between its tasks and the second group's (-1.2 to +3.6 %, 14 of 18 positive) are as large as
those within it (+0.5 to +3.1 %), and HOA merges the two groups.

tag, cosine and hoa choose ``K`` disjoint groups with `mtl.grouping.select_groups` (exact search;
TAG's convention that a task is alone only as a last resort for tag and cosine, HOA's single-task
result for hoa). The score is the adjusted Rand index (Hubert & Arabie, J. Classification 1985;
scikit-learn's ``adjusted_rand_score``) of the chosen partition against the planted groups: 1 for the
planted partition, about 0 for a random one. Writes ``benchmarks/results/planted-groups.md`` / ``.json``
(mean ± sample std of the ARI over seeds per method and ``p``, every run's groups) and
``planted-groups.png`` (ARI against ``p``, one line per method), each with the machine it ran on.

Finished runs are reused when the script runs again with the same settings for their method (the
other methods' runs are kept when only HOA's settings change); ``--fresh`` runs everything again.

Run (from the repository root; about 8 CPU minutes for the 105 joint runs and 75 for HOA's 8 x 45 x 3
models, 39 minutes on 2 cores with ``--jobs 2``)::

    nice -n 19 .venv/bin/python benchmarks/planted_groups.py
    .venv/bin/python benchmarks/planted_groups.py --correlations 0.9 --seeds 1 --hoa-correlations 1.0 \\
        --hoa-seeds 1 --hoa-repeats 1 --hoa-epochs 3 --no-save                        # smoke test
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import multiprocessing
import os
import statistics
import sys
import tempfile
import zlib
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from sklearn.metrics import adjusted_rand_score

from mtl.data.datamodule import MultiTaskDataModule
from mtl.data.sources import PlantedGroups
from mtl.data.sources.base import DataSource, TaskSplits
from mtl.encoders import TabularMLPEncoder
from mtl.grouping.affinity import StepAffinityCallback
from mtl.grouping.datamap import DataMapAffinity
from mtl.grouping.hoa import PairwiseResults, hoa_scores
from mtl.grouping.measure import make_callback
from mtl.grouping.scores import PairwiseScores
from mtl.grouping.selection import Selection, select_groups, selection_from_memberships
from mtl.heads import RegressionHead
from mtl.module import MultiTaskModule
from mtl.plots import new_figure

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO_ROOT, describe_machine, load_average, mean_std, quiet_logs, save_results

log = logging.getLogger("planted_groups")

METHODS = ("tag", "cosine", "datamap", "hoa")
RESULTS = REPO_ROOT / "benchmarks" / "results"


class TaskSubset(DataSource):
    """Some of the tasks of an already loaded source (HOA's single-task and pairwise runs)."""

    def __init__(self, splits: dict[str, TaskSplits], tasks: tuple[str, ...], spec: dict[str, Any]) -> None:
        self.splits, self.tasks, self.spec = splits, tasks, spec

    def load(self) -> dict[str, TaskSplits]:
        return {t: self.splits[t] for t in self.tasks}

    def input_spec(self) -> dict[str, Any]:
        return self.spec


def planted(correlation: float, seed: int, args: argparse.Namespace, hoa: bool = False) -> PlantedGroups:
    """The planted tasks; HOA's runs get their own regime (fewer, noisier labels, and a test split)."""
    return PlantedGroups(
        groups=args.groups,
        tasks_per_group=args.tasks_per_group,
        correlation=correlation,
        num_train=args.hoa_num_train if hoa else args.num_train,
        num_val=args.num_val if hoa else 0,
        num_test=args.num_val if hoa else 0,
        input_dim=args.input_dim,
        noise_std=args.hoa_noise_std if hoa else args.noise_std,
        num_sines=args.hoa_num_sines if hoa else 10,
        sines_per_group=hoa and not args.hoa_shared_sines,
        shared_inputs=not hoa or args.hoa_shared_inputs,
        seed=seed,
    )


def fit(
    source: DataSource,
    tasks: tuple[str, ...],
    seed: int,
    args: argparse.Namespace,
    callbacks: list[Callback],
    epochs: int,
    root: str,
    hidden: int,
    head_hidden: list[int],
) -> Trainer:
    """Train the benchmark's model (a shared MLP of ``hidden`` units, heads with ``head_hidden`` units)
    on ``tasks`` of ``source`` (layout ``all_tasks``); validation only when a callback needs it (HOA's
    best epoch)."""
    seed_everything(seed, verbose=False)
    validate = any(isinstance(c, ModelCheckpoint) for c in callbacks)
    data = MultiTaskDataModule(
        source, batch_size=args.batch_size, eval_batch_size=1024, layout="all_tasks", seed=seed
    )
    encoder = TabularMLPEncoder(num_numeric=args.input_dim, hidden=[hidden])
    heads = {}
    for task in tasks:
        # A task's head starts from the same weights in every run it is part of (alone or paired), so
        # that HOA's comparisons differ by the company the task keeps, not by its initialisation.
        torch.manual_seed(seed * 100_003 + zlib.crc32(task.encode()))
        heads[task] = RegressionHead(hidden=head_hidden, in_features=encoder.out_features)
    seed_everything(seed, verbose=False)
    model = MultiTaskModule(
        encoder=encoder, heads=heads, optimizer=lambda params: torch.optim.Adam(params, lr=args.lr)
    )
    trainer = Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        default_root_dir=root,
        enable_checkpointing=validate,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=None if validate else 0,
        use_distributed_sampler=False,
        callbacks=callbacks,
    )
    trainer.fit(model, datamodule=data)
    return trainer


#: The settings a run depends on: shared by all methods, then those of the joint run or of HOA's runs.
SHARED = ("groups", "tasks_per_group", "input_dim", "hidden", "batch_size", "lr")
JOINT = ("num_train", "noise_std", "epochs", "every_n_steps")
PAIRWISE = (
    "hoa_num_train",
    "hoa_noise_std",
    "hoa_epochs",
    "hoa_repeats",
    "hoa_hidden",
    "hoa_head_hidden",
    "hoa_shared_sines",
    "hoa_shared_inputs",
    "hoa_num_sines",
    "num_val",
)


def run_settings(method: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The settings a run of ``method`` depends on (two runs with equal ones are the same experiment)."""
    return {k: settings[k] for k in SHARED + (PAIRWISE if method == "hoa" else JOINT)}


def reusable_runs(path: Path, settings: dict[str, Any]) -> dict[tuple[str, float, int], dict[str, Any]]:
    """The runs of an earlier result file whose method's settings equal ``settings``', by (method, p, seed)."""
    if not path.is_file():
        return {}
    previous = json.loads(path.read_text())
    previous["settings"].setdefault("hoa_repeats", 1)  # results from before the option trained once
    previous["settings"].setdefault("hoa_hidden", previous["settings"]["hidden"])
    # results from before these options: heads [8], the MMoE generator's shared sines and inputs
    previous["settings"].setdefault("hoa_head_hidden", [8])
    previous["settings"].setdefault("hoa_shared_sines", True)
    previous["settings"].setdefault("hoa_shared_inputs", True)
    previous["settings"].setdefault("hoa_num_sines", 10)
    return {
        (r["method"], r["correlation"], r["seed"]): r
        for r in previous.get("runs", [])
        if run_settings(r["method"], previous["settings"]) == run_settings(r["method"], settings)
        and (
            "trajectory" in r or r["method"] in ("datamap", "hoa")
        )  # tag and cosine runs record their course
    }


def labels_of(selection: Selection, tasks: list[str]) -> list[int]:
    """The index of each task's group in a partition."""
    group = {t: g for g, members in enumerate(selection.groups) for t in members}
    return [group[t] for t in tasks]


def planted_pairs(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """Masks ``[T, T]`` of the ordered pairs of different tasks in the same planted group, and in different
    ones (tasks are numbered group by group)."""
    group = np.repeat(np.arange(args.groups), args.tasks_per_group)
    same = group[:, None] == group[None, :]
    other = ~np.eye(len(group), dtype=bool)
    return same & other, ~same


def planted_trajectory(callback: StepAffinityCallback, args: argparse.Namespace) -> dict[str, list[float]]:
    """Each epoch's mean affinity within and across the planted groups, relative to the epoch's mean
    absolute self-affinity (as in the callback's over-training image)."""
    epochs, means = callback.trajectory()
    scale = means.diagonal(dim1=1, dim2=2).abs().mean(dim=1).clamp_min(1e-300)
    relative = (means / scale[:, None, None]).numpy()
    within, across = planted_pairs(args)
    return {
        "epochs": epochs,
        "within": [float(m[within].mean()) for m in relative],
        "across": [float(m[across].mean()) for m in relative],
    }


def measured_labels(
    method: str, correlation: float, seed: int, args: argparse.Namespace
) -> tuple[list[int], dict[str, list[float]] | None]:
    """Train on the planted tasks with the method's callback and choose ``K`` disjoint groups as ``mtl
    group`` does (the data map's clusters for datamap); for tag and cosine also the affinity's course
    over training (`planted_trajectory`)."""
    source = planted(correlation, seed, args)
    with tempfile.TemporaryDirectory() as directory:
        callback = make_callback(method, Path(directory), args.every_n_steps, tag_step="sgd")
        fit(source, source.tasks, seed, args, [callback], args.epochs, directory, args.hidden, [8])
    tasks = list(source.tasks)
    if isinstance(callback, DataMapAffinity):
        selection = selection_from_memberships(tasks, callback.memberships(args.groups))
        return labels_of(selection, tasks), None
    assert isinstance(callback, StepAffinityCallback)
    scores = PairwiseScores(tasks, callback.affinity())
    selection = select_groups(scores, args.groups, disjoint=True)
    return labels_of(selection, tasks), planted_trajectory(callback, args)


def hoa_test_mse(
    splits: dict[str, TaskSplits],
    spec: dict[str, Any],
    members: tuple[str, ...],
    seed: int,
    args: argparse.Namespace,
) -> dict[str, dict[str, float]]:
    """Test MSE of every task of ``members`` trained together (best epoch by validation), averaged over
    ``hoa_repeats`` trainings with different initialisations and batch orders (as ``mtl group --seeds``
    averages)."""
    totals = dict.fromkeys(members, 0.0)
    for repeat in range(args.hoa_repeats):
        with tempfile.TemporaryDirectory() as directory:
            best = ModelCheckpoint(dirpath=directory, monitor="val/mean", mode="max")
            trainer = fit(
                TaskSubset(splits, members, spec),
                members,
                seed + 1000 * repeat,
                args,
                [best],
                args.hoa_epochs,
                directory,
                args.hoa_hidden,
                args.hoa_head_hidden,
            )
            metrics = trainer.test(ckpt_path="best", datamodule=trainer.datamodule, verbose=False)[0]
        for t in members:
            totals[t] += float(metrics[f"test/{t}/mse"]) / args.hoa_repeats
    return {t: {"mse": totals[t]} for t in members}


def _worker_start(threads: int) -> None:
    torch.set_num_threads(threads)
    quiet_logs()


def hoa_labels(correlation: float, seed: int, args: argparse.Namespace) -> list[int]:
    """Train every task alone and every pair (`hoa_test_mse`, ``--jobs`` models at a time); choose ``K``
    disjoint groups on HOA's relative gains in test MSE."""
    source = planted(correlation, seed, args, hoa=True)
    splits, spec, tasks = source.load(), source.input_spec(), source.tasks
    runs = [(t,) for t in tasks] + list(combinations(tasks, 2))
    # Each model seeds itself, so its result does not depend on the process that trains it.
    with ProcessPoolExecutor(
        args.jobs, multiprocessing.get_context("spawn"), initializer=_worker_start, initargs=(args.threads,)
    ) as pool:
        results = dict(
            zip(
                runs,
                pool.map(partial(hoa_test_mse, splits, spec, seed=seed, args=args), runs),
                strict=True,
            )
        )
    single = {t: results[(t,)][t] for t in tasks}
    pairs = {r: results[r] for r in runs if len(r) == 2}
    scores = hoa_scores(PairwiseResults(tasks, single, pairs, {t: {"mse": False} for t in tasks}))
    log.info("HOA gains (%%), row i = trained with task i:\n%s", np.array2string(scores.matrix, precision=1))
    return labels_of(select_groups(scores, args.groups, disjoint=True), list(tasks))


def cpu_seconds() -> float:
    """CPU time of this process and of its finished child processes (HOA's workers)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def summary(runs: list[dict[str, Any]], method: str, correlation: float) -> tuple[float, float, int] | None:
    """Mean, sample std and count of the ARI of the runs of ``method`` at ``correlation``."""
    values = [r["ari"] for r in runs if r["method"] == method and r["correlation"] == correlation]
    if not values:
        return None
    mean, std = mean_std(values)
    return mean, std, len(values)


def plot(runs: list[dict[str, Any]], methods: list[str], correlations: list[float], path: Path) -> None:
    figure = new_figure(6.5, 4.2)
    axes = figure.add_subplot()
    for k, method in enumerate(methods):
        points = [(p, s) for p in correlations if (s := summary(runs, method, p)) is not None]
        shift = 0.008 * (k - (len(methods) - 1) / 2)  # side by side, so that the error bars stay apart
        axes.errorbar(
            [p + shift for p, _ in points],
            [s[0] for _, s in points],
            yerr=[s[1] for _, s in points],
            marker="o",
            capsize=3,
            label=method,
        )
    axes.axhline(0.9, color="grey", linestyle="--", linewidth=1)
    axes.set_xlabel("within-group correlation p")
    axes.set_ylabel("adjusted Rand index (mean ± std over seeds)")
    axes.set_ylim(-0.25, 1.08)
    axes.set_title("Recovery of 3 planted groups of 3 tasks")
    axes.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


#: The correlations whose affinity over training is shown (`trajectory_means`).
TRAJECTORY_CORRELATIONS = (0.6, 0.9, 1.0)


def trajectory_means(
    runs: list[dict[str, Any]], method: str, correlation: float
) -> tuple[list[int], np.ndarray, np.ndarray] | None:
    """Epochs and the seed-mean within- and across-group relative affinity of ``method`` at ``correlation``."""
    found = [
        r["trajectory"]
        for r in runs
        if r["method"] == method and r["correlation"] == correlation and "trajectory" in r
    ]
    if not found:
        return None
    return (
        found[0]["epochs"],
        np.mean([t["within"] for t in found], axis=0),
        np.mean([t["across"] for t in found], axis=0),
    )


def plot_trajectories(runs: list[dict[str, Any]], path: Path) -> None:
    """Within- (solid) and across-group (dashed) affinity by epoch for tag and cosine, one colour per ``p``."""
    figure = new_figure(10, 3.8)
    for k, method in enumerate(("tag", "cosine")):
        axes = figure.add_subplot(1, 2, k + 1)
        for n, p in enumerate(TRAJECTORY_CORRELATIONS):
            found = trajectory_means(runs, method, p)
            if found is None:
                continue
            epochs, within, across = found
            x = [e + 1 for e in epochs]
            axes.plot(x, within, marker="o", color=f"C{n}", label=f"p = {p:g}, within")
            axes.plot(x, across, linestyle="--", color=f"C{n}", label=f"p = {p:g}, across")
        axes.axhline(0, color="grey", linewidth=0.8)
        axes.set_xlabel("epoch")
        axes.set_ylabel("affinity / mean |self-affinity|")
        axes.set_title(f"{method}: affinity within and across planted groups")
        axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def trajectory_table(runs: list[dict[str, Any]]) -> list[str]:
    """Markdown rows: per method and ``p``, each epoch's within / across relative affinity (seed means)."""
    lines: list[str] = []
    for method in ("tag", "cosine"):
        for p in TRAJECTORY_CORRELATIONS:
            found = trajectory_means(runs, method, p)
            if found is None:
                continue
            epochs, within, across = found
            if not lines:
                lines += [
                    "| method | p | " + " | ".join(f"epoch {e + 1}" for e in epochs) + " |",
                    "| --- | ---: |" + " ---: |" * len(epochs),
                ]
            cells = [f"{w:+.3f} / {a:+.3f}" for w, a in zip(within, across, strict=True)]
            lines.append(f"| {method} | {p:g} | " + " | ".join(cells) + " |")
    return lines


def hoa_generator(settings: dict[str, Any]) -> str:
    """How HOA's runs draw their data, in words: where they depart from the MMoE generator."""
    sines = "one draw of the sines" if settings["hoa_shared_sines"] else "each group its own sines"
    inputs = "inputs shared by all tasks" if settings["hoa_shared_inputs"] else "each task its own inputs"
    return f"{sines}, {inputs}, {settings['hoa_num_sines']} sine terms"


def markdown(
    runs: list[dict[str, Any]], methods: list[str], correlations: list[float], info: dict[str, Any]
) -> str:
    s = info["settings"]
    lines = [
        "# Planted groups: adjusted Rand index of the chosen groups against the planted ones",
        "",
        f"{s['groups']} groups x {s['tasks_per_group']} regression tasks (`PlantedGroups`, input dimension "
        f"{s['input_dim']}); shared-bottom MLP [{s['hidden']}], heads [8], Adam lr {s['lr']}, batch "
        f"{s['batch_size']} per task, layout all_tasks. tag / cosine / datamap: one joint run of {s['epochs']} "
        f"epochs on {s['num_train']} examples (noise {s['noise_std']}), measured every {s['every_n_steps']} steps "
        f"(tag: the `-lr g` lookahead), {s['seeds']} seeds. hoa: {s['tasks']} single-task + {s['pairs']} pairwise "
        f"runs of {s['hoa_epochs']} epochs on {s['hoa_num_train']} examples per task (noise {s['hoa_noise_std']}"
        f"; {hoa_generator(s)}; shared MLP [{s['hoa_hidden']}], heads {s['hoa_head_hidden'] or 'linear'}), best epoch by "
        f"validation, test MSE (mean of {s['hoa_repeats']} training(s)), {s['hoa_seeds']} seed(s), {s['jobs']} "
        f"models at a time. {s['groups']} disjoint groups chosen by exact "
        "search (datamap: its k-means clusters). ARI 1 = the planted partition, about 0 = chance. Mean ± sample "
        f"std over seeds (n = seeds). {info['cpu_seconds']:.0f} s CPU in all (the sum over runs, each timed when "
        "it ran). "
        "Generated by `benchmarks/planted_groups.py`.",
        "",
        "| method | " + " | ".join(f"p = {p:g}" for p in correlations) + " |",
        "| --- |" + " ---: |" * len(correlations),
    ]
    for method in methods:
        cells = []
        for p in correlations:
            found = summary(runs, method, p)
            cells.append(
                "" if found is None else f"{found[0]:.2f}" + (f" ± {found[1]:.2f}" if found[2] > 1 else "")
            )
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    by_seed = [
        f"p = {p:g}: " + ", ".join(f"{r['ari']:.2f}" for r in sorted(hoa, key=lambda r: r["seed"]))
        for p in correlations
        if (hoa := [r for r in runs if r["method"] == "hoa" and r["correlation"] == p])
    ]
    if by_seed:
        lines += ["", "HOA's ARI by seed (0, 1, ...): " + "; ".join(by_seed) + "."]
    lines += [
        "",
        "![ARI against within-group correlation](planted-groups.png)",
        "",
        "## Affinity over training",
        "",
        "Each epoch's mean affinity between tasks of the same planted group / of different groups (ordered "
        "pairs), divided by the epoch's mean absolute self-affinity, averaged over seeds (`mtl.grouping` "
        "callbacks keep each epoch's mean: `trajectory`).",
        "",
        *trajectory_table(runs),
        "",
        "![affinity over training](planted-groups-over-training.png)",
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in info["machine"].items() if v is not None) + ".",
    ]
    return "\n".join(lines) + "\n"


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--correlations", default="0,0.2,0.4,0.6,0.8,0.9,1.0", help="tag, cosine, datamap")
    parser.add_argument("--seeds", type=int, default=5, help="tag, cosine, datamap")
    parser.add_argument("--groups", type=int, default=3)
    parser.add_argument("--tasks-per-group", type=int, default=3)
    parser.add_argument("--num-train", type=int, default=2048)
    parser.add_argument("--input-dim", type=int, default=32)
    parser.add_argument("--noise-std", type=float, default=0.1, help="label noise (the MMoE paper's 0.1)")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--every-n-steps", type=int, default=2)
    parser.add_argument("--hoa-correlations", default="0.9,1.0")
    parser.add_argument("--hoa-seeds", type=int, default=4)
    parser.add_argument("--hoa-num-train", type=int, default=256, help="HOA: training examples per task")
    parser.add_argument("--hoa-noise-std", type=float, default=1.0, help="HOA: label noise")
    parser.add_argument("--hoa-epochs", type=int, default=150, help="HOA: epochs (best by validation)")
    parser.add_argument(
        "--hoa-repeats", type=int, default=3, help="HOA: trainings per model (test MSE averaged)"
    )
    parser.add_argument("--hoa-hidden", type=int, default=64, help="HOA: units of the shared layer")
    parser.add_argument(
        "--hoa-head-hidden", default="", help="HOA: hidden units of each head, comma-separated ('': linear)"
    )
    parser.add_argument(
        "--hoa-shared-sines", action="store_true", help="HOA: one draw of the sines for all groups (MMoE's)"
    )
    parser.add_argument(
        "--hoa-shared-inputs", action="store_true", help="HOA: one input tensor for all tasks (MMoE's)"
    )
    parser.add_argument("--hoa-num-sines", type=int, default=10, help="HOA: sine terms of the labels")
    parser.add_argument("--jobs", type=int, default=2, help="HOA: models trained at a time (processes)")
    parser.add_argument("--num-val", type=int, default=2048, help="HOA: validation and test examples")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--fresh", action="store_true", help="run everything again (no reuse)")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    args.hoa_head_hidden = [int(v) for v in args.hoa_head_hidden.split(",") if v]
    torch.set_num_threads(args.threads)
    quiet_logs()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("mtl.data.sources.planted_groups").setLevel(logging.WARNING)
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"Expected --methods among {list(METHODS)}, but got {unknown}.")
    plan = [
        (p, seed, method)
        for method in methods
        for p in _floats(args.hoa_correlations if method == "hoa" else args.correlations)
        for seed in range(args.hoa_seeds if method == "hoa" else args.seeds)
    ]
    truth = [g for g in range(args.groups) for _ in range(args.tasks_per_group)]
    load_before = load_average()
    settings = vars(args)
    done = {} if args.fresh else reusable_runs(RESULTS / "planted-groups.json", settings)
    runs: list[dict[str, Any]] = []
    reused = 0
    for p, seed, method in sorted(plan):
        if (method, p, seed) in done:
            runs.append(done[(method, p, seed)])
            reused += 1
            continue
        started = cpu_seconds()
        if method == "hoa":
            labels, trajectory = hoa_labels(p, seed, args), None
        else:
            labels, trajectory = measured_labels(method, p, seed, args)
        ari = float(adjusted_rand_score(truth, labels))
        runs.append(
            {
                "method": method,
                "correlation": p,
                "seed": seed,
                "ari": ari,
                "labels": labels,
                **({} if trajectory is None else {"trajectory": trajectory}),
                "cpu_seconds": round(cpu_seconds() - started, 1),
                "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            }
        )
        log.info("p=%.2f seed=%d %-8s ARI %.3f  groups %s", p, seed, method, ari, labels)
    t = args.groups * args.tasks_per_group
    info = {
        "settings": {**settings, "tasks": t, "pairs": t * (t - 1) // 2},
        "cpu_seconds": sum(r["cpu_seconds"] for r in runs),
        "reused_runs": reused,
        "machine": describe_machine(torch.device("cpu"))
        | {"load_average_1min_before": load_before, "load_average_1min_after": load_average()},
    }
    correlations = sorted({r["correlation"] for r in runs})
    text = markdown(runs, methods, correlations, info)
    print(text)
    if args.no_save:
        return
    table = {
        method: {
            str(p): {"mean": found[0], "std": found[1], "n": found[2]}
            for p in correlations
            if (found := summary(runs, method, p)) is not None
        }
        for method in methods
    }
    path = save_results(RESULTS, "planted-groups", text, {**info, "ari": table, "runs": runs})
    plot(runs, methods, correlations, RESULTS / "planted-groups.png")
    plot_trajectories(runs, RESULTS / "planted-groups-over-training.png")
    log.info("Saved %s, .json and .png (mean ARI %.2f)", path, statistics.fmean(r["ari"] for r in runs))


if __name__ == "__main__":
    main()
