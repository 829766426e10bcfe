"""Pareto front: the points no other point beats on every objective (all maximised)."""

import numpy as np
import pytest

from mtl.report.pareto import pareto_front


def test_front_of_hand_made_points() -> None:
    points = np.array(
        [
            [1.0, 5.0],  # front: best second objective
            [3.0, 3.0],  # front
            [2.0, 2.0],  # dominated by [3, 3]
            [5.0, 1.0],  # front: best first objective
            [3.0, 1.0],  # dominated by [3, 3] (equal first, worse second)
            [3.0, 3.0],  # a duplicate of a front point stays on the front
        ]
    )
    assert pareto_front(points).tolist() == [True, True, False, True, False, True]


def test_one_point_and_one_objective() -> None:
    assert pareto_front(np.array([[0.3, 0.1]])).tolist() == [True]
    assert pareto_front(np.array([[1.0], [3.0], [3.0], [2.0]])).tolist() == [False, True, True, False]


def test_random_points_front_is_exactly_the_non_dominated_set() -> None:
    points = np.random.default_rng(0).normal(size=(40, 3))
    front = pareto_front(points)
    for i, p in enumerate(points):
        dominated = any(np.all(q >= p) and np.any(q > p) for q in points)
        assert front[i] == (not dominated)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="2-D array"):
        pareto_front(np.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        pareto_front(np.array([[np.nan, 1.0]]))
