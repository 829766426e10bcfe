"""EW: equal weighting, the baseline every loss-weighting method is compared with."""

from __future__ import annotations

import torch
from torch import Tensor

from mtl.weighting.base import LossWeighting

__all__ = ["EW"]


class EW(LossWeighting):
    """Equal weighting: the objective is ``Σ_t L_t`` (the plain multi-task sum).

    The reference point of the loss-weighting literature (e.g. LibMTL, Lin & Zhang, JMLR 2023, "EW").
    Accepts any subset of tasks per step. ``weights`` are 1 for every task. No hyper-parameters.
    """

    requires_all_tasks = False

    def combine(self, losses: Tensor, step: int, tasks: Tensor | None, grad_norms: Tensor | None) -> Tensor:
        self._set_weights(torch.ones(self.num_tasks))
        return losses.sum()
