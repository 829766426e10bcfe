"""RLW: random loss weighting, fresh random weights at every step (Lin et al., TMLR 2022)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from mtl.weighting.base import LossWeighting

__all__ = ["RLW", "random_loss_weights"]


def random_loss_weights(num_tasks: int, seed: int, step: int) -> Tensor:
    """``softmax(z)`` with ``z ~ N(0, I_T)`` drawn from a CPU generator seeded by ``(seed, step)``.

    The weights sum to 1. The generator's seed is derived from the pair with NumPy's
    ``SeedSequence`` (well-mixed, so nearby steps and seeds give unrelated draws), on the CPU, so
    every process and device draws the same weights for the same pair.
    """
    state = np.random.SeedSequence([seed, step]).generate_state(1, dtype=np.uint64)[0]
    generator = torch.Generator().manual_seed(int(state))
    return torch.softmax(torch.randn(num_tasks, generator=generator), dim=0)


class RLW(LossWeighting):
    """Random loss weighting (Lin, Ye, Zhang & Tsang, "Reasonable Effectiveness of Random Weighting:
    A Litmus Test for Multi-Task Learning", TMLR 2022).

    At every step the weights are redrawn as ``w = softmax(z)``, ``z ~ N(0, I)`` (the paper's
    default distribution; it also studies uniform, Dirichlet and Bernoulli draws, which are not
    offered here) and the objective is ``Σ_i w_i L_i``. The weights sum to 1, as in the paper, so
    the objective is on the scale of the *mean* task loss (`EW`'s is the sum). The draw comes from a
    generator seeded by ``(seed, step)`` (`random_loss_weights`): every DDP rank draws the same
    weights at the same global step, and a resumed run draws what the uninterrupted run would have.

    Accepts any subset of tasks per step (an extension of the paper, whose tasks are all present):
    the weights are drawn for all ``T`` tasks and the present tasks' entries are used.

    Args:
        seed: the seed combined with the step (default 0).
    """

    requires_all_tasks = False

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"Expected `seed` to be a non-negative integer, but got {seed!r}.")
        self.seed = seed

    def combine(self, losses: Tensor, step: int, tasks: Tensor | None, grad_norms: Tensor | None) -> Tensor:
        if step < 0:
            raise ValueError(f"Expected `step` to be >= 0 (the global training step), but got {step}.")
        weights = random_loss_weights(self.num_tasks, self.seed, step)
        self._set_weights(weights)
        weights = weights.to(device=losses.device, dtype=losses.dtype)
        if tasks is not None:
            weights = weights[tasks]
        return (weights * losses).sum()
