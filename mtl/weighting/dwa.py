"""DWA: dynamic weight average over epoch-mean loss ratios (Liu, Johns & Davison, CVPR 2019)."""

from __future__ import annotations

import torch
from torch import Tensor

from mtl.weighting.base import LossWeighting
from mtl.weighting.epoch_losses import EpochLossMeans

__all__ = ["DWA", "dwa_weights"]


def dwa_weights(ratios: Tensor, temperature: float) -> Tensor:
    """``T · softmax(r / τ)``: weights summing to ``T`` that favour the tasks whose loss fell least.

    ``ratios`` [T] are ``L_i(t-1) / L_i(t-2)``; equal ratios give every task weight 1.
    """
    return ratios.numel() * torch.softmax(ratios / temperature, dim=0)


class DWA(LossWeighting):
    """Dynamic Weight Average (Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention",
    CVPR 2019).

    In epoch ``t`` task ``i`` gets the weight ``w_i(t) = T · softmax_i(r(t-1) / τ)`` (`dwa_weights`)
    with ``r_i(t-1) = L_i(t-1) / L_i(t-2)``, the ratio of its *epoch-average* training losses of
    the two previous epochs: a task whose loss decreases slowly gets a larger weight. The weights
    are 1 in the first two epochs, as in the paper. The objective is ``Σ_i w_i L_i`` (weights sum to
    ``T``, like `EW`'s).

    The epoch means are accumulated from the (detached) losses passed to ``forward``
    (`EpochLossMeans`) and closed in `epoch_end`, where one ``reduce`` call averages the sums and
    counts over DDP ranks so that every rank keeps the same history. The last two epoch means are
    the buffer ``history`` [2, T] (row 0: ``L(t-1)``, row 1: ``L(t-2)``), checkpointed with the
    partial sums of the current epoch.

    Accepts any subset of tasks per step (an extension of the paper, whose tasks are all present):
    a task's epoch mean is taken over the steps that carried it, an epoch without it leaves its
    history unchanged, and a task with fewer than two epoch means gets the neutral ratio 1.

    Args:
        temperature: the softness ``τ`` of the weights (default 2, the paper's; large ``τ`` gives
            equal weights).
    """

    requires_all_tasks = False
    history: Tensor

    def __init__(self, temperature: float = 2.0) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(
                f"Expected `temperature` to be > 0, but got {temperature}. The paper uses 2; larger "
                "values give more equal weights."
            )
        self.temperature = float(temperature)

    def build(self, num_tasks: int) -> None:
        self.epoch_losses = EpochLossMeans(num_tasks)
        self.register_buffer("history", torch.full((2, num_tasks), float("nan")))

    def current_weights(self) -> Tensor:
        """The weights [T] of the current epoch."""
        ratios = self.history[0] / self.history[1]
        # A task without two epoch means (NaN), or with a zero mean (inf), keeps the neutral ratio 1.
        ratios = torch.where(torch.isfinite(ratios), ratios, 1.0)
        return dwa_weights(ratios, self.temperature)

    def combine(self, losses: Tensor, step: int, tasks: Tensor | None, grad_norms: Tensor | None) -> Tensor:
        self.epoch_losses.add(losses, tasks)
        weights = self.current_weights()
        self._set_weights(weights)
        if tasks is not None:
            weights = weights[tasks]
        return (weights * losses).sum()

    def epoch_end(self) -> None:
        means = self.epoch_losses.close(self.reduce)
        seen = ~torch.isnan(means)
        self.history[1] = torch.where(seen, self.history[0], self.history[1])
        self.history[0] = torch.where(seen, means, self.history[0])
