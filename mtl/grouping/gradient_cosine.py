"""Pairwise cosine similarity of the tasks' gradients on the shared parameters, averaged over training."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor

from mtl.balancing.engine import task_gradients
from mtl.grouping.affinity import StepAffinityCallback, shared_parameters

__all__ = ["GradientCosineAffinity", "gradient_cosines"]


def gradient_cosines(G: Tensor) -> Tensor:
    """``C[i, j] = <g_i, g_j> / (|g_i| |g_j|)`` for the rows of ``G`` ``[T, D]`` (float64).

    A zero gradient has no direction: its row and column are 0 (neither aligned nor in conflict),
    including its diagonal entry.
    """
    if G.dim() != 2:
        raise ValueError(f"Expected a gradient matrix of shape [T, D], but got {tuple(G.shape)}.")
    G = G.double()
    norms = G.norm(dim=1, keepdim=True)
    unit = torch.where(norms > 0, G / norms.clamp_min(torch.finfo(G.dtype).tiny), torch.zeros_like(G))
    return (unit @ unit.T).clamp(-1.0, 1.0)


class GradientCosineAffinity(StepAffinityCallback):
    """Task affinity as the cosine similarity of the tasks' gradients on the shared parameters.

    At a measured step, ``g_t = ∇_{θ_s} w_t L_t`` for every task on the same batch (``θ_s``: the
    encoder's and neck's parameters, ``w_t`` the loss weight, which does not change a cosine unless
    it is 0), and ``A[i, j] = cos(g_i, g_j)``, averaged over the measured steps. Gradient conflict
    (negative cosine) is the signal that PCGrad (Yu et al., NeurIPS 2020) acts on, and Fifty et al.
    (NeurIPS 2021, section 5) compare it with TAG as a grouping signal; it is symmetric, cheap (the
    per-task backward passes of `task_gradients`, no extra forward) and independent of the optimizer. A task whose gradient
    is zero at a step contributes 0 there.

    Under DDP the per-task gradients ``G`` are averaged across ranks first (the cosine of the
    averaged gradients, which the update follows), so every rank holds the same matrix.

    Hyper-parameters:
        every_n_steps: measure every this many optimizer steps.

    Args:
        every_n_steps: see above (>= 1).
        directory: where the matrix is written at the end of fitting (see `AffinityCallback`).
    """

    method: ClassVar[str] = "cosine"

    def measure(self, trainer: Trainer, pl_module: LightningModule, batch: Mapping[str, Any]) -> Tensor:
        weighted = self.weighted(pl_module, pl_module.task_losses(batch).losses)
        G = task_gradients(weighted, shared_parameters(pl_module))
        return gradient_cosines(trainer.strategy.reduce(G, reduce_op="mean"))
