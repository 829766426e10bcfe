"""The contract every loss weighting honours: binding, a finite differentiable objective, effective
weights equal to the objective's gradient, checkpoint round trips and clear errors."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
import torch

import mtl.weighting as weighting
from mtl.weighting import LossWeighting
from tests.weighting.helpers import TASKS, fake_grad_norms, loss_sequence, train

# Each method with settings that reach its adaptive state within a few short epochs.
FACTORIES: dict[str, Callable[[], LossWeighting]] = {
    "EW": weighting.EW,
    "UW": weighting.UW,
    "DWA": weighting.DWA,
    "GLS": weighting.GLS,
    "RLW": weighting.RLW,
    "FAMO": weighting.FAMO,
    "IMTLL": weighting.IMTLL,
    "STCH": lambda: weighting.STCH(warmup_epochs=1),
    "GradNorm": weighting.GradNorm,
}
NAMES = list(FACTORIES)
STATEFUL = {"UW", "DWA", "FAMO", "IMTLL", "STCH", "GradNorm"}


def bound(name: str, tasks: list[str] = TASKS) -> LossWeighting:
    method = FACTORIES[name]()
    method.bind(list(tasks))
    return method


def objective_and_gradient(
    method: LossWeighting, losses: torch.Tensor, step: int = 0, tasks: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    leaf = losses.detach().clone().requires_grad_(True)
    grad_norms = fake_grad_norms(leaf) if method.needs_grad_norms else None
    objective = method(leaf, step=step, tasks=tasks, grad_norms=grad_norms)
    (gradient,) = torch.autograd.grad(objective, leaf)
    return objective.detach(), gradient


def test_every_method_is_exported_from_one_module() -> None:
    assert set(NAMES) <= set(weighting.__all__)
    assert all(issubclass(getattr(weighting, name), LossWeighting) for name in NAMES)


def test_capabilities() -> None:
    assert {n for n in NAMES if FACTORIES[n]().requires_all_tasks} == {"GLS", "FAMO", "STCH", "GradNorm"}
    assert {n for n in NAMES if FACTORIES[n]().needs_grad_norms} == {"GradNorm"}
    assert {n for n in NAMES if FACTORIES[n]().needs_losses_after_step} == {"FAMO"}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("num_tasks", [1, 4])
def test_the_objective_is_a_finite_scalar_whose_gradient_reaches_every_loss(
    name: str, num_tasks: int
) -> None:
    method = bound(name, [f"t{i}" for i in range(num_tasks)])
    objective, gradient = objective_and_gradient(method, torch.linspace(0.3, 2.0, num_tasks))
    assert objective.shape == ()
    assert torch.isfinite(objective)
    assert torch.isfinite(gradient).all()
    assert (gradient > 0).all()


@pytest.mark.parametrize("name", NAMES)
def test_the_weights_are_the_gradient_of_the_objective_with_respect_to_the_losses(name: str) -> None:
    method = bound(name)
    train(method, loss_sequence(6))  # three epochs: adaptive state away from its initial value
    _, gradient = objective_and_gradient(method, torch.tensor([0.8, 1.7, 0.4]), step=6)
    assert method.weights is not None
    assert method.weights.dtype == torch.float64 and method.weights.shape == (len(TASKS),)
    torch.testing.assert_close(method.weights, gradient.double(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_a_state_dict_round_trip_restores_the_behaviour(name: str) -> None:
    losses = loss_sequence(10)
    trained = bound(name)
    train(trained, losses[:6])
    buffer = io.BytesIO()
    torch.save(trained.state_dict(), buffer)
    buffer.seek(0)
    restored = bound(name)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    fresh = bound(name)

    after = train(trained, losses[6:], first_step=6)
    assert torch.equal(torch.stack(train(restored, losses[6:], first_step=6)), torch.stack(after))
    torch.testing.assert_close(restored.weights, trained.weights, rtol=0, atol=0)
    if name in STATEFUL:  # the round trip carries state that a fresh method lacks
        assert not torch.allclose(torch.stack(train(fresh, losses[6:], first_step=6)), torch.stack(after))


@pytest.mark.parametrize("name", NAMES)
def test_an_unbound_method_says_how_to_bind_it(name: str) -> None:
    with pytest.raises(RuntimeError, match=r"bind\(tasks\)"):
        FACTORIES[name]()(torch.ones(3))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("count", [2, 4])
def test_a_wrong_number_of_losses_is_rejected(name: str, count: int) -> None:
    method = bound(name)
    grad_norms = torch.ones(3) if method.needs_grad_norms else None
    with pytest.raises(ValueError, match=rf"Expected 3 losses .* but got {count}"):
        method(torch.ones(count), grad_norms=grad_norms)


@pytest.mark.parametrize("name", NAMES)
def test_losses_that_are_not_a_float_vector_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="Expected `losses` to be a 1-D floating-point tensor"):
        bound(name)(torch.ones(3, 1))


@pytest.mark.parametrize("name", [n for n in NAMES if FACTORIES[n]().requires_all_tasks])
def test_a_subset_of_tasks_is_rejected_where_every_task_is_required(name: str) -> None:
    method = bound(name)
    grad_norms = torch.ones(3) if method.needs_grad_norms else None
    with pytest.raises(ValueError, match=r"every task's loss at every step .* \['a', 'c'\]"):
        method(torch.ones(2), tasks=torch.tensor([0, 2]), grad_norms=grad_norms)


@pytest.mark.parametrize("name", [n for n in NAMES if not FACTORIES[n]().requires_all_tasks])
def test_a_subset_of_tasks_uses_those_tasks_weights(name: str) -> None:
    method = bound(name)
    train(method, loss_sequence(6))
    full, full_gradient = objective_and_gradient(method, torch.tensor([0.8, 1.7, 0.4]), step=6)
    subset = torch.tensor([2, 0])
    part, part_gradient = objective_and_gradient(method, torch.tensor([0.4, 0.8]), step=6, tasks=subset)
    # Every method here is a weighted sum (plus, for UW/IMTL-L, terms of the present tasks only).
    torch.testing.assert_close(part_gradient, full_gradient[subset])
    assert torch.isfinite(part) and method.weights.shape == (len(TASKS),)
    if name in ("EW", "DWA", "RLW"):
        torch.testing.assert_close(part, (full_gradient[subset] * torch.tensor([0.4, 0.8])).sum())
    assert torch.isfinite(full)


def test_grad_norms_are_required_by_gradnorm() -> None:
    with pytest.raises(ValueError, match=r"Expected `grad_norms` of shape \[3\] for GradNorm, but got None"):
        bound("GradNorm")(torch.ones(3))


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: weighting.UW(lr=0.0), "`lr` of UW to be > 0"),
        (lambda: weighting.DWA(temperature=0.0), "`temperature` to be > 0"),
        (lambda: weighting.GLS(eps=-1.0), "`eps` to be >= 0"),
        (lambda: weighting.RLW(seed=-1), "`seed` to be a non-negative integer"),
        (lambda: weighting.FAMO(beta=0.0), "`beta` to be > 0"),
        (lambda: weighting.FAMO(gamma=-0.1), "`gamma` to be >= 0"),
        (lambda: weighting.FAMO(update="rmsprop"), "`update` to be 'adam' or 'sgd'"),
        (lambda: weighting.STCH(mu=0.0), "`mu` to be > 0"),
        (lambda: weighting.STCH(warmup_epochs=0), "`warmup_epochs` to be an integer >= 1"),
        (lambda: weighting.STCH(preference=[1.0, -1.0, 1.0]), "`preference` to be positive"),
        (lambda: weighting.GradNorm(alpha=-1.0), "`alpha` to be >= 0"),
    ],
)
def test_invalid_hyper_parameters_are_named(factory: Callable[[], LossWeighting], message: str) -> None:
    with pytest.raises(ValueError, match=f"Expected {message}"):
        factory()


@pytest.mark.parametrize(
    ("factory", "name"),
    [
        (lambda: weighting.FAMO(min_losses=[0.0, 0.0]), "`min_losses`"),
        (lambda: weighting.STCH(preference=[1.0, 2.0]), "`preference`"),
        (lambda: weighting.STCH(ideal=[0.0]), "`ideal`"),
    ],
)
def test_per_task_hyper_parameters_must_match_the_tasks(
    factory: Callable[[], LossWeighting], name: str
) -> None:
    with pytest.raises(ValueError, match=f"Expected {name} to have one .* per task \\(3"):
        factory().bind(TASKS)


@pytest.mark.parametrize("name", ["UW", "IMTLL", "GradNorm"])
def test_learnt_weights_are_parameters_with_their_own_learning_rate(name: str) -> None:
    method = getattr(weighting, name)(lr=0.05)
    method.bind(TASKS)
    params = list(method.parameters())
    assert method.lr == 0.05
    assert len(params) == 1 and params[0].shape == (len(TASKS),) and params[0].requires_grad
