"""GLS: the geometric loss strategy, the geometric mean of the task losses (Chennupati et al., CVPRW 2019)."""

from __future__ import annotations

import torch
from torch import Tensor

from mtl.balancing.dbmtl import log_transform_losses
from mtl.weighting.base import LossWeighting

__all__ = ["GLS", "geometric_mean_loss"]


def geometric_mean_loss(losses: Tensor, eps: float = 1e-8) -> Tensor:
    """``(Π_i L_i)^{1/T}``, computed as ``exp(mean_i log(L_i + eps))`` so that the product of many
    small or large losses neither underflows nor overflows.

    Its gradient is ``∂G/∂L_i = G / (T (L_i + eps))``: every task's gradient is divided by its own
    loss, which removes the tasks' loss scales.
    """
    return torch.exp(log_transform_losses(losses, eps).mean())


class GLS(LossWeighting):
    """Geometric loss strategy (Chennupati, Sistu, Yogamani & Rawashdeh, "MultiNet++: Multi-Stream
    Feature Aggregation and Geometric Loss Strategy for Multi-Task Learning", CVPR Workshops 2019).

    The objective is the geometric mean of the task losses, ``(Π_i L_i)^{1/T}`` (`geometric_mean_loss`),
    instead of their sum: it is invariant to rescaling one task's loss up to a constant factor, so
    no task dominates by its scale. It is not a weighted sum; ``weights`` are its effective
    weights ``∂G/∂L_i = G / (T L_i)``, the weights of the task gradients in the update.

    Needs every task's loss at every step, and positive losses (``eps`` keeps a loss of exactly 0
    finite; a negative loss gives NaN).

    Args:
        eps: added to each loss inside the logarithm (default 1e-8).
    """

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        if not eps >= 0:
            raise ValueError(f"Expected `eps` to be >= 0, but got {eps}. Use a small value such as 1e-8.")
        self.eps = float(eps)

    def combine(self, losses: Tensor, step: int, tasks: Tensor | None, grad_norms: Tensor | None) -> Tensor:
        objective = geometric_mean_loss(losses, self.eps)
        self._set_weights(objective.detach() / (losses.numel() * (losses.detach() + self.eps)))
        return objective
