"""IMTL-L: the loss-balance part of impartial multi-task learning (Liu et al., ICLR 2021)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mtl.weighting.base import LossWeighting

__all__ = ["IMTLL", "imtl_l_objective"]


def imtl_l_objective(losses: Tensor, log_scales: Tensor) -> Tensor:
    """``Σ_i exp(s_i) L_i - s_i``.

    The ``- s_i`` term keeps the scales from collapsing to zero; for a fixed ``L_i > 0`` each term is
    minimised at ``exp(s_i) L_i = 1``, so the scaled losses are driven to a common value of 1.
    """
    return (torch.exp(log_scales) * losses - log_scales).sum()


class IMTLL(LossWeighting):
    """IMTL-L (Liu, Li, Kuang, Xue, Chen, Yang, Liao & Zhang, "Towards Impartial Multi-task Learning",
    ICLR 2021), the loss-balance half of IMTL.

    Every task's loss is scaled by ``exp(s_i)`` with a learnable ``s_i`` (an ``nn.Parameter`` [T],
    initialised at 0 and trained by the optimizer with the network) and the objective is
    `imtl_l_objective`, ``Σ_i exp(s_i) L_i - s_i``. The paper learns ``s`` by gradient descent on this
    objective, which makes the scaled losses equal (``exp(s_i) L_i → 1``), i.e. every task's loss
    is treated as if it had the same scale. (The gradient half, IMTL-G, is
    `mtl.balancing.IMTLG`.) ``weights`` are ``exp(s_i)``.

    Accepts any subset of tasks per step (the scales of the absent tasks get no gradient).

    Args:
        lr: learning rate of the scales (``None``: the heads' learning rate).
    """

    requires_all_tasks = False

    def build(self, num_tasks: int) -> None:
        self.log_scales = nn.Parameter(torch.zeros(num_tasks))

    def combine(self, losses: Tensor, step: int, tasks: Tensor | None, grad_norms: Tensor | None) -> Tensor:
        self._set_weights(torch.exp(self.log_scales))
        s = self.log_scales if tasks is None else self.log_scales[tasks]
        return imtl_l_objective(losses, s)
