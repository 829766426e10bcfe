"""DWA: weights from ratios of epoch-average losses, by hand; the epoch-mean accumulator."""

from __future__ import annotations

import math

import torch

from mtl.weighting import DWA, EpochLossMeans, dwa_weights


def run_epoch(method: DWA, steps: list[list[float]], tasks: list[int] | None = None) -> list[torch.Tensor]:
    """Feed one epoch of step losses; returns the weights seen at each step."""
    seen = []
    for losses in steps:
        index = None if tasks is None else torch.tensor(tasks)
        method(torch.tensor(losses), tasks=index)
        seen.append(method.weights.clone())
    method.epoch_end()
    return seen


def test_weights_by_hand_from_two_epochs_of_losses() -> None:
    method = DWA(temperature=2.0)
    method.bind(["a", "b"])
    ones = torch.ones(2, dtype=torch.float64)
    # Epoch means [2, 2] then [1.5, 1]; the first two epochs have equal weights.
    for weights in run_epoch(method, [[1.0, 2.0], [3.0, 2.0]]) + run_epoch(method, [[1.0, 1.5], [2.0, 0.5]]):
        torch.testing.assert_close(weights, ones)
    # r = [1.5 / 2, 1 / 2] = [0.75, 0.5]; w = 2 softmax(r / 2) = 2 [e^0.375, e^0.25] / (e^0.375 + e^0.25).
    w0 = 2 / (1 + math.exp(-0.125))
    (weights,) = run_epoch(method, [[1.2, 0.9]])
    torch.testing.assert_close(weights, torch.tensor([w0, 2 - w0], dtype=torch.float64))
    # The next epoch uses the ratios of epochs 2 and 1: [1.2 / 1.5, 0.9 / 1.0].
    w0 = 2 / (1 + math.exp((0.9 - 0.8) / 2))
    (weights,) = run_epoch(method, [[1.0, 1.0]])
    torch.testing.assert_close(weights, torch.tensor([w0, 2 - w0], dtype=torch.float64))


def test_the_objective_is_the_weighted_sum() -> None:
    method = DWA(temperature=0.5)
    method.bind(["a", "b", "c"])
    run_epoch(method, [[1.0, 1.0, 1.0]])
    run_epoch(method, [[0.5, 1.0, 2.0]])
    losses = torch.tensor([0.3, 0.6, 0.9])
    objective = method(losses)
    expected = 3 * torch.softmax(torch.tensor([0.5, 1.0, 2.0]) / 0.5, dim=0)
    torch.testing.assert_close(method.weights.float(), expected)
    torch.testing.assert_close(objective, (expected * losses).sum())


def test_weights_sum_to_the_number_of_tasks_and_favour_slow_tasks() -> None:
    weights = dwa_weights(torch.tensor([0.9, 0.5, 1.1]), temperature=2.0)
    assert float(weights.sum()) == 3.0 or abs(float(weights.sum()) - 3.0) < 1e-6
    assert weights.argmax() == 2 and weights.argmin() == 1
    torch.testing.assert_close(dwa_weights(torch.full((4,), 0.7), 2.0), torch.ones(4))


def test_a_large_temperature_gives_equal_weights() -> None:
    torch.testing.assert_close(
        dwa_weights(torch.tensor([0.2, 3.0]), 1e6), torch.ones(2), rtol=1e-5, atol=1e-5
    )


def test_a_task_missing_from_an_epoch_keeps_its_history() -> None:
    method = DWA()
    method.bind(["a", "b"])
    run_epoch(method, [[2.0, 4.0]])
    run_epoch(method, [[1.0]], tasks=[0])  # task b absent: its history stays [4, nan]
    run_epoch(method, [[3.0]], tasks=[1])
    # a: ratio 1 / 2; b: 3 / 4.
    r = torch.tensor([0.5, 0.75])
    method(torch.ones(2))
    torch.testing.assert_close(method.weights.float(), 2 * torch.softmax(r / 2, dim=0))


def test_epoch_means_count_each_task_over_its_own_steps() -> None:
    means = EpochLossMeans(3)
    means.add(torch.tensor([1.0, 2.0, 3.0]))
    means.add(torch.tensor([5.0]), torch.tensor([2]))
    means.add(torch.tensor([4.0, 6.0]), torch.tensor([0, 2]))
    result = means.close(lambda x: x)
    torch.testing.assert_close(result, torch.tensor([2.5, 2.0, 14.0 / 3]))
    assert means.counts.sum() == 0 and means.sums.abs().sum() == 0
    assert torch.isnan(means.close(lambda x: x)).all()  # an epoch without steps has no means
