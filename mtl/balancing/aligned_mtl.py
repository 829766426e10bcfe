"""Aligned-MTL: independent component alignment (Senushkin et al., CVPR 2023)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

from mtl.balancing.aggregator import GradientAggregator, combine, gram_matrix

__all__ = ["AlignedMTL", "alignment_matrix"]

ScaleMode = Literal["min", "median", "rmse"]
_SCALE_MODES = ("min", "median", "rmse")


def alignment_matrix(
    gram: np.ndarray, scale_mode: ScaleMode = "min", rtol: float | None = None
) -> np.ndarray:
    """The matrix ``B`` [T, T] such that the aligned gradients are ``G' = B @ G``, from ``gram = G @ G.T``.

    With ``gram = V diag(lambda) V^T`` restricted to its ``r`` non-negligible eigenvalues (those above
    ``rtol * max(lambda)``, default ``T * eps(float32)``; the aggregator uses the eps of ``G``'s precision), ``B = sigma V diag(lambda)^{-1/2} V^T``:
    the singular values of ``G'`` all equal ``sigma`` (``G' G'^T = sigma^2 V V^T``, ``sigma^2 I`` at full
    rank, i.e. condition number 1). ``sigma`` is the smallest singular value of ``G`` (``"min"``, the
    paper's choice), their median (``"median"``) or their root mean square (``"rmse"``).
    """
    T = gram.shape[0]
    eigenvalues, eigenvectors = np.linalg.eigh(gram)
    largest = float(eigenvalues.max())
    if largest <= 0.0:
        return np.zeros((T, T))
    threshold = largest * (T * float(np.finfo(np.float32).eps) if rtol is None else rtol)
    keep = eigenvalues > threshold
    eigenvalues, eigenvectors = eigenvalues[keep], eigenvectors[:, keep]
    if scale_mode == "min":
        sigma_sq = float(eigenvalues.min())
    elif scale_mode == "median":
        sigma_sq = float(np.median(eigenvalues))
    else:
        sigma_sq = float(eigenvalues.mean())
    return np.sqrt(sigma_sq) * (eigenvectors / np.sqrt(eigenvalues)) @ eigenvectors.T


class AlignedMTL(GradientAggregator):
    """Aligned-MTL (Senushkin et al., "Independent Component Alignment for Multi-Task Learning", CVPR 2023).

    Replaces the task gradients by the closest (in the Procrustes sense) set of orthogonal vectors with
    equal norms, ``G' = B G`` with ``B`` from the eigendecomposition of the Gram matrix
    (`alignment_matrix`): the linear system of aligned gradients has condition number 1, which
    removes both the conflicts and the dominance of large gradients. The update combines the aligned
    gradients with equal task weights. In rank-deficient cases only the non-negligible eigen-directions
    are kept (as in the authors' code).

    Scale: ``reduction="mean"`` (default) returns ``mean_i g'_i`` (``T`` identical gradients ``g`` give
    ``g`` with ``scale_mode="min"``); the paper and its code sum the aligned gradients (``reduction="sum"``).
    The aligned gradients' norm follows the smallest singular value of ``G``, not the mean gradient.
    ``weights`` are the per-task coefficients of ``d = weights @ G``.

    Args:
        scale_mode: ``"min"`` (paper), ``"median"`` or ``"rmse"``: which singular value sets the scale.
        reduction: ``"mean"`` or ``"sum"`` of the aligned gradients.

    The paper also derives an upper-bound variant, Aligned-MTL-UB, on the gradients with respect to
    the shared representation (the engine's ``representation`` option).
    """

    representation = True

    def __init__(self, scale_mode: ScaleMode = "min", reduction: Literal["mean", "sum"] = "mean") -> None:
        super().__init__()
        if scale_mode not in _SCALE_MODES:
            raise ValueError(f"Expected `scale_mode` to be one of {_SCALE_MODES}, but got {scale_mode!r}.")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"Expected `reduction` to be 'mean' or 'sum', but got {reduction!r}.")
        self.scale_mode = scale_mode
        self.reduction = reduction

    def _aggregate(self, G: Tensor, losses: Tensor | None) -> Tensor:
        precision = torch.float64 if G.dtype == torch.float64 else torch.float32
        rtol = G.shape[0] * torch.finfo(precision).eps
        B = alignment_matrix(gram_matrix(G), self.scale_mode, rtol)
        weights = B.sum(axis=0)
        if self.reduction == "mean":
            weights = weights / G.shape[0]
        self._set_weights(weights)
        return combine(weights, G)
