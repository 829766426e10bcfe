"""GLS (geometric mean, its gradient G / (T L_i)) and RLW (seeded random weights)."""

from __future__ import annotations

import math

import pytest
import torch

from mtl.weighting import GLS, RLW, geometric_mean_loss, random_loss_weights


def test_gls_is_the_geometric_mean() -> None:
    method = GLS()
    method.bind(["a", "b", "c"])
    losses = torch.tensor([1.0, 4.0, 2.0], dtype=torch.float64, requires_grad=True)  # product 8
    objective = method(losses)
    assert float(objective.detach()) == pytest.approx(2.0, rel=1e-7)
    (gradient,) = torch.autograd.grad(objective, losses)
    # dG/dL_i = G / (T L_i) = 2 / (3 L_i)
    expected = torch.tensor([2 / 3, 2 / 12, 2 / 6], dtype=torch.float64)
    torch.testing.assert_close(gradient, expected, rtol=1e-7, atol=0)
    torch.testing.assert_close(method.weights, expected, rtol=1e-7, atol=0)


def test_gls_is_scale_invariant_up_to_a_constant() -> None:
    losses = torch.tensor([0.3, 2.0, 7.0], dtype=torch.float64)
    scaled = losses * torch.tensor([1.0, 1000.0, 1.0], dtype=torch.float64)
    ratio = geometric_mean_loss(scaled) / geometric_mean_loss(losses)
    assert float(ratio) == pytest.approx(1000.0 ** (1 / 3), rel=1e-6)


def test_gls_does_not_overflow_for_many_large_losses() -> None:
    losses = torch.full((64,), 1e10)
    assert float(geometric_mean_loss(losses)) == pytest.approx(1e10, rel=1e-5)


def test_rlw_weights_are_identical_for_the_same_seed_and_step() -> None:
    a, b = RLW(seed=7), RLW(seed=7)
    a.bind(["x", "y", "z"])
    b.bind(["x", "y", "z"])
    losses = torch.tensor([1.0, 2.0, 3.0])
    a(losses, step=11)
    b(losses, step=11)
    assert torch.equal(a.weights, b.weights)
    torch.testing.assert_close(random_loss_weights(3, 7, 11).double(), a.weights)


def test_rlw_weights_sum_to_one_and_change_with_the_step_and_the_seed() -> None:
    draws = torch.stack([random_loss_weights(4, 0, step) for step in range(20)])
    torch.testing.assert_close(draws.sum(dim=1), torch.ones(20))
    assert (draws > 0).all()
    assert len({tuple(row.tolist()) for row in draws}) == 20
    assert not torch.equal(random_loss_weights(4, 1, 0), random_loss_weights(4, 0, 0))


def test_rlw_objective_is_the_weighted_sum() -> None:
    method = RLW(seed=3)
    method.bind(["x", "y", "z"])
    losses = torch.tensor([0.5, 1.5, 2.5])
    objective = method(losses, step=5)
    torch.testing.assert_close(objective, (random_loss_weights(3, 3, 5) * losses).sum())


def test_rlw_draws_the_softmax_of_a_standard_normal() -> None:
    # For T = 2, log(w_0 / w_1) = z_0 - z_1 ~ N(0, 2).
    logits = torch.stack([random_loss_weights(2, 0, step) for step in range(4000)]).log()
    difference = logits[:, 0] - logits[:, 1]
    assert abs(float(difference.mean())) < 0.1
    assert float(difference.var()) == pytest.approx(2.0, rel=0.08)
    # Every task is favoured equally often in expectation: E[w_i] = 1 / T.
    weights = torch.stack([random_loss_weights(3, 1, step) for step in range(3000)])
    torch.testing.assert_close(weights.mean(dim=0), torch.full((3,), 1 / 3), rtol=0, atol=0.02)


def test_rlw_rejects_a_negative_step() -> None:
    method = RLW()
    method.bind(["x", "y"])
    with pytest.raises(ValueError, match="Expected `step` to be >= 0"):
        method(torch.ones(2), step=-1)


def test_rlw_weights_are_in_the_losses_dtype() -> None:
    method = RLW()
    method.bind(["x", "y"])
    assert method(torch.ones(2, dtype=torch.float64), step=1).dtype == torch.float64
    assert math.isclose(float(method(torch.ones(2), step=1)), 1.0, rel_tol=1e-6)
