"""GradNorm: the gradient on the weights for T = 2 by hand, the renormalisation, the initial losses."""

from __future__ import annotations

import pytest
import torch

from mtl.weighting import GradNorm, gradnorm_loss


def test_the_gradient_on_the_weights_by_hand_for_two_tasks() -> None:
    method = GradNorm(alpha=1.5)
    method.bind(["a", "b"])
    method(torch.tensor([1.0, 1.0]), grad_norms=torch.ones(2))  # records L(0) = [1, 1]
    with torch.no_grad():
        method.loss_weights.copy_(torch.tensor([3.0, 1.0]))  # renormalised to [1.5, 0.5]
    losses = torch.tensor([0.5, 0.8], requires_grad=True)
    grad_norms = torch.tensor([2.0, 1.0], requires_grad=True)
    objective = method(losses, grad_norms=grad_norms)
    method.loss_weights.grad = None
    objective.backward()

    # w n = [3, 0.5], mean 1.75; L / L(0) = [0.5, 0.8], r = [0.5, 0.8] / 0.65; targets 1.75 r^1.5.
    r = [0.5 / 0.65, 0.8 / 0.65]
    targets = [1.75 * r[0] ** 1.5, 1.75 * r[1] ** 1.5]  # [1.1806, 2.3895]
    l_grad = abs(3.0 - targets[0]) + abs(0.5 - targets[1])
    assert float(objective.detach()) == pytest.approx(1.5 * 0.5 + 0.5 * 0.8 + l_grad, rel=1e-6)
    # d L_grad / d w_i = sign(w_i n_i - target_i) n_i = [+2, -1].
    torch.testing.assert_close(method.loss_weights.grad, torch.tensor([2.0, -1.0]))
    # The network sees the weighted sum with fixed weights; the gradient norms get no gradient.
    torch.testing.assert_close(losses.grad, torch.tensor([1.5, 0.5]))
    assert grad_norms.grad is None
    torch.testing.assert_close(method.weights, torch.tensor([1.5, 0.5], dtype=torch.float64))


def test_the_weights_are_renormalised_to_sum_to_the_number_of_tasks() -> None:
    method = GradNorm()
    method.bind(["a", "b", "c"])
    with torch.no_grad():
        method.loss_weights.copy_(torch.tensor([2.0, 1.0, 1.0]))
    method(torch.ones(3), grad_norms=torch.ones(3))
    torch.testing.assert_close(method.loss_weights.detach(), torch.tensor([1.5, 0.75, 0.75]))


def test_zero_alpha_targets_the_mean_weighted_norm() -> None:
    weights = torch.tensor([1.0, 1.0], requires_grad=True)
    loss = gradnorm_loss(
        weights, torch.tensor([3.0, 1.0]), torch.tensor([0.1, 5.0]), torch.ones(2), alpha=0.0
    )
    assert float(loss.detach()) == pytest.approx(abs(3 - 2) + abs(1 - 2))


def test_the_initial_losses_are_the_first_calls_and_survive_a_checkpoint_of_the_parent_module() -> None:
    def parent() -> torch.nn.ModuleDict:
        method = GradNorm()
        method.bind(["a", "b"])
        return torch.nn.ModuleDict({"weighting": method})

    trained, restored = parent(), parent()
    trained["weighting"](torch.tensor([2.0, 5.0]), grad_norms=torch.ones(2))
    trained["weighting"](torch.tensor([1.0, 1.0]), grad_norms=torch.ones(2))
    torch.testing.assert_close(trained["weighting"].initial_losses, torch.tensor([2.0, 5.0]))
    restored["weighting"](torch.tensor([9.0, 9.0]), grad_norms=torch.ones(2))  # its own first call
    restored.load_state_dict(trained.state_dict())  # as Lightning restores the whole module
    restored["weighting"](torch.tensor([0.5, 0.5]), grad_norms=torch.ones(2))
    torch.testing.assert_close(restored["weighting"].initial_losses, torch.tensor([2.0, 5.0]))
    # A state saved before the first call makes the next call record its losses again.
    restored.load_state_dict(parent().state_dict())
    restored["weighting"](torch.tensor([0.5, 0.25]), grad_norms=torch.ones(2))
    torch.testing.assert_close(restored["weighting"].initial_losses, torch.tensor([0.5, 0.25]))


def test_the_slower_task_gains_weight_during_training() -> None:
    method = GradNorm(alpha=1.0)
    method.bind(["slow", "fast"])
    optimizer = torch.optim.SGD(method.parameters(), lr=0.05)
    method(torch.tensor([1.0, 1.0]), grad_norms=torch.ones(2))
    for step in range(1, 30):
        losses = torch.tensor([0.9, 0.3])  # "slow" kept 90 % of its initial loss, "fast" 30 %
        optimizer.zero_grad()
        method(losses, step=step, grad_norms=torch.ones(2)).backward()
        optimizer.step()
    method(torch.tensor([0.9, 0.3]), grad_norms=torch.ones(2))
    # Equal gradient norms: the balance is reached at w_i proportional to r_i = [1.5, 0.5].
    torch.testing.assert_close(
        method.weights, torch.tensor([1.5, 0.5], dtype=torch.float64), rtol=0, atol=0.06
    )
