"""STCH: smooth Tchebycheff scalarisation of the task losses (Lin et al., ICML 2024)."""

from __future__ import annotations

import torch
from torch import Tensor

from mtl.balancing.dbmtl import log_transform_losses
from mtl.weighting.base import LossWeighting
from mtl.weighting.epoch_losses import EpochLossMeans

__all__ = ["STCH", "smooth_tchebycheff"]

# The authors' offset inside log(L / L̄ + eps): only keeps a loss of exactly 0 finite.
_LOG_EPS = 1e-20


def smooth_tchebycheff(values: Tensor, preference: Tensor, ideal: Tensor, mu: float) -> Tensor:
    """``μ log Σ_i exp(λ_i (f_i - z*_i) / μ)``, the smooth Tchebycheff scalarisation of ``values`` f.

    A smooth upper bound of the Tchebycheff scalarisation ``max_i λ_i (f_i - z*_i)``, with
    ``max ≤ g_μ ≤ max + μ log T``; it tends to the max as ``μ → 0``. Its gradient weights the
    objectives by ``λ_i softmax_i(λ (f - z*) / μ)``, so the worst-off objectives dominate.
    """
    return mu * torch.logsumexp(preference * (values - ideal) / mu, dim=0)


class STCH(LossWeighting):
    """Smooth Tchebycheff scalarisation (Lin, Zhang, Yang, Liu, Wang & Zhang, "Smooth Tchebycheff
    Scalarization for Multi-Objective Optimization", ICML 2024).

    The objective is the paper's ``g_μ(f | λ) = μ log Σ_i exp(λ_i (f_i - z*_i) / μ)``
    (`smooth_tchebycheff`), in the multi-task setting of the authors' code (their ``STCH_MTL``,
    also in LibMTL):

    * the objectives are the log-normalised losses ``f_i = log(L_i / L̄_i)``, where ``L̄`` (the
      "nadir" vector) is each task's mean training loss over the last warm-up epoch, so that the
      tasks' loss scales do not decide which task is the worst-off;
    * during the ``warmup_epochs`` warm-up epochs the objective is ``Σ_i log L_i`` (equal weights
      on the log-losses), and ``L̄`` is taken from the last of them;
    * afterwards the objective is ``T · g_μ(f | λ)``, with ``λ_i = 1`` and ``z* = 0`` by default
      (the authors' choices; the factor ``T`` is theirs and puts the gradient weights on `EW`'s
      scale: they sum to ``T`` when ``λ = 1``).

    It is not a weighted sum; ``weights`` are its effective weights ``∂objective / ∂L_i``, the
    weights of the task gradients in the update: ``1 / L_i`` during warm-up and
    ``T λ_i softmax_i(λ (f - z*) / μ) / L_i`` afterwards.

    State (buffers, checkpointed): the epoch counter, the warm-up flag, ``L̄`` and the running
    epoch sums. The epoch means are reduced over DDP ranks in `epoch_end`, so every rank uses the
    same ``L̄``. To avoid a host synchronisation per step, ``forward`` evaluates both phases'
    objectives (a handful of scalar operations) and selects one with the warm-up flag. Needs every
    task's loss at every step and positive losses.

    Args:
        mu: the smoothing ``μ`` (default 1, the authors'; smaller is closer to the max).
        warmup_epochs: epochs trained on ``Σ log L_i`` before STCH starts, the last of which gives
            ``L̄`` (default 5: the authors' ``STCH_warmup_epoch = 4`` is the 0-based index of that
            last epoch). At least 1.
        preference: ``λ`` [T], positive (default ``None``: all 1).
        ideal: ``z*`` [T] in the space of ``log(L / L̄)`` (default ``None``: all 0).
    """

    epochs_done: Tensor
    warmed_up: Tensor
    nadir: Tensor
    preference: Tensor
    ideal: Tensor

    def __init__(
        self,
        mu: float = 1.0,
        warmup_epochs: int = 5,
        preference: list[float] | None = None,
        ideal: list[float] | None = None,
    ) -> None:
        super().__init__()
        if not mu > 0:
            raise ValueError(f"Expected `mu` to be > 0, but got {mu}. The authors use 1; smaller is sharper.")
        if not isinstance(warmup_epochs, int) or warmup_epochs < 1:
            raise ValueError(
                f"Expected `warmup_epochs` to be an integer >= 1, but got {warmup_epochs!r}. The loss "
                "normaliser is the mean loss of the last warm-up epoch, so at least one is needed."
            )
        if preference is not None and not all(p > 0 for p in preference):
            raise ValueError(f"Expected `preference` to be positive, but got {preference}.")
        self.mu, self.warmup_epochs = float(mu), warmup_epochs
        self._preference, self._ideal = preference, ideal

    def build(self, num_tasks: int) -> None:
        for name, values in (("preference", self._preference), ("ideal", self._ideal)):
            if values is not None and len(values) != num_tasks:
                raise ValueError(
                    f"Expected `{name}` to have one value per task ({num_tasks}: {self.tasks}), but got "
                    f"{len(values)}: {values}."
                )
        preference = [1.0] * num_tasks if self._preference is None else self._preference
        ideal = [0.0] * num_tasks if self._ideal is None else self._ideal
        self.register_buffer("preference", torch.tensor(preference, dtype=torch.float), persistent=False)
        self.register_buffer("ideal", torch.tensor(ideal, dtype=torch.float), persistent=False)
        self.epoch_losses = EpochLossMeans(num_tasks)
        self.register_buffer("epochs_done", torch.zeros((), dtype=torch.long))
        self.register_buffer("warmed_up", torch.zeros((), dtype=torch.bool))
        # 1 until set, so that the unused branch of `combine` stays finite during warm-up.
        self.register_buffer("nadir", torch.ones(num_tasks))

    def combine(self, losses: Tensor, step: int, tasks: Tensor | None, grad_norms: Tensor | None) -> Tensor:
        # Accumulated in every epoch (cheap) so that `forward` never reads the epoch counter.
        self.epoch_losses.add(losses)
        T = losses.numel()
        warmup_objective = log_transform_losses(losses, _LOG_EPS).sum()
        values = log_transform_losses(losses / self.nadir, _LOG_EPS)
        stch_objective = T * smooth_tchebycheff(values, self.preference, self.ideal, self.mu)
        with torch.no_grad():
            shares = torch.softmax(self.preference * (values - self.ideal) / self.mu, dim=0)
            scale = 1.0 / (losses + _LOG_EPS * self.nadir)
            weights = torch.where(self.warmed_up, T * self.preference * shares * scale, scale)
        self._set_weights(weights)
        return torch.where(self.warmed_up, stch_objective, warmup_objective)

    def epoch_end(self) -> None:
        self.epochs_done += 1
        if not bool(self.warmed_up) and int(self.epochs_done) == self.warmup_epochs:
            self.nadir.copy_(self.epoch_losses.close(self.reduce))
            self.warmed_up.fill_(True)
        else:
            self.epoch_losses.reset()
