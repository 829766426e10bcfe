"""The report's numbers on hand-made results: mean ± std over seeds, Δm against the baselines, ranks."""

import math
from pathlib import Path

import pytest

from mtl.report.results import collect
from mtl.report.table import build_report, stat
from tests.report.sweeps import make_sweep

BASELINES = {"a": {0: {"accuracy": 0.80}, 1: {"accuracy": 0.82}}, "b": {0: {"mse": 1.0}, 1: {"mse": 1.2}}}
GOOD = {0: {"a": {"accuracy": 0.85}, "b": {"mse": 0.9}}, 1: {"a": {"accuracy": 0.87}, "b": {"mse": 1.1}}}
BAD = {0: {"a": {"accuracy": 0.78}, "b": {"mse": 1.2}}, 1: {"a": {"accuracy": 0.80}, "b": {"mse": 1.2}}}


def test_stat_is_the_mean_and_sample_std() -> None:
    summary = stat({0: 1.0, 1: 2.0, 2: 4.0})
    assert summary.mean == pytest.approx(7 / 3)
    assert summary.std == pytest.approx(
        math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    )
    assert summary.n == 3
    assert math.isnan(stat([5.0]).std) and stat([]) is None


def test_delta_m_on_seed_means_and_its_per_seed_spread(tmp_path: Path) -> None:
    make_sweep(tmp_path, {"x-bad": BAD, "x-good": GOOD}, BASELINES, [0, 1])
    report = build_report(collect(tmp_path))
    assert report.ranked_by == "Δm" and report.columns == [("a", "accuracy"), ("b", "mse")]
    good, bad = report.rows  # rank order
    assert (good.name, good.rank, good.best, bad.rank, bad.best) == ("x-good", 1, True, 2, False)
    # Seed means: good a 0.86, b 1.0; bad a 0.79, b 1.2; baselines a 0.81, b 1.1 (mse: lower is better).
    assert good.stats[("a", "accuracy")].mean == pytest.approx(0.86)
    assert good.stats[("a", "accuracy")].std == pytest.approx(0.02 / math.sqrt(2))
    assert good.task_delta["a"] == pytest.approx(100 * (0.86 - 0.81) / 0.81)
    assert good.task_delta["b"] == pytest.approx(100 * (1.1 - 1.0) / 1.1)
    assert good.delta_m == pytest.approx(50 * ((0.86 - 0.81) / 0.81 + (1.1 - 1.0) / 1.1))
    assert bad.delta_m == pytest.approx(50 * ((0.79 - 0.81) / 0.81 - (1.2 - 1.1) / 1.1))
    # Per seed: seed 0 against the seed-0 baselines, seed 1 against seed 1; sample std of the two.
    seed0 = 50 * ((0.85 - 0.80) / 0.80 + (1.0 - 0.9) / 1.0)
    seed1 = 50 * ((0.87 - 0.82) / 0.82 + (1.2 - 1.1) / 1.2)
    assert good.delta_m_std == pytest.approx(abs(seed0 - seed1) / math.sqrt(2))
    assert report.baseline.stats[("b", "mse")].mean == pytest.approx(1.1)


def test_ties_share_a_rank_and_are_all_best(tmp_path: Path) -> None:
    make_sweep(tmp_path, {"x-one": GOOD, "x-two": GOOD, "x-three": BAD}, BASELINES, [0, 1])
    report = build_report(collect(tmp_path))
    assert [(r.name, r.rank, r.best) for r in report.rows] == [
        ("x-one", 1, True),
        ("x-two", 1, True),
        ("x-three", 3, False),
    ]


def test_a_partial_sweep_reports_what_has_finished(tmp_path: Path) -> None:
    half = {0: GOOD[0]}
    make_sweep(tmp_path, {"x-half": half, "x-none": {}}, BASELINES, [0, 1])
    report = build_report(collect(tmp_path))
    first, last = report.rows
    assert (first.name, first.seeds, first.stats[("a", "accuracy")].n) == ("x-half", 1, 1)
    assert math.isnan(first.stats[("a", "accuracy")].std) and first.delta_m_std is None
    assert first.delta_m == pytest.approx(50 * ((0.85 - 0.81) / 0.81 + (1.1 - 0.9) / 1.1))
    assert (last.name, last.rank, last.delta_m, last.note) == ("x-none", None, None, "no finished run")


def test_without_baselines_the_ranking_is_by_test_mean(tmp_path: Path) -> None:
    means = {"x-bad": {0: 0.1, 1: 0.3}, "x-good": {0: 0.5, 1: 0.5}}
    make_sweep(tmp_path, {"x-bad": BAD, "x-good": GOOD}, None, [0, 1], means)
    report = build_report(collect(tmp_path))
    assert report.ranked_by == "test/mean" and report.baseline is None
    assert [(r.name, r.score) for r in report.rows] == [
        ("x-good", pytest.approx(0.5)),
        ("x-bad", pytest.approx(0.2)),
    ]
    assert all(r.delta_m is None for r in report.rows)


def test_several_metrics_per_task_are_averaged_within_the_task_first(tmp_path: Path) -> None:
    config = {0: {"a": {"accuracy": 0.9, "f1": 0.6}, "b": {"mse": 1.0}}}
    baselines = {"a": {0: {"accuracy": 0.8, "f1": 0.5}}, "b": {0: {"mse": 0.8}}}
    make_sweep(tmp_path, {"x-one": config}, baselines, [0])
    (row,) = build_report(collect(tmp_path, metrics=["accuracy", "f1", "mse"])).rows
    task_a = ((0.9 - 0.8) / 0.8 + (0.6 - 0.5) / 0.5) / 2
    task_b = -(1.0 - 0.8) / 0.8
    assert row.delta_m == pytest.approx(100 * (task_a + task_b) / 2)


def test_a_baseline_without_the_compared_metric_leaves_delta_m_missing_with_a_note(tmp_path: Path) -> None:
    make_sweep(tmp_path, {"x-one": GOOD}, {"a": BASELINES["a"]}, [0, 1])
    (row,) = build_report(collect(tmp_path)).rows
    assert row.delta_m is None and row.rank is None and "single-task baseline for task `b`" in row.note


def test_unknown_metric_names_are_rejected_with_the_available_ones(tmp_path: Path) -> None:
    make_sweep(tmp_path, {"x-one": GOOD}, BASELINES, [0, 1])
    with pytest.raises(
        ValueError, match=r"\['auroc'\] are in none of them; available: \['accuracy', 'mse'\]"
    ):
        collect(tmp_path, metrics=["auroc"])
    # A task without any named metric keeps its primary one.
    collected = collect(tmp_path, metrics=["accuracy"])
    assert collected.configurations[0].metrics == {"a": ["accuracy"], "b": ["mse"]}
