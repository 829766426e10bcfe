"""The loss-weighting contract: per-task losses in, one scalar objective out (one backward pass).

A `LossWeighting` turns the vector of per-task losses ``L`` [T] into the scalar the optimizer
minimises. Most methods are ``Σ_t w_t L_t`` with weights computed from the losses' history (DWA,
FAMO), drawn at random (RLW) or learnt (UW, IMTL-L, GradNorm); others are a non-linear scalarisation
(GLS, STCH). Unlike a `mtl.balancing.GradientAggregator` it needs no per-task gradients of the shared
parameters, so it costs one backward pass (GradNorm adds per-task gradients of the last shared layer
only).

Lifecycle, driven by `mtl.module.MultiTaskModule`:

* `bind` once with the task names (creates learnable parameters and buffers; they are part of the
  module, so they are checkpointed, optimised with the heads' learning rate unless ``lr`` is set, and
  averaged by DDP like any parameter).
* ``forward(losses, step, tasks, grad_norms)`` every training step.
* `after_step` after the optimizer step, with the losses of the same batch under the updated
  parameters, for methods with ``needs_losses_after_step`` (FAMO).
* `epoch_end` at the end of every training epoch (DWA).

Under DDP every rank must keep the same state. State that is updated outside of gradients (loss
histories, FAMO's logits) must be computed from values passed through ``self.reduce`` (set by the
module to a mean over ranks; the identity on one process).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor, nn

__all__ = ["LossWeighting"]


def _identity(x: Tensor) -> Tensor:
    return x


class LossWeighting(nn.Module, abc.ABC):
    """Maps per-task losses ``L`` [T] to the scalar training objective.

    Subclasses implement `combine` and, where they need it, `build`, `after_step` and `epoch_end`.
    ``forward`` validates the input first.

    Class attributes (capabilities the module reads):
        requires_all_tasks: the method needs every task's loss at every step (``data.layout:
            all_tasks``); methods without it accept the losses of a subset, named by ``tasks``.
        needs_grad_norms: the module passes ``grad_norms`` [T], the norm of each task's loss gradient
            with respect to the last shared layer (GradNorm).
        needs_losses_after_step: the module calls `after_step` after every optimizer step (FAMO).

    Attributes:
        tasks: the task names, in the order of the rows of ``losses``.
        weights: the last effective per-task weights (a detached float64 CPU tensor [T] for logging),
            or ``None`` for methods without weights.
        reduce: mean over DDP ranks (set by the module).
        lr: learning rate of the method's own parameters (``None``: the heads' learning rate).
    """

    requires_all_tasks: ClassVar[bool] = True
    needs_grad_norms: ClassVar[bool] = False
    needs_losses_after_step: ClassVar[bool] = False

    def __init__(self, lr: float | None = None) -> None:
        super().__init__()
        if lr is not None and not lr > 0:
            raise ValueError(f"Expected `lr` of {type(self).__name__} to be > 0 or None, but got {lr}.")
        self.lr = lr
        self.tasks: list[str] = []
        self._weights: Tensor | None = None
        self.reduce: Callable[[Tensor], Tensor] = _identity

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    def bind(self, tasks: list[str]) -> None:
        """Called once by the module with the task names, before training."""
        if not tasks or len(set(tasks)) != len(tasks):
            raise ValueError(
                f"Expected the tasks of {type(self).__name__} to be a non-empty list of distinct names, "
                f"but got {tasks}."
            )
        self.tasks = list(tasks)
        self.build(len(tasks))

    def build(self, num_tasks: int) -> None:
        """Create the method's parameters and buffers for ``num_tasks`` tasks (default: none)."""

    def forward(
        self,
        losses: Tensor,
        step: int = 0,
        tasks: Tensor | None = None,
        grad_norms: Tensor | None = None,
    ) -> Tensor:
        """The scalar objective for the per-task ``losses`` at training ``step``.

        Args:
            losses: ``[n]`` losses, differentiable; ``n = T`` (every task, in ``self.tasks`` order)
                unless ``tasks`` is given.
            step: the global training step (seeds stochastic methods identically on every rank).
            tasks: ``[n]`` indices into ``self.tasks`` of the rows of ``losses`` when only some tasks
                are present (only for methods without ``requires_all_tasks``); ``None``: all tasks.
            grad_norms: ``[T]`` per-task gradient norms at the last shared layer (``needs_grad_norms``).
        """
        name = type(self).__name__
        if not self.tasks:
            raise RuntimeError(
                f"Expected {name} to be bound before use, but `bind(tasks)` was never called. "
                "MultiTaskModule binds its balancer; call it yourself when using the method alone."
            )
        if not isinstance(losses, Tensor) or losses.dim() != 1 or not losses.is_floating_point():
            got = tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
            raise ValueError(f"Expected `losses` to be a 1-D floating-point tensor, but got {got}.")
        if tasks is None:
            if losses.shape[0] != self.num_tasks:
                raise ValueError(
                    f"Expected {self.num_tasks} losses (one per task of {self.tasks}), but got {losses.shape[0]}."
                )
        else:
            if self.requires_all_tasks:
                raise ValueError(
                    f"Expected every task's loss at every step with {name}, but got only the tasks "
                    f"{[self.tasks[i] for i in tasks.tolist()]}. Use `data.layout: all_tasks`."
                )
            if tasks.shape != losses.shape:
                raise ValueError(
                    f"Expected `tasks` to index the {losses.shape[0]} losses, but got shape {tuple(tasks.shape)}."
                )
        if self.needs_grad_norms and (grad_norms is None or grad_norms.shape != (self.num_tasks,)):
            raise ValueError(
                f"Expected `grad_norms` of shape [{self.num_tasks}] for {name}, but got "
                f"{None if grad_norms is None else tuple(grad_norms.shape)}."
            )
        return self.combine(losses, step, tasks, grad_norms)

    @abc.abstractmethod
    def combine(self, losses: Tensor, step: int, tasks: Tensor | None, grad_norms: Tensor | None) -> Tensor:
        """The objective for validated inputs (see `forward`)."""

    def after_step(self, losses: Tensor) -> None:
        """The losses [T] of the same batch after the optimizer step (only with ``needs_losses_after_step``)."""

    def epoch_end(self) -> None:
        """Called at the end of every training epoch."""

    @property
    def weights(self) -> Tensor | None:
        """The last effective per-task weights [T] (float64, CPU), or ``None``."""
        w = self._weights
        return None if w is None else w.to(device="cpu", dtype=torch.float64).clone()

    def _set_weights(self, weights: Tensor) -> None:
        # Kept on the device: copying to the host every step would synchronise it with the GPU.
        self._weights = weights.detach()
