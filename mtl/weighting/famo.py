"""FAMO: fast adaptive multitask optimization, balanced loss decrease in O(1) (Liu et al., NeurIPS 2023)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from mtl.balancing.dbmtl import log_transform_losses
from mtl.weighting.base import LossWeighting

__all__ = ["FAMO", "famo_logit_gradient", "famo_objective"]

_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8


def famo_objective(losses: Tensor, z: Tensor, min_losses: Tensor, eps: float = 1e-8) -> tuple[Tensor, Tensor]:
    """``(objective, weights)``: ``c Σ_i z_i log(L_i - b_i + eps)`` with ``c = 1 / Σ_i z_i / (L_i - b_i + eps)``.

    ``c`` is treated as a constant, so the gradient is ``Σ_i w_i ∇L_i`` with the convex weights
    ``w_i = c z_i / (L_i - b_i + eps)`` (returned detached): FAMO's update direction, which
    decreases ``z``-weighted log-losses, i.e. every task's loss in proportion to its size.
    """
    shifted = losses - min_losses
    inverse = z / (shifted.detach() + eps)
    c = 1.0 / inverse.sum()
    return c * (z * log_transform_losses(shifted, eps)).sum(), c * inverse


def famo_logit_gradient(z: Tensor, delta: Tensor) -> Tensor:
    """``J_z(ξ)^T δ = z ⊙ (δ - z·δ)``, the gradient of ``z(ξ)·δ`` with respect to the logits ``ξ``.

    ``δ_i = log L_i(θ_t) - log L_i(θ_{t+1})`` is how much task ``i``'s log-loss fell in the last
    step; descending this gradient moves weight from the tasks that improved most to those that
    improved least.
    """
    return z * (delta - (z * delta).sum())


class FAMO(LossWeighting):
    """FAMO (Liu, Feng, Stone & Liu, "FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023).

    FAMO seeks the update that decreases every task's log-loss at the same rate with one backward
    pass. The task weights are ``z = softmax(ξ)`` of logits ``ξ`` [T] (a buffer, checkpointed,
    initialised at 0) and the objective is `famo_objective`,
    ``c Σ_i z_i log(L_i - b_i + eps)`` with the detached normaliser ``c = (Σ_i z_i / (L_i - b_i + eps))^{-1}``,
    whose gradient is the convex combination ``Σ_i c z_i / (L_i - b_i + eps) ∇L_i`` (``weights``; they
    sum to 1, so the direction is on the scale of one task's gradient). After the optimizer step
    `after_step` receives the same batch's losses under the new parameters and updates the logits
    from ``δ_i = log(L_i(θ_t) - b_i + eps) - log(L_i(θ_{t+1}) - b_i + eps)``:

    * ``update="adam"`` (default): one Adam step (lr ``β``, betas (0.9, 0.999), eps 1e-8, L2 weight
      decay ``gamma`` added to the gradient, as ``torch.optim.Adam``) on the gradient ``J_z(ξ)^T δ``
      (`famo_logit_gradient`): the paper's practical Algorithm 2 (appendix C) and the authors' code.
      Its moments are buffers, so resuming continues the same Adam trajectory.
    * ``update="sgd"``: the rule of the paper's Algorithm 1, ``ξ ← ξ - β (J_z(ξ)^T δ + gamma ξ)``.

    Under DDP, the losses before and after the step are averaged over ranks (one ``reduce`` call per
    step, in `after_step`), so every rank updates the logits identically; the objective itself uses
    each rank's own losses. The authors also clip the network's gradient norm to 1: set
    ``trainer.gradient_clip_val`` for that. Needs every task's loss at every step.

    Args:
        beta: learning rate ``β`` of the logits (default 0.025, the paper's).
        gamma: decay ``gamma`` of the logits (default 1e-3, the value of the paper's Algorithm 2 and of
            LibMTL; the authors' code defaults vary between 1e-5 and 1e-2).
        min_losses: lower bounds ``b_i`` of the losses (default 0 for every task), e.g. the
            optimal value of a loss that cannot reach 0.
        eps: added to ``L_i - b_i`` inside the logarithm and the normaliser (default 1e-8).
        update: ``"adam"`` or ``"sgd"``, the logit update rule (see above).
    """

    needs_losses_after_step = True
    logits: Tensor
    min_losses: Tensor
    adam_step: Tensor
    adam_exp_avg: Tensor
    adam_exp_avg_sq: Tensor

    def __init__(
        self,
        beta: float = 0.025,
        gamma: float = 1e-3,
        min_losses: list[float] | None = None,
        eps: float = 1e-8,
        update: Literal["adam", "sgd"] = "adam",
    ) -> None:
        super().__init__()
        if not beta > 0:
            raise ValueError(f"Expected `beta` to be > 0, but got {beta}. The paper uses 0.025.")
        if not gamma >= 0:
            raise ValueError(f"Expected `gamma` to be >= 0, but got {gamma}. The paper uses 1e-3.")
        if not eps > 0:
            raise ValueError(f"Expected `eps` to be > 0, but got {eps}. Use a small value such as 1e-8.")
        if update not in ("adam", "sgd"):
            raise ValueError(f"Expected `update` to be 'adam' or 'sgd', but got {update!r}.")
        self.beta, self.gamma, self.eps, self.update = float(beta), float(gamma), float(eps), update
        self._min_losses = None if min_losses is None else [float(b) for b in min_losses]
        self._losses_before: Tensor | None = None

    def build(self, num_tasks: int) -> None:
        bounds = [0.0] * num_tasks if self._min_losses is None else self._min_losses
        if len(bounds) != num_tasks:
            raise ValueError(
                f"Expected `min_losses` to have one bound per task ({num_tasks}: {self.tasks}), "
                f"but got {len(bounds)}: {bounds}."
            )
        self.register_buffer("logits", torch.zeros(num_tasks))
        self.register_buffer("min_losses", torch.tensor(bounds), persistent=False)
        self.register_buffer("adam_step", torch.zeros(()))
        self.register_buffer("adam_exp_avg", torch.zeros(num_tasks))
        self.register_buffer("adam_exp_avg_sq", torch.zeros(num_tasks))

    def combine(self, losses: Tensor, step: int, tasks: Tensor | None, grad_norms: Tensor | None) -> Tensor:
        objective, weights = famo_objective(
            losses, torch.softmax(self.logits, dim=0), self.min_losses, self.eps
        )
        self._set_weights(weights)
        self._losses_before = losses.detach()
        return objective

    def after_step(self, losses: Tensor) -> None:
        if self._losses_before is None:
            raise RuntimeError(
                "Expected FAMO's forward to run before `after_step`, but no losses of this step were "
                "recorded. Call the method on the step's losses, step the optimizer, then `after_step`."
            )
        if not isinstance(losses, Tensor) or losses.shape != self._losses_before.shape:
            got = tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
            raise ValueError(
                f"Expected `losses` after the step to have shape ({self.num_tasks},) (one per task of "
                f"{self.tasks}), but got {got}."
            )
        pair = torch.stack([self._losses_before, losses.detach().to(self._losses_before)])
        before, after = self.reduce(pair).to(self.logits)
        self._losses_before = None
        delta = log_transform_losses(before - self.min_losses, self.eps) - log_transform_losses(
            after - self.min_losses, self.eps
        )
        gradient = famo_logit_gradient(torch.softmax(self.logits, dim=0), delta) + self.gamma * self.logits
        if self.update == "sgd":
            self.logits -= self.beta * gradient
        else:
            self._adam_step(gradient)

    def _adam_step(self, gradient: Tensor) -> None:
        beta1, beta2 = _ADAM_BETAS
        self.adam_step += 1
        self.adam_exp_avg.mul_(beta1).add_(gradient, alpha=1 - beta1)
        self.adam_exp_avg_sq.mul_(beta2).addcmul_(gradient, gradient, value=1 - beta2)
        # Bias corrections from the step buffer (no host synchronisation).
        first = self.adam_exp_avg / (1 - beta1**self.adam_step)
        second = self.adam_exp_avg_sq / (1 - beta2**self.adam_step)
        self.logits -= self.beta * first / (second.sqrt() + _ADAM_EPS)
