"""IMTL-G: impartial gradient balancing (Liu et al., ICLR 2021)."""

from __future__ import annotations

import numpy as np
from torch import Tensor

from mtl.balancing.aggregator import GradientAggregator, combine, gram_matrix

__all__ = ["IMTLG", "imtlg_weights"]


def imtlg_weights(gram: np.ndarray) -> np.ndarray:
    """IMTL-G's closed-form weights ``alpha`` (summing to 1) from ``gram = G @ G.T``.

    With ``u_i = g_i / ||g_i||``, ``D = [g_1 - g_2, ..., g_1 - g_T]`` and ``U = [u_1 - u_2, ..., u_1 - u_T]``
    (rows), the paper's solution is ``alpha_{2:T} = g_1 U^T (D U^T)^{-1}``, ``alpha_1 = 1 - sum alpha_{2:T}``,
    which makes ``d = alpha @ G`` have the same projection onto every ``u_i``. All the products are
    entries of ``P = G @ U_all^T = gram / ||g_j||`` (column-wise), so only the Gram matrix is needed.
    A singular ``D U^T`` (e.g. identical or linearly dependent gradients) is handled with the
    pseudo-inverse; zero gradients get a zero unit vector.
    """
    T = gram.shape[0]
    if T == 1:
        return np.ones(1)
    norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
    scale = float(norms.max())
    if scale <= 0.0:
        return np.full(T, 1.0 / T)
    inv_norms = np.where(norms > 1e-12 * scale, 1.0 / np.where(norms > 0.0, norms, 1.0), 0.0)
    P = gram * inv_norms[None, :] / scale  # P[a, b] = g_a . u_b (divided by a common scale)
    g1_U = P[0, 0] - P[0, 1:]
    D_U = P[0, 0] - P[0, 1:][None, :] - P[1:, 0][:, None] + P[1:, 1:]
    # Solve x (D U^T) = g1 U^T, i.e. (D U^T)^T x^T = (g1 U^T)^T.
    rest = np.linalg.lstsq(D_U.T, g1_U, rcond=None)[0]
    return np.concatenate([[1.0 - rest.sum()], rest])


class IMTLG(GradientAggregator):
    """IMTL-G (Liu et al., "Towards Impartial Multi-task Learning", ICLR 2021), the gradient part of IMTL.

    Finds weights ``alpha`` with ``sum(alpha) = 1`` such that the aggregated gradient ``d = alpha @ G``
    has equal projections onto all unit task gradients, ``d . u_i = d . u_j`` (closed form,
    `imtlg_weights`). The loss-scale part of IMTL (IMTL-L, learnable loss scales) is a loss transform
    and is not covered here. The direction of ``d`` is invariant to rescaling any task's gradient
    (for linearly independent gradients); its length is not.

    Scale: affine weights, so ``T`` identical gradients ``g`` give ``g``.

    The paper computes the weights from the gradients with respect to the shared representation
    (the engine's ``representation`` option) to save computation.
    """

    representation = True

    def _aggregate(self, G: Tensor, losses: Tensor | None) -> Tensor:
        weights = imtlg_weights(gram_matrix(G))
        self._set_weights(weights)
        return combine(weights, G)
