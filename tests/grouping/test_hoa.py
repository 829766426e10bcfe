"""HOA (Standley et al.): group results from hand-made pairwise numbers, the gains, reading the runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mtl.delta_m import task_deltas
from mtl.grouping.hoa import (
    MissingPairwiseRuns,
    PairwiseResults,
    approximate,
    hoa_scores,
    read_pairwise_results,
)
from mtl.grouping.selection import select_groups
from mtl.grouping.training import run_name

#: a, b: accuracy (higher is better); c: mse (lower is better).
DIRECTIONS = {"a": {"acc": True}, "b": {"acc": True}, "c": {"mse": False}}
SINGLE = {"a": {"acc": 0.80}, "b": {"acc": 0.50}, "c": {"mse": 2.0}}
PAIRS = {
    ("a", "b"): {"a": {"acc": 0.88}, "b": {"acc": 0.60}},
    ("a", "c"): {"a": {"acc": 0.72}, "c": {"mse": 2.5}},
    ("b", "c"): {"b": {"acc": 0.45}, "c": {"mse": 1.0}},
}


def results() -> PairwiseResults:
    return PairwiseResults(("a", "b", "c"), SINGLE, PAIRS, DIRECTIONS)


def test_group_results_average_the_pairwise_runs() -> None:
    group = approximate(results(), ["a", "b", "c"])
    assert group["a"]["acc"] == pytest.approx((0.88 + 0.72) / 2)
    assert group["b"]["acc"] == pytest.approx((0.60 + 0.45) / 2)
    assert group["c"]["mse"] == pytest.approx((2.5 + 1.0) / 2)
    assert approximate(results(), ["b", "a"]) == {"b": {"acc": 0.60}, "a": {"acc": 0.88}}  # pairs: exact
    assert approximate(results(), ["c"]) == {"c": {"mse": 2.0}}  # alone: the single-task run


def test_gains_over_single_task_and_their_sign() -> None:
    """``M[i, j]``: task j's gain (%) from training with i; lower-is-better metrics flip the sign."""
    scores = hoa_scores(results())
    expected = np.array(
        [
            [0.0, 100 * (0.60 - 0.50) / 0.50, -100 * (2.5 - 2.0) / 2.0],
            [100 * (0.88 - 0.80) / 0.80, 0.0, -100 * (1.0 - 2.0) / 2.0],
            [100 * (0.72 - 0.80) / 0.80, 100 * (0.45 - 0.50) / 0.50, 0.0],
        ]
    )
    np.testing.assert_allclose(scores.matrix, expected)
    assert scores.alone_scores().tolist() == [0.0, 0.0, 0.0]


def test_group_scores_are_the_gains_of_the_approximated_metrics() -> None:
    """Linearity: the mean of the pairwise gains is the gain of HOA's averaged metrics."""
    scores = hoa_scores(results())
    group = approximate(results(), ["a", "b", "c"])
    gains = task_deltas(group, SINGLE, DIRECTIONS)
    np.testing.assert_allclose(
        scores.member_scores([0, 1, 2]), [gains["a"], gains["b"], gains["c"]], atol=1e-12
    )


def test_selection_on_hoa_gains() -> None:
    """Gains (%): with a, b gains 20 and a 10; with b, c gains 50 but b loses 10; with a, c loses 25.

    One network: a (10 - 10) / 2 = 0, b (20 - 10) / 2 = 5, c (-25 + 50) / 2 = 12.5. Two disjoint: {a} +
    {b, c} = 0 - 10 + 50 = 40 beats {a, b} + {c} = 30. Two overlapping: {a, b} serves a and b, {b, c}
    serves c: 10 + 20 + 50 = 80, every task's best possible gain."""
    scores = hoa_scores(results())
    one = select_groups(scores, 1)
    assert one.groups == (("a", "b", "c"),) and one.score == pytest.approx(0.0 + 5.0 + 12.5)
    two = select_groups(scores, 2, disjoint=True)
    assert two.groups == (("a",), ("b", "c")) and two.score == pytest.approx(40.0)
    overlapping = select_groups(scores, 2)
    assert overlapping.groups == (("a", "b"), ("b", "c")) and overlapping.score == pytest.approx(80.0)
    assert overlapping.serving == {"a": 0, "b": 0, "c": 1}


def write_run(
    directory: Path, name: str, seed: int, metrics: dict[str, float], directions: dict[str, bool]
) -> None:
    path = directory / name / f"seed{seed}"
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps({"metrics": metrics, "higher_is_better": directions}))


def write_pairwise(directory: Path, seeds: int = 1, shift: float = 0.0) -> None:
    """The fixture above as results.json files: the values as validation metrics (what HOA reads), with
    seed k's shifted by ``k * shift``, and test metrics that differ (HOA must not read them)."""
    for seed in range(seeds):
        delta = seed * shift
        for members in [(t,) for t in SINGLE] + list(PAIRS):
            values = {t: SINGLE[t] for t in members} if len(members) == 1 else PAIRS[members]
            flat, directions = {}, {}
            for split, offset in (("val", delta), ("test", delta + 0.25)):
                for t in members:
                    for m, v in values[t].items():
                        flat[f"{split}/{t}/{m}"], directions[f"{split}/{t}/{m}"] = (
                            v + offset,
                            DIRECTIONS[t][m],
                        )
                    flat[f"{split}/{t}/loss"], directions[f"{split}/{t}/loss"] = (
                        9.0,
                        False,
                    )  # no quality metric
            write_run(directory, run_name(list(members)), seed, flat, directions)


def test_read_pairwise_runs_and_average_seeds(tmp_path: Path) -> None:
    write_pairwise(tmp_path, seeds=2, shift=0.1)
    read = read_pairwise_results(tmp_path, ["a", "b", "c"], seeds=2)
    assert read.single["a"] == {"acc": pytest.approx(0.85)}  # (0.80 + 0.90) / 2
    assert read.pair("c", "b") == {"acc": pytest.approx(0.50)}  # b trained with c: (0.45 + 0.55) / 2
    assert read.higher_is_better == DIRECTIONS


def test_missing_pairwise_runs_are_named_with_the_fix(tmp_path: Path) -> None:
    write_pairwise(tmp_path)
    (tmp_path / "b+c" / "seed0" / "results.json").unlink()
    with pytest.raises(
        MissingPairwiseRuns, match=r"1 are missing: b\+c/seed0.*--method hoa --train.*--pairwise"
    ):
        read_pairwise_results(tmp_path, ["a", "b", "c"])
    with pytest.raises(MissingPairwiseRuns, match=r"seed1"):
        read_pairwise_results(tmp_path, ["a", "b"], seeds=2)
    with pytest.raises(MissingPairwiseRuns, match=r"none for \['c', 'a\+c', 'b\+c'\]"):
        PairwiseResults(("a", "b", "c"), {"a": {}, "b": {}}, {("a", "b"): PAIRS[("a", "b")]}, DIRECTIONS)
