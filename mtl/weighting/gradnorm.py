"""GradNorm: learn loss weights that equalise the tasks' gradient norms and training rates (Chen et al., ICML 2018)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mtl.weighting.base import LossWeighting

__all__ = ["GradNorm", "gradnorm_loss"]


def gradnorm_loss(
    weights: Tensor, grad_norms: Tensor, losses: Tensor, initial_losses: Tensor, alpha: float
) -> Tensor:
    """``L_grad = Σ_i | w_i n_i - mean_j(w_j n_j) · r_i^alpha |``, differentiable in ``weights`` only.

    ``n_i = ‖∇_W L_i‖`` are the unweighted gradient norms at the last shared layer ``W``, so
    ``w_i n_i`` is the norm of the weighted loss's gradient; ``r_i = L̃_i / mean_j L̃_j`` with
    ``L̃_i = L_i / L_i(0)`` is task ``i``'s inverse training rate. The target
    ``mean_j(w_j n_j) · r_i^alpha`` is a constant (detached), as in the paper, so the gradient pulls
    each weighted norm towards the common norm, raised for the tasks that train slowly.
    """
    weighted_norms = weights * grad_norms.detach()
    loss_ratios = (losses / initial_losses).detach()
    targets = (weighted_norms.mean() * (loss_ratios / loss_ratios.mean()) ** alpha).detach()
    return (weighted_norms - targets).abs().sum()


def _forget_initial_losses_flag(module: nn.Module, incompatible_keys: Any) -> None:
    # A loaded state dict may carry (or lack) the initial losses: re-read the buffer's flag.
    module._initial_losses_known = False


class GradNorm(LossWeighting):
    """GradNorm (Chen, Badrinarayanan, Lee & Rabinovich, "GradNorm: Gradient Normalization for
    Adaptive Loss Balancing in Deep Multitask Networks", ICML 2018).

    Learnable loss weights ``w`` [T] (an ``nn.Parameter``, initialised at 1, renormalised to sum to
    ``T``) are trained to make the norm of every weighted task gradient at the last shared layer,
    ``w_i n_i``, equal to the mean weighted norm times ``r_i^alpha``, the task's relative inverse
    training rate ``r_i = (L_i / L_i(0)) / mean_j(L_j / L_j(0))``. The objective is
    ``Σ_i w_i.detach() L_i + L_grad`` with ``L_grad`` = `gradnorm_loss`: the network is trained on the
    weighted sum with the weights held fixed, and the weights receive gradient only through
    ``L_grad`` (the paper's separate gradient of ``L_grad`` with respect to ``w``, in one backward).

    The module passes ``grad_norms`` [T] = ``‖∇_W L_i‖`` (unweighted, detached; ``needs_grad_norms``).
    ``L(0)``, the losses of the first call, is a buffer (checkpointed), averaged over DDP ranks so
    that every rank uses the same one. The paper renormalises ``w`` to sum to ``T`` after every
    update; it is done here, equivalently, under ``no_grad`` at the start of every ``forward``.
    ``weights`` are the renormalised ``w``. Needs every task's loss at every step.

    Args:
        alpha: the asymmetry ``alpha`` (default 1.5; the paper uses 0.12 to 3 across datasets, larger
            for tasks that differ more in difficulty; 0 equalises the gradient norms).
        lr: learning rate of ``w`` (``None``: the heads' learning rate).
    """

    needs_grad_norms = True
    initial_losses: Tensor
    has_initial_losses: Tensor

    def __init__(self, alpha: float = 1.5, lr: float | None = None) -> None:
        super().__init__(lr=lr)
        if not alpha >= 0:
            raise ValueError(f"Expected `alpha` to be >= 0, but got {alpha}. The paper uses 0.12 to 3.")
        self.alpha = float(alpha)
        self._initial_losses_known = False
        self.register_load_state_dict_post_hook(_forget_initial_losses_flag)

    def build(self, num_tasks: int) -> None:
        self.loss_weights = nn.Parameter(torch.ones(num_tasks))
        self.register_buffer("initial_losses", torch.ones(num_tasks))
        self.register_buffer("has_initial_losses", torch.zeros((), dtype=torch.bool))

    def combine(self, losses: Tensor, step: int, tasks: Tensor | None, grad_norms: Tensor | None) -> Tensor:
        assert grad_norms is not None  # checked by `forward`
        with torch.no_grad():
            self.loss_weights.mul_(self.num_tasks / self.loss_weights.sum())
        self._record_initial_losses(losses)
        weights = self.loss_weights
        self._set_weights(weights)
        balance = gradnorm_loss(weights, grad_norms, losses, self.initial_losses, self.alpha)
        return (weights.detach() * losses).sum() + balance

    def _record_initial_losses(self, losses: Tensor) -> None:
        # The flag is read from the buffer once (one host synchronisation), not at every step.
        if self._initial_losses_known:
            return
        if not bool(self.has_initial_losses):
            self.initial_losses.copy_(self.reduce(losses.detach()))
            self.has_initial_losses.fill_(True)
        self._initial_losses_known = True
