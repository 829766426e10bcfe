"""MGDA: the min-norm point of the convex hull of the task gradients (Sener & Koltun, NeurIPS 2018)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from torch import Tensor

from mtl.balancing.aggregator import GradientAggregator, combine, gram_matrix

__all__ = ["MGDA", "min_norm_pair", "min_norm_point"]

Normalization = Literal["none", "l2", "loss", "loss+"]
_NORMALIZATIONS = ("none", "l2", "loss", "loss+")


def min_norm_pair(v11: float, v12: float, v22: float) -> float:
    """``gamma`` minimising ``||gamma v1 + (1 - gamma) v2||`` over [0, 1], from the inner products.

    The closed form of Sener & Koltun (Algorithm 1): ``gamma = clip((v2 - v1) . v2 / ||v1 - v2||^2, 0, 1)``.
    """
    denominator = v11 - 2.0 * v12 + v22
    if denominator <= 0.0:
        return 0.5 if v11 == v22 else float(v11 < v22)
    return float(np.clip((v22 - v12) / denominator, 0.0, 1.0))


def min_norm_point(gram: np.ndarray, max_iter: int = 1000, tol: float = 1e-10) -> np.ndarray:
    """Weights ``w`` on the simplex minimising ``||w @ G||^2 = w @ gram @ w``, from ``gram = G @ G.T``.

    T = 1: ``[1]``; T = 2: the closed form `min_norm_pair`; T > 2: the Frank-Wolfe solver of Sener &
    Koltun (Algorithm 2: start from the uniform weights, move towards the task whose gradient has the
    smallest inner product with the current point, exact line search by the two-vector closed form),
    with away steps (Lacoste-Julien & Jaggi, NeurIPS 2015) so that it converges linearly and can drop
    tasks from the support. Stops when the Frank-Wolfe duality gap, an upper bound on the excess
    squared norm, is below ``tol`` times the largest squared gradient norm.
    """
    T = gram.shape[0]
    if T == 1:
        return np.ones(1)
    if T == 2:
        gamma = min_norm_pair(gram[0, 0], gram[0, 1], gram[1, 1])
        return np.array([gamma, 1.0 - gamma])
    scale = float(np.max(np.diag(gram)))
    if scale <= 0.0:
        return np.full(T, 1.0 / T)
    M = gram / scale
    w = np.full(T, 1.0 / T)
    for _ in range(max_iter):
        grad = M @ w
        value = float(w @ grad)
        toward = int(np.argmin(grad))
        fw_gap = value - float(grad[toward])
        if fw_gap <= tol:
            break
        support = np.flatnonzero(w > 0.0)
        away = int(support[np.argmax(grad[support])])
        away_gap = float(grad[away]) - value
        direction = -w.copy()
        if fw_gap >= away_gap:
            direction[toward] += 1.0
            max_step = 1.0
        else:
            direction = -direction
            direction[away] -= 1.0
            max_step = w[away] / (1.0 - w[away]) if w[away] < 1.0 else np.inf
        curvature = float(direction @ M @ direction)
        slope = float(grad @ direction)
        step = max_step if curvature <= 0.0 else min(-slope / curvature, max_step)
        w = w + step * direction
        if step == max_step and fw_gap < away_gap:
            w[away] = 0.0
        w = np.clip(w, 0.0, None)
        w = w / w.sum()
    return w


def gradient_normalizers(
    gram: np.ndarray, losses: np.ndarray | None, normalization: Normalization
) -> np.ndarray:
    """Per-task divisors of the gradients, as in the authors' code (``"loss"`` needs the losses)."""
    norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
    if normalization == "none":
        divisors = np.ones_like(norms)
    elif normalization == "l2":
        divisors = norms
    else:
        if losses is None:
            raise ValueError(
                f"Expected `losses` for MGDA normalization {normalization!r}, but got None. "
                "Call the aggregator as mgda(G, losses) or use normalization='l2' or 'none'."
            )
        divisors = losses if normalization == "loss" else losses * norms
    return np.where(divisors > 0.0, divisors, 1.0)


class MGDA(GradientAggregator):
    """MGDA-UB (Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018).

    The direction is the min-norm element of the convex hull of the task gradients,
    ``d = sum_i w_i g_i`` with ``w`` on the simplex minimising ``||d||`` (`min_norm_point`): a common
    descent direction for all tasks unless the point is Pareto-stationary (then ``d = 0``). As in the
    authors' code, the weights may be computed on normalised gradients ``g_i / n_i`` (``"l2"``:
    ``n_i = ||g_i||``; ``"loss"``: ``n_i = L_i``; ``"loss+"``: ``n_i = L_i ||g_i||``; ``"none"``) and are
    then applied to the raw gradients (their training loop back-propagates ``sum_i w_i L_i``). The
    ``"loss"`` variants need ``losses`` [T] in the call. The paper applies MGDA to the gradients with
    respect to the shared representation (MGDA-UB); here ``G`` is whatever the engine passes.

    Scale: convex weights, so ``T`` identical gradients ``g`` give ``g``; orthogonal gradients of equal
    norm give their mean. In general the result is not the mean: it is shorter than every gradient.

    Args:
        normalization: ``"none"`` (default, the plain min-norm point), ``"l2"``, ``"loss"`` or ``"loss+"``.
        max_iter: Frank-Wolfe iterations at most (T > 2).
        tol: stopping tolerance on the (relative) duality gap.
    """

    representation = True  # MGDA-UB: the min-norm point of the representation gradients bounds the true one

    def __init__(
        self, normalization: Normalization = "none", max_iter: int = 1000, tol: float = 1e-10
    ) -> None:
        super().__init__()
        if normalization not in _NORMALIZATIONS:
            raise ValueError(
                f"Expected `normalization` to be one of {_NORMALIZATIONS}, but got {normalization!r}."
            )
        self.normalization = normalization
        self.max_iter = max_iter
        self.tol = tol

    def _aggregate(self, G: Tensor, losses: Tensor | None) -> Tensor:
        gram = gram_matrix(G)
        loss_values = None if losses is None else losses.detach().double().cpu().numpy()
        n = gradient_normalizers(gram, loss_values, self.normalization)
        weights = min_norm_point(gram / np.outer(n, n), self.max_iter, self.tol)
        self._set_weights(weights)
        return combine(weights, G)
