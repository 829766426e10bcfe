"""DDP consistency: two simulated ranks with different losses keep identical state through ``reduce``,
equal to one process trained on the ranks' mean losses."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

import mtl.weighting as weighting
from mtl.weighting import LossWeighting
from tests.weighting.helpers import TASKS, loss_sequence, run_two_ranks, train

FACTORIES: dict[str, Callable[[], LossWeighting]] = {
    "DWA": weighting.DWA,
    "FAMO": weighting.FAMO,
    "FAMO-sgd": lambda: weighting.FAMO(update="sgd"),
    "STCH": lambda: weighting.STCH(warmup_epochs=2),
    "GradNorm": weighting.GradNorm,
}
STEPS = 8  # four epochs of two steps


def rank_losses(rank: int) -> tuple[list[Tensor], list[Tensor]]:
    """The rank's losses before and after every step (its own data: different on every rank)."""
    before = loss_sequence(STEPS, seed=rank + 1)
    shrink = loss_sequence(STEPS, seed=rank + 11)
    return before, [b * (0.5 + 0.1 * s) for b, s in zip(before, shrink, strict=True)]


def buffers(method: LossWeighting) -> dict[str, Tensor]:
    # Parameters are kept equal by DDP's gradient averaging, which the threads do not simulate.
    return {name: b.clone() for name, b in method.named_buffers()}


def run(
    name: str, losses: tuple[list[Tensor], list[Tensor]], reduce: Callable[[Tensor], Tensor] | None = None
) -> dict[str, Tensor]:
    method = FACTORIES[name]()
    method.bind(TASKS)
    if reduce is not None:
        method.reduce = reduce
    train(method, losses[0], after=losses[1])
    return buffers(method)


def assert_same(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, equal_nan=True, msg=key)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_ranks_with_different_losses_keep_identical_state(name: str) -> None:
    states = run_two_ranks(lambda rank, reduce: run(name, rank_losses(rank), reduce))
    assert_same(states[0], states[1])
    (before_0, after_0), (before_1, after_1) = rank_losses(0), rank_losses(1)
    mean = (
        [(a + b) / 2 for a, b in zip(before_0, before_1, strict=True)],
        [(a + b) / 2 for a, b in zip(after_0, after_1, strict=True)],
    )
    assert_same(states[0], run(name, mean))


@pytest.mark.parametrize("name", list(FACTORIES))
def test_without_the_reduce_the_ranks_would_diverge(name: str) -> None:
    alone = [run(name, rank_losses(rank)) for rank in (0, 1)]
    assert any(not torch.allclose(alone[0][k], alone[1][k], equal_nan=True) for k in alone[0])


def test_dwa_reduces_once_per_epoch_and_famo_once_per_step() -> None:
    calls: dict[str, int] = {"DWA": 0, "FAMO": 0}

    def counting(name: str) -> Callable[[Tensor], Tensor]:
        def reduce(x: Tensor) -> Tensor:
            calls[name] += 1
            return x

        return reduce

    for name in calls:
        run(name, rank_losses(0), counting(name))
    assert calls == {"DWA": STEPS // 2, "FAMO": STEPS}
