"""FAMO: the objective's convex weights and the logit update, by hand and against torch.optim.Adam."""

from __future__ import annotations

import math

import pytest
import torch

from mtl.weighting import FAMO, famo_logit_gradient, famo_objective


def bound(**kwargs: object) -> FAMO:
    method = FAMO(**kwargs)
    method.bind(["a", "b"])
    return method


def test_the_weights_by_hand_at_equal_logits() -> None:
    method = bound()
    losses = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    objective = method(losses)
    # z = [1/2, 1/2]; c = 1 / (0.5 / 1 + 0.5 / 2) = 4/3; weights c z / L = [2/3, 1/3].
    expected = torch.tensor([2 / 3, 1 / 3], dtype=torch.float64)
    torch.testing.assert_close(method.weights, expected)
    (gradient,) = torch.autograd.grad(objective, losses)
    torch.testing.assert_close(gradient, expected)
    assert float(objective.detach()) == pytest.approx(4 / 3 * 0.5 * math.log(2.0))


def test_min_losses_shift_the_losses() -> None:
    z = torch.tensor([0.5, 0.5])
    _, weights = famo_objective(torch.tensor([1.0, 2.0]), z, torch.tensor([0.5, 0.0]), eps=0.0)
    # z / (L - b) = [1, 0.25], normalised to sum 1.
    torch.testing.assert_close(weights, torch.tensor([0.8, 0.2]))


def test_the_sgd_update_by_hand_for_two_tasks() -> None:
    method = bound(update="sgd", beta=0.025, gamma=0.0, eps=1e-12)
    method(torch.tensor([1.0, 2.0]))
    method.after_step(torch.tensor([0.5, 1.8]))
    # delta = [log 2, log(2 / 1.8)]; J^T delta = z (delta - z.delta) = +-(log 2 - log(2 / 1.8)) / 4.
    g = (math.log(2.0) - math.log(2.0 / 1.8)) / 4
    torch.testing.assert_close(method.logits, torch.tensor([-0.025 * g, 0.025 * g]))
    # The task that improved less (b) gains weight.
    method(torch.tensor([1.0, 2.0]))
    z = torch.softmax(method.logits, dim=0)
    assert z[1] > z[0]


def test_the_sgd_update_decays_the_logits() -> None:
    method = bound(update="sgd", beta=0.5, gamma=0.1)
    method.logits.copy_(torch.tensor([1.0, -1.0]))
    method(torch.tensor([1.0, 1.0]))
    method.after_step(torch.tensor([1.0, 1.0]))  # no change: delta = 0, only the decay acts
    torch.testing.assert_close(method.logits, torch.tensor([1.0, -1.0]) * (1 - 0.5 * 0.1))


def test_the_first_adam_step_moves_each_logit_by_the_learning_rate() -> None:
    method = bound(beta=0.025, gamma=0.0)
    method(torch.tensor([1.0, 2.0]))
    method.after_step(torch.tensor([0.5, 1.8]))
    # Adam's first step is lr * g / (|g| + eps) = lr * sign(g).
    torch.testing.assert_close(method.logits, torch.tensor([-0.025, 0.025]), rtol=1e-4, atol=0)


def test_the_logit_gradient_is_the_softmax_vector_jacobian_product() -> None:
    logits = torch.tensor([0.3, -0.2, 0.9], dtype=torch.float64, requires_grad=True)
    delta = torch.tensor([0.5, -0.1, 0.2], dtype=torch.float64)
    (expected,) = torch.autograd.grad(torch.softmax(logits, dim=0), logits, grad_outputs=delta)
    torch.testing.assert_close(famo_logit_gradient(torch.softmax(logits.detach(), dim=0), delta), expected)


def test_the_adam_updates_match_torch_adam_over_several_steps() -> None:
    beta, gamma, eps = 0.05, 1e-2, 1e-8
    method = FAMO(beta=beta, gamma=gamma, eps=eps)
    method.bind(["a", "b", "c"])
    reference = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([reference], lr=beta, weight_decay=gamma)
    gen = torch.Generator().manual_seed(0)
    for _ in range(6):
        before = 0.5 + torch.rand(3, generator=gen, dtype=torch.float64)
        after = before * (0.6 + 0.4 * torch.rand(3, generator=gen, dtype=torch.float64))
        method(before.float())
        method.after_step(after.float())
        delta = torch.log(before + eps) - torch.log(after + eps)
        optimizer.zero_grad()
        (reference.grad,) = torch.autograd.grad(
            torch.softmax(reference, dim=0), reference, grad_outputs=delta
        )
        optimizer.step()
        torch.testing.assert_close(method.logits.double(), reference.detach(), rtol=1e-5, atol=1e-6)


def test_after_step_needs_a_forward_first() -> None:
    method = bound()
    with pytest.raises(RuntimeError, match="Expected FAMO's forward to run before `after_step`"):
        method.after_step(torch.ones(2))
    method(torch.ones(2))
    method.after_step(torch.ones(2))
    with pytest.raises(RuntimeError, match="before `after_step`"):
        method.after_step(torch.ones(2))


def test_after_step_checks_the_shape() -> None:
    method = bound()
    method(torch.ones(2))
    with pytest.raises(ValueError, match=r"Expected `losses` after the step to have shape \(2,\)"):
        method.after_step(torch.ones(3))
