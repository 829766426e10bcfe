"""DB-MTL: dual-balancing multi-task learning (Lin et al., 2023), its gradient-magnitude part."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from mtl.balancing.aggregator import GradientAggregator

__all__ = ["DBMTL", "balance_magnitudes", "log_transform_losses"]


def log_transform_losses(losses: Tensor, eps: float = 1e-8) -> Tensor:
    """DB-MTL's loss-scale balancing: ``log(L_t + eps)`` per task (differentiable).

    Back-propagating ``log L_t`` instead of ``L_t`` divides task ``t``'s gradient by ``L_t``, which
    makes the method invariant to the scale of each loss. The engine applies it to the task losses
    before computing the per-task gradients that `DBMTL` then balances.
    """
    return torch.log(losses + eps)


def balance_magnitudes(G: Tensor, eps: float = 1e-8) -> tuple[Tensor, Tensor]:
    """``(weights, G_balanced)``: every row rescaled to the largest row norm, ``w_t = max_k ||g_k|| / ||g_t||``."""
    norms = torch.linalg.vector_norm(G, dim=1)
    weights = norms.max() / (norms + eps)
    return weights, weights.unsqueeze(1) * G


class DBMTL(GradientAggregator):
    """DB-MTL (Lin et al., "Dual-Balancing for Multi-Task Learning", arXiv:2308.12029, 2023).

    DB-MTL balances the loss scales with a log transform (`log_transform_losses`, which the engine
    applies through `transform_losses` before taking the per-task gradients; called directly on a
    ``G``, this aggregator expects the gradients of the log-losses) and the gradient
    magnitudes, covered here: it keeps an exponential moving average of every task's gradient,
    ``g_hat_t <- beta_k g_hat_t + (1 - beta_k) g_t`` with ``beta_k = beta / k^beta_sigma`` at call ``k``
    (``g_hat`` starts at 0), and rescales every average to the largest norm,
    ``d = sum_t (max_k ||g_hat_k|| / ||g_hat_t||) g_hat_t``. Stateful (the averages [T, D], in ``G``'s
    dtype and device, and the call counter); `reset` clears them. ``weights`` are the scales applied
    to the moving averages (not to the rows of the current ``G``).

    Scale: ``reduction="mean"`` (default) divides that sum by ``T``; the paper sums
    (``reduction="sum"``). ``T`` identical gradients ``g`` give ``(1 - beta) g`` at the first call (the
    moving average starts at 0) and approach ``g`` as the average warms up.

    Args:
        beta: EMA coefficient (default 0.9, that of the authors' LibMTL).
        beta_sigma: decay exponent of ``beta`` over the calls (default 0, constant ``beta``).
        reduction: ``"mean"`` or ``"sum"`` of the rescaled averages.
    """

    stateful = True
    weighted = False  # its weights scale the moving averages, not the rows of the current G

    def __init__(
        self, beta: float = 0.9, beta_sigma: float = 0.0, reduction: Literal["mean", "sum"] = "mean"
    ) -> None:
        super().__init__()
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"Expected `beta` to be in [0, 1), but got {beta}.")
        if beta_sigma < 0:
            raise ValueError(f"Expected `beta_sigma` to be >= 0, but got {beta_sigma}.")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"Expected `reduction` to be 'mean' or 'sum', but got {reduction!r}.")
        self.beta = beta
        self.beta_sigma = beta_sigma
        self.reduction = reduction
        self.step = 0
        self._average: Tensor | None = None

    def reset(self) -> None:
        super().reset()
        self.step = 0
        self._average = None

    def transform_losses(self, losses: Tensor) -> Tensor:
        return log_transform_losses(losses)

    def _aggregate(self, G: Tensor, losses: Tensor | None) -> Tensor:
        if self._average is not None and self._average.shape != G.shape:
            raise ValueError(
                f"Expected `G` to have shape {tuple(self._average.shape)} (that of the previous calls), "
                f"but got {tuple(G.shape)}. Call DBMTL.reset() when the tasks or the parameters change."
            )
        average = torch.zeros_like(G) if self._average is None else self._average.to(G)
        self.step += 1
        beta = self.beta / self.step**self.beta_sigma
        self._average = beta * average + (1.0 - beta) * G
        weights, balanced = balance_magnitudes(self._average)
        direction = balanced.sum(dim=0)
        if self.reduction == "mean":
            weights, direction = weights / G.shape[0], direction / G.shape[0]
        self._set_weights(weights)
        return direction
