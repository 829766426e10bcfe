"""Hard and soft clusterings of task feature vectors: k-means, then fuzzy c-means memberships.

STG-MTL (Sherif et al., 2023) clusters the tasks' data-map vectors with k-means and turns the k-means
centroids into soft memberships with the fuzzy c-means membership equation (Bezdek, "Pattern
Recognition with Fuzzy Objective Function Algorithms", 1981):

    u_ic = 1 / Σ_l (d_ic / d_il)^(2 / (m - 1)),   d_ic = ||x_i - c_c||,   m > 1 the fuzziness index,

so that every row sums to 1, a task at a centroid belongs to it alone, and ``m -> 1`` tends to the
hard k-means assignment. It is evaluated as a softmax over ``-(2 / (m - 1)) log d_ic``, which stays
finite for the small ``m`` the paper favours (its implementation defaults to ``m = 1.07``, an
exponent near 29).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["fuzzy_memberships", "kmeans"]


def _check_points(points: Tensor, k: int | None = None) -> Tensor:
    """``points`` as float64 on the CPU, after checking their shape and (if given) ``k``."""
    if points.dim() != 2 or points.shape[0] < 1:
        raise ValueError(f"Expected points of shape [n, d] with n >= 1, but got {tuple(points.shape)}.")
    if k is None:
        return points.detach().double().cpu()
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= points.shape[0]:
        raise ValueError(
            f"Expected `k` to be a number of clusters in [1, {points.shape[0]}] (at most one per task), "
            f"but got {k!r}."
        )
    return points.detach().double().cpu()


def kmeans(points: Tensor, k: int, seed: int = 0, n_init: int = 10) -> tuple[Tensor, Tensor]:
    """k-means (Lloyd's algorithm with k-means++ seeding, best of ``n_init`` starts, scikit-learn).

    Returns ``(centroids [k, d], labels [n])`` (float64, int64), deterministic under ``seed``.
    """
    points = _check_points(points, k)
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(points.numpy())
    return torch.from_numpy(model.cluster_centers_).double(), torch.from_numpy(model.labels_).long()


def fuzzy_memberships(points: Tensor, centroids: Tensor, fuzziness: float = 1.07) -> Tensor:
    """``U`` ``[n, k]``: the fuzzy c-means membership of each point in each centroid's cluster.

    ``u_ic = d_ic^(-p) / Σ_l d_il^(-p)`` with ``p = 2 / (m - 1)`` and ``m`` = ``fuzziness`` (> 1).
    A point that coincides with one or more centroids splits its membership equally among them.
    """
    if not fuzziness > 1:
        raise ValueError(
            f"Expected `fuzziness` (the fuzzy c-means exponent m) to be > 1, but got {fuzziness}. Values "
            "near 1 give nearly hard memberships; 2 is the common default of fuzzy c-means."
        )
    points = _check_points(points)
    centroids = centroids.detach().double().cpu()
    if centroids.dim() != 2 or centroids.shape[1] != points.shape[1]:
        raise ValueError(
            f"Expected centroids of shape [k, {points.shape[1]}], but got {tuple(centroids.shape)}."
        )
    distance = torch.cdist(points, centroids)
    logits = -(2.0 / (fuzziness - 1.0)) * distance.log()
    at_centroid = distance == 0
    hit = at_centroid.any(dim=1, keepdim=True)
    logits = torch.where(hit, torch.where(at_centroid, 0.0, float("-inf")), logits)
    return logits.softmax(dim=1)
