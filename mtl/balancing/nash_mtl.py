"""Nash-MTL: multi-task learning as a bargaining game (Navon et al., ICML 2022)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from mtl.balancing.aggregator import GradientAggregator, combine, gram_matrix
from mtl.balancing.fairgrad import alpha_fair_weights

__all__ = ["NashMTL", "nash_weights"]


def nash_weights(
    gram: np.ndarray, *, normalize: bool = True, initial: np.ndarray | None = None, tol: float = 1e-10
) -> np.ndarray:
    """The Nash bargaining weights ``alpha > 0`` with ``(K alpha)_i = 1 / alpha_i``.

    ``K`` is ``gram = G @ G.T``, divided by its Frobenius norm when ``normalize`` (as in the authors'
    code, which then applies the weights to the raw gradients). Solved by damped Newton iterations on
    the equivalent convex problem ``min alpha^T K alpha / 2 - sum_i log alpha_i``
    (`mtl.balancing.fairgrad.alpha_fair_weights` with alpha-fairness 1).
    """
    if normalize:
        norm = float(np.linalg.norm(gram))
        if norm > 0.0:
            gram = gram / norm
    return alpha_fair_weights(gram, 1.0, initial=initial, tol=tol)


class NashMTL(GradientAggregator):
    """Nash-MTL (Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022).

    The update ``d = alpha @ G`` is the Nash bargaining solution among the tasks, characterised by
    ``G G^T alpha = 1 / alpha`` (element-wise), i.e. ``alpha_i (g_i . d) = 1`` for every task. The
    authors approximate it with a sequence of convex problems solved by cvxpy (20 iterations); this
    class solves the same condition to a relative residual of ``tol`` with damped Newton iterations
    on an equivalent convex problem (`nash_weights`), without any dependency. Also as in the
    authors' code: the Gram matrix is normalised by its Frobenius norm (``normalize``), the weights are
    recomputed every ``update_weights_every`` calls and reused in between, the previous weights
    warm-start the solver, and the result is clipped to the norm ``max_norm`` (they clip the shared
    parameters' gradient after the backward pass; ``None`` disables it). Stateful (last weights,
    call counter); `reset` clears them.

    Scale: method-defined. With ``normalize=True``, ``T`` identical gradients ``g`` give ``T g`` before
    clipping (then ``min(1, max_norm / ||T g||) T g``); with ``normalize=False`` they give
    ``sqrt(T) g / ||g||``. Tasks with a zero gradient get weight 0. ``weights`` are the effective
    coefficients, ``d = weights @ G``, clip included.

    ``max_norm`` keeps the authors' default of 1: it bounds the step of a method whose direction grows
    with the number of tasks (``T g``), at the price of making the update's length independent of
    the gradients' once they exceed it (set ``None`` to study the raw solution).

    Args:
        max_norm: clip the returned direction to this norm (authors' code: 1.0), or ``None``.
        update_weights_every: recompute the weights every this many calls (authors' code: 1).
        normalize: solve on the Frobenius-normalised Gram matrix (authors' code) or on the raw one
            (the paper's equation).
        tol: relative residual of the optimality condition at which the solver stops.
    """

    stateful = True

    def __init__(
        self,
        max_norm: float | None = 1.0,
        update_weights_every: int = 1,
        normalize: bool = True,
        tol: float = 1e-10,
    ) -> None:
        super().__init__()
        if max_norm is not None and max_norm <= 0:
            raise ValueError(f"Expected `max_norm` to be > 0 or None, but got {max_norm}.")
        if update_weights_every < 1:
            raise ValueError(f"Expected `update_weights_every` to be >= 1, but got {update_weights_every}.")
        self.max_norm = max_norm
        self.update_weights_every = update_weights_every
        self.normalize = normalize
        self.tol = tol
        self._calls = 0
        self._alpha: np.ndarray | None = None

    def reset(self) -> None:
        super().reset()
        self._calls = 0
        self._alpha = None

    def _aggregate(self, G: Tensor, losses: Tensor | None) -> Tensor:
        self._check_num_tasks(None if self._alpha is None else self._alpha.shape[0], G.shape[0])
        if self._alpha is None or self._calls % self.update_weights_every == 0:
            self._alpha = nash_weights(
                gram_matrix(G), normalize=self.normalize, initial=self._alpha, tol=self.tol
            )
        self._calls += 1
        direction = combine(self._alpha, G)
        clip = 1.0
        if self.max_norm is not None:
            norm = float(torch.linalg.vector_norm(direction.float()))
            clip = min(1.0, self.max_norm / (norm + 1e-6))
        self._set_weights(self._alpha * clip)
        return direction * clip
