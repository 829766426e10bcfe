"""UW and IMTL-L: learnt per-task scales, checked against their closed-form optima."""

from __future__ import annotations

import math

import pytest
import torch

from mtl.weighting import IMTLL, UW, imtl_l_objective, uncertainty_objective


def test_uw_objective_by_hand() -> None:
    losses, s = torch.tensor([2.0, 0.5]), torch.tensor([0.0, math.log(2.0)])
    expected = 2.0 / 2 + 0.0 + 0.5 / (2 * 2) + math.log(2.0) / 2
    assert float(uncertainty_objective(losses, s)) == pytest.approx(expected)


def test_uw_objective_is_stationary_at_the_closed_form_optimum() -> None:
    losses = torch.tensor([0.3, 1.0, 4.0], dtype=torch.float64)
    s = losses.log().requires_grad_(True)  # exp(s) = L
    (gradient,) = torch.autograd.grad(uncertainty_objective(losses, s), s)
    torch.testing.assert_close(gradient, torch.zeros(3, dtype=torch.float64))
    # ... and it is a minimum: moving s either way increases the objective.
    for shift in (-0.1, 0.1):
        assert uncertainty_objective(losses, s.detach() + shift) > uncertainty_objective(losses, s.detach())


def test_uw_learns_log_variances_equal_to_the_log_losses() -> None:
    method = UW()
    method.bind(["a", "b"])
    losses = torch.tensor([0.25, 3.0])
    optimizer = torch.optim.SGD(method.parameters(), lr=0.5)
    for step in range(400):
        optimizer.zero_grad()
        method(losses, step=step).backward()
        optimizer.step()
    torch.testing.assert_close(method.log_variances.detach().exp(), losses, rtol=1e-3, atol=1e-4)
    # At the optimum the weights are 1 / (2 L_i): the weighted losses are all 1/2.
    torch.testing.assert_close(
        method.weights * losses.double(), torch.full((2,), 0.5, dtype=torch.float64), rtol=1e-3, atol=1e-4
    )


def test_uw_initial_log_variance_sets_the_initial_weights() -> None:
    method = UW(init_log_variance=math.log(4.0))
    method.bind(["a", "b"])
    method(torch.ones(2))
    torch.testing.assert_close(method.weights, torch.full((2,), 1 / 8, dtype=torch.float64))


def test_imtl_l_objective_by_hand() -> None:
    losses, s = torch.tensor([2.0, 0.5]), torch.tensor([0.0, math.log(2.0)])
    expected = (1.0 * 2.0 - 0.0) + (2.0 * 0.5 - math.log(2.0))
    assert float(imtl_l_objective(losses, s)) == pytest.approx(expected)


def test_imtl_l_objective_is_stationary_where_the_scaled_losses_are_one() -> None:
    losses = torch.tensor([0.3, 1.0, 4.0], dtype=torch.float64)
    s = (-losses.log()).requires_grad_(True)  # exp(s) L = 1
    (gradient,) = torch.autograd.grad(imtl_l_objective(losses, s), s)
    torch.testing.assert_close(gradient, torch.zeros(3, dtype=torch.float64))


def test_imtl_l_learns_scales_that_make_every_scaled_loss_one() -> None:
    method = IMTLL()
    method.bind(["a", "b", "c"])
    losses = torch.tensor([0.2, 1.5, 6.0])
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1)
    for step in range(600):
        optimizer.zero_grad()
        method(losses, step=step).backward()
        optimizer.step()
    scaled = method.log_scales.detach().exp() * losses
    torch.testing.assert_close(scaled, torch.ones(3), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("cls", [UW, IMTLL])
def test_absent_tasks_get_no_gradient(cls: type) -> None:
    method = cls()
    method.bind(["a", "b", "c"])
    method(torch.tensor([3.0, 2.0]), tasks=torch.tensor([2, 0])).backward()
    (param,) = method.parameters()
    assert param.grad[1] == 0 and param.grad[0] != 0 and param.grad[2] != 0
