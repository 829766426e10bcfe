"""The gradient-aggregator contract: a per-task gradient matrix ``G`` [T, D] in, one direction [D] out.

An aggregator is built with its hyper-parameters and called on ``G``, whose row ``i`` is the
flattened gradient of task ``i``'s loss with respect to the shared parameters. It returns the
direction ``d`` that the engine writes into the shared parameters' ``.grad`` (so the optimizer steps
along ``-d``). See the package docstring for the scale convention of every method.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "GradientAggregator",
    "check_gradients",
    "check_losses",
    "combine",
    "gram_matrix",
    "nonfinite_rows",
]


def nonfinite_rows(G: Tensor) -> list[int]:
    """The rows of ``G`` [T, D] holding a NaN or an infinity (``[]`` for a finite ``G``).

    A row's sum is finite whenever all its entries are, so one reduction screens the whole matrix
    (an elementwise ``isfinite`` costs four passes and a temporary as large as ``G``, a sizeable part
    of a step for representation gradients); only rows whose sum is not finite are checked entry by
    entry, which also clears a sum that overflowed from large but finite entries.
    """
    suspect = (~torch.isfinite(G.sum(dim=1))).nonzero().flatten().tolist()
    return [t for t in suspect if not bool(torch.isfinite(G[t]).all())]


def check_gradients(G: Tensor) -> None:
    """Raise if ``G`` is not a finite floating-point tensor of shape [T, D] with T, D >= 1."""
    if not isinstance(G, Tensor):
        raise TypeError(
            f"Expected `G` to be a torch.Tensor of shape [T, D], but got {type(G).__name__}. "
            "Stack the flattened per-task gradients: torch.stack([g.flatten() for g in grads])."
        )
    if G.ndim != 2 or G.shape[0] < 1 or G.shape[1] < 1:
        raise ValueError(
            f"Expected `G` to be a 2-D tensor of shape [T, D] with T >= 1 tasks and D >= 1 parameters, "
            f"but got shape {tuple(G.shape)}. Stack one flattened gradient per task as a row: "
            "torch.stack([g.flatten() for g in grads])."
        )
    if not G.is_floating_point():
        raise ValueError(
            f"Expected `G` to be a floating-point tensor, but got dtype {G.dtype}. Cast it with G.float()."
        )
    rows = nonfinite_rows(G)
    if rows:
        raise ValueError(
            f"Expected `G` to be finite, but got NaN/inf in row(s) {rows} (the gradient of task(s) {rows}). "
            "Check those tasks' losses for NaN/inf (e.g. log(0), division by zero, an exploding loss), "
            "lower the learning rate or use mixed precision loss scaling, or skip this step."
        )


def check_losses(losses: Tensor, num_tasks: int) -> None:
    """Raise if ``losses`` is not a finite tensor of shape [T]."""
    if not isinstance(losses, Tensor) or losses.shape != (num_tasks,):
        got = tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
        raise ValueError(
            f"Expected `losses` to be a tensor of shape [{num_tasks}] (one loss per row of `G`), "
            f"but got {got}. Pass torch.stack([loss.detach() for loss in task_losses])."
        )
    if not bool(torch.isfinite(losses).all()):
        raise ValueError(f"Expected `losses` to be finite, but got {losses.tolist()}.")


def gram_matrix(G: Tensor) -> np.ndarray:
    """The Gram matrix ``G @ G.T`` [T, T] as a float64 numpy array (for the small per-step solvers).

    The product is taken in ``G``'s precision (float32 for half types, so that no float64 copy of a
    possibly huge ``G`` is made) and only the [T, T] result is promoted to float64.
    """
    work = G if G.dtype in (torch.float32, torch.float64) else G.float()
    return (work @ work.T).detach().to(device="cpu", dtype=torch.float64).numpy()


def combine(weights: np.ndarray | Tensor, G: Tensor) -> Tensor:
    """``sum_i weights[i] * G[i]`` in ``G``'s dtype and on ``G``'s device."""
    w = torch.as_tensor(weights, dtype=G.dtype, device=G.device)
    return w @ G


class GradientAggregator(abc.ABC):
    """Maps the per-task gradient matrix ``G`` [T, D] to one update direction [D].

    Subclasses implement `_aggregate`; ``__call__`` validates the input first. Methods that define
    per-task weights (``d = sum_i weights[i] * G[i]``) store the last ones in ``weights`` (a detached
    float64 CPU tensor of shape [T], for logging), otherwise ``weights`` is ``None``.

    Attributes:
        stateful: whether the method keeps state between calls (EMA targets, buffers, warm starts);
            `reset` clears it (call it when the set of tasks or the parameters change).
        weighted: the direction is exactly ``weights @ G`` with ``weights`` of the same call, so the
            weights found on a part of the parameters can be applied to all of them (the engine's
            ``last_layer`` option needs it).
        representation: the method is defined, or has a guarantee, on gradients with respect to the
            shared representation instead of the shared parameters (the engine's ``representation``
            option accepts only these).
        weights: the last per-task weights, or ``None``.
    """

    stateful: ClassVar[bool] = False
    weighted: ClassVar[bool] = True
    representation: ClassVar[bool] = False

    def __init__(self) -> None:
        self.weights: Tensor | None = None

    @property
    def needs_state(self) -> bool:
        """Alias of ``stateful``."""
        return self.stateful

    def __call__(self, G: Tensor, losses: Tensor | None = None) -> Tensor:
        """The update direction [D] for ``G`` [T, D] (``losses`` [T]: only MGDA's loss normalisers use it)."""
        check_gradients(G)
        if losses is not None:
            check_losses(losses, G.shape[0])
        with torch.no_grad():
            return self._aggregate(G.detach(), losses)

    @abc.abstractmethod
    def _aggregate(self, G: Tensor, losses: Tensor | None) -> Tensor:
        """The direction for a validated ``G``."""

    def transform_losses(self, losses: Tensor) -> Tensor:
        """The losses whose per-task gradients form ``G`` (identity; DB-MTL takes their logarithm)."""
        return losses

    def reset(self) -> None:
        """Forget the state kept between calls (and the last weights)."""
        self.weights = None

    def _set_weights(self, weights: np.ndarray | Tensor) -> None:
        self.weights = torch.as_tensor(weights, dtype=torch.float64).detach().cpu().clone()

    def _check_num_tasks(self, expected: int | None, got: int) -> None:
        """For stateful methods: the number of tasks must not change between calls without `reset`."""
        if expected is not None and expected != got:
            raise ValueError(
                f"Expected `G` to have {expected} rows (the number of tasks in the previous calls), "
                f"but got {got}. Call {type(self).__name__}.reset() when the set of tasks changes."
            )

    def __repr__(self) -> str:
        state = {"weights", "targets", "step"}
        params = ", ".join(
            f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_") and k not in state
        )
        return f"{type(self).__name__}({params})"
