"""STCH: the smooth Tchebycheff bounds, the warm-up, the loss normaliser and the objective by hand."""

from __future__ import annotations

import math

import pytest
import torch

from mtl.weighting import STCH, smooth_tchebycheff


@pytest.mark.parametrize("mu", [1.0, 0.1, 1e-3])
def test_smooth_tchebycheff_is_within_mu_log_t_above_the_max(mu: float) -> None:
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        values = torch.randn(4, generator=gen, dtype=torch.float64)
        preference = 0.2 + torch.rand(4, generator=gen, dtype=torch.float64)
        ideal = 0.1 * torch.randn(4, generator=gen, dtype=torch.float64)
        tchebycheff = float((preference * (values - ideal)).max())
        smooth = float(smooth_tchebycheff(values, preference, ideal, mu))
        assert tchebycheff <= smooth <= tchebycheff + mu * math.log(4) + 1e-12


def test_smooth_tchebycheff_tends_to_the_max() -> None:
    values, preference, ideal = torch.tensor([0.3, 1.2, 0.9]), torch.tensor([1.0, 0.5, 1.0]), torch.zeros(3)
    assert float(smooth_tchebycheff(values, preference, ideal, 1e-4)) == pytest.approx(0.9, abs=1e-6)


def test_equal_values_give_the_max_plus_mu_log_t() -> None:
    value = smooth_tchebycheff(torch.full((5,), 0.7), torch.ones(5), torch.zeros(5), 0.3)
    assert float(value) == pytest.approx(0.7 + 0.3 * math.log(5))


def test_warm_up_then_stch_on_the_normalised_log_losses_by_hand() -> None:
    method = STCH(mu=0.5, warmup_epochs=2, preference=[1.0, 2.0], ideal=[0.0, 0.1])
    method.bind(["a", "b"])
    epochs = [[[4.0, 1.0], [2.0, 3.0]], [[2.0, 0.5], [1.0, 1.5]]]  # epoch means [3, 2] then [1.5, 1]
    for epoch in epochs:
        for losses in epoch:
            leaf = torch.tensor(losses, dtype=torch.float64, requires_grad=True)
            objective = method(leaf)
            (gradient,) = torch.autograd.grad(objective, leaf)
            # Warm-up: the sum of the log-losses, gradient 1 / L.
            assert float(objective.detach()) == pytest.approx(math.log(losses[0]) + math.log(losses[1]))
            torch.testing.assert_close(gradient, 1 / leaf.detach())
        method.epoch_end()
    # The normaliser is the last warm-up epoch's mean, [1.5, 1].
    torch.testing.assert_close(method.nadir, torch.tensor([1.5, 1.0]))
    leaf = torch.tensor([0.75, 0.5], dtype=torch.float64, requires_grad=True)
    objective = method(leaf)
    f = [math.log(0.75 / 1.5), math.log(0.5 / 1.0)]
    terms = [1.0 * (f[0] - 0.0) / 0.5, 2.0 * (f[1] - 0.1) / 0.5]
    expected = 2 * 0.5 * math.log(math.exp(terms[0]) + math.exp(terms[1]))
    assert float(objective.detach()) == pytest.approx(expected, rel=1e-6)
    (gradient,) = torch.autograd.grad(objective, leaf)
    torch.testing.assert_close(method.weights, gradient)


def test_the_worst_off_task_dominates_the_gradient_for_a_small_mu() -> None:
    method = STCH(mu=0.01, warmup_epochs=1)
    method.bind(["a", "b", "c"])
    method(torch.tensor([1.0, 1.0, 1.0]))
    method.epoch_end()
    leaf = torch.tensor([0.5, 0.9, 0.2], requires_grad=True)  # task b lags most relative to its mean
    (gradient,) = torch.autograd.grad(method(leaf), leaf)
    # T * lambda_b / L_b for b, ~0 for the others.
    torch.testing.assert_close(gradient, torch.tensor([0.0, 3 / 0.9, 0.0]), rtol=1e-4, atol=1e-4)


def test_the_warm_up_lasts_the_given_number_of_epochs() -> None:
    method = STCH(warmup_epochs=3)
    method.bind(["a", "b"])
    for _ in range(3):
        assert not bool(method.warmed_up)
        method(torch.tensor([2.0, 3.0]))
        method.epoch_end()
    assert bool(method.warmed_up) and int(method.epochs_done) == 3
    torch.testing.assert_close(method.nadir, torch.tensor([2.0, 3.0]))
    method(torch.tensor([1.0, 1.0]))
    method.epoch_end()  # later epochs leave the normaliser alone
    torch.testing.assert_close(method.nadir, torch.tensor([2.0, 3.0]))
