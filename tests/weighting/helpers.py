"""Drivers shared by the loss-weighting tests: one training step of any method, and two simulated DDP ranks."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor

from mtl.weighting import LossWeighting

TASKS = ["a", "b", "c"]


def fake_grad_norms(losses: Tensor) -> Tensor:
    """Stand-in for the module's ``‖∇_W L_i‖``: a fixed positive function of the losses."""
    return losses.detach().sqrt() + 0.5


def train_step(
    method: LossWeighting,
    losses: Tensor,
    step: int,
    optimizer: torch.optim.Optimizer | None = None,
    after: Tensor | None = None,
) -> Tensor:
    """One step as the module drives it: objective, backward, optimizer step, `after_step` (FAMO).

    ``after``: the same batch's losses after the step (default: ``losses`` shrunk by a
    task-dependent factor).
    """
    leaf = losses.detach().clone().requires_grad_(True)
    grad_norms = fake_grad_norms(leaf) if method.needs_grad_norms else None
    objective = method(leaf, step=step, grad_norms=grad_norms)
    if optimizer is not None:
        optimizer.zero_grad()
    objective.backward()
    if optimizer is not None:
        optimizer.step()
    if method.needs_losses_after_step:
        if after is None:
            after = losses.detach() * torch.linspace(0.7, 0.95, losses.numel())
        method.after_step(after)
    return objective.detach()


def loss_sequence(steps: int, num_tasks: int = len(TASKS), seed: int = 0) -> list[Tensor]:
    """Positive, decreasing-on-average per-task losses, one vector per step."""
    gen = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.5, 3.0, num_tasks)
    return [scale * (1.0 + 0.3 * torch.rand(num_tasks, generator=gen)) / (1 + 0.2 * t) for t in range(steps)]


def train(
    method: LossWeighting,
    losses: list[Tensor],
    steps_per_epoch: int = 2,
    first_step: int = 0,
    after: list[Tensor] | None = None,
) -> list[Tensor]:
    """Run ``method`` over ``losses`` with SGD on its own parameters and `epoch_end` every few steps.

    ``after``: the losses after each step (for FAMO), default as in `train_step`.
    """
    params = list(method.parameters())
    optimizer = torch.optim.SGD(params, lr=0.1) if params else None
    objectives = []
    for i, step_losses in enumerate(losses):
        step_after = None if after is None else after[i]
        objectives.append(train_step(method, step_losses, first_step + i, optimizer, step_after))
        if (i + 1) % steps_per_epoch == 0:
            method.epoch_end()
    return objectives


class TwoRankMean:
    """A ``reduce`` for two threads standing in for two DDP ranks: each call returns the mean of both
    ranks' tensors, like ``all_reduce(mean)``; the ranks must call it the same number of times."""

    def __init__(self) -> None:
        self._barrier = threading.Barrier(2, timeout=20)
        self._slots: list[Tensor | None] = [None, None]

    def for_rank(self, rank: int) -> Callable[[Tensor], Tensor]:
        def reduce(x: Tensor) -> Tensor:
            self._slots[rank] = x.detach().clone()
            self._barrier.wait()
            mean = (self._slots[0] + self._slots[1]) / 2
            self._barrier.wait()  # both ranks have read the slots before either writes again
            return mean

        return reduce


def run_two_ranks(work: Callable[[int, Callable[[Tensor], Tensor]], object]) -> list[object]:
    """``[work(0, reduce_0), work(1, reduce_1)]`` run concurrently with a shared `TwoRankMean`."""
    mean = TwoRankMean()
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(work, rank, mean.for_rank(rank)) for rank in (0, 1)]
        return [future.result() for future in futures]
