"""Pareto optimality of multi-task results: the configurations no other one beats on every task."""

from __future__ import annotations

import numpy as np

__all__ = ["pareto_front"]


def pareto_front(points: np.ndarray) -> np.ndarray:
    """Which rows of ``points`` ``[N, D]`` are Pareto-optimal when every column is to be maximised.

    Row ``i`` is dominated when some row ``j`` is at least as good in every column and strictly better
    in one; the front is the rows that are not dominated. Equal rows do not dominate each other, so
    duplicates on the front are all on it. Negate lower-is-better columns before calling.
    """
    points = np.asarray(points, dtype=float)
    if points.ndim != 2:
        raise ValueError(f"Expected `points` to be a 2-D array [N, D], but got shape {points.shape}.")
    if not np.isfinite(points).all():
        raise ValueError("Expected `points` to be finite, but got NaN or infinite values.")
    at_least = (points[None, :, :] >= points[:, None, :]).all(axis=2)  # [i, j]: j >= i everywhere
    better = (points[None, :, :] > points[:, None, :]).any(axis=2)  # [i, j]: j > i somewhere
    return ~(at_least & better).any(axis=1)
