"""UW: uncertainty weighting with learnable homoscedastic log-variances (Kendall, Gal & Cipolla, CVPR 2018)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mtl.weighting.base import LossWeighting

__all__ = ["UW", "uncertainty_objective"]


def uncertainty_objective(losses: Tensor, log_variances: Tensor) -> Tensor:
    """``Σ_i L_i / (2 exp(s_i)) + s_i / 2`` with ``s_i = log sigma_i²``.

    The negative log-likelihood of a Gaussian with learnt noise ``sigma_i`` up to constants: the first
    term down-weights noisy tasks, the second keeps ``sigma_i`` from growing without bound. For a fixed
    ``L_i > 0`` it is minimised at ``exp(s_i) = L_i``.
    """
    return (0.5 * torch.exp(-log_variances) * losses + 0.5 * log_variances).sum()


class UW(LossWeighting):
    """Uncertainty weighting (Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh
    Losses for Scene Geometry and Semantics", CVPR 2018).

    Every task has a learnable log-variance ``s_i = log sigma_i²`` (an ``nn.Parameter`` [T], trained by
    the optimizer with the network) and the objective is `uncertainty_objective`,
    ``Σ_i L_i / (2 exp(s_i)) + s_i / 2``: the paper's Gaussian-likelihood (regression) form, applied to
    every task, as in LibMTL (Lin & Zhang, JMLR 2023) and most re-implementations. The paper's
    classification form ``L_i / sigma_i² + log sigma_i`` differs only by a factor 2 on the first term. The
    log-variance is learnt instead of ``sigma`` for numerical stability, as the paper recommends.
    ``weights`` are the effective loss weights ``1 / (2 exp(s_i))`` (1/2 at initialisation).

    Accepts any subset of tasks per step (the log-variances of the absent tasks get no gradient).

    Args:
        init_log_variance: initial ``s_i`` for every task (default 0, i.e. ``sigma_i = 1``).
        lr: learning rate of the log-variances (``None``: the heads' learning rate).
    """

    requires_all_tasks = False

    def __init__(self, init_log_variance: float = 0.0, lr: float | None = None) -> None:
        super().__init__(lr=lr)
        self.init_log_variance = float(init_log_variance)

    def build(self, num_tasks: int) -> None:
        self.log_variances = nn.Parameter(torch.full((num_tasks,), self.init_log_variance))

    def combine(self, losses: Tensor, step: int, tasks: Tensor | None, grad_norms: Tensor | None) -> Tensor:
        self._set_weights(0.5 * torch.exp(-self.log_variances))
        s = self.log_variances if tasks is None else self.log_variances[tasks]
        return uncertainty_objective(losses, s)
