"""Gradient-cosine affinity: hand-made gradients, and the callback against per-task backward passes."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import seed_everything

from mtl.grouping import GradientCosineAffinity, gradient_cosines, shared_parameters
from tests.grouping.test_affinity import fit, toy_module
from tests.grouping.test_tag import linear_problem, toy_batch


def test_cosines_of_hand_made_gradients() -> None:
    G = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [-1.0, 0.0], [0.0, 0.0]])
    r = 1 / math.sqrt(2)
    expected = torch.tensor(
        [
            [1.0, 0.0, r, -1.0, 0.0],
            [0.0, 1.0, r, 0.0, 0.0],
            [r, r, 1.0, -r, 0.0],
            [-1.0, 0.0, -r, 1.0, 0.0],
            [0.0, 0.0, 0.0, 0.0, 0.0],  # a zero gradient has no direction
        ],
        dtype=torch.float64,
    )
    assert torch.allclose(gradient_cosines(G), expected)
    with pytest.raises(ValueError, match=r"shape \[T, D\]"):
        gradient_cosines(torch.zeros(3))


def test_linear_model_by_hand() -> None:
    """g_a = (-1, 1), g_b = (4, 2) (see test_tag.linear_problem): cos = (-4 + 2) / (sqrt(2) sqrt(20))."""
    module, batch = linear_problem(lambda p: torch.optim.SGD(p, lr=0.1))
    callback = GradientCosineAffinity()
    callback.task_names = module.task_names
    trainer = SimpleNamespace(strategy=SimpleNamespace(reduce=lambda tensor, reduce_op: tensor))
    C = callback.measure(trainer, module, batch)
    c = -2 / (math.sqrt(2) * math.sqrt(20))
    assert torch.allclose(C, torch.tensor([[1.0, c], [c, 1.0]], dtype=torch.float64))


def test_measure_matches_separate_backward_passes() -> None:
    seed_everything(0)
    module = toy_module()
    batch = toy_batch()
    callback = GradientCosineAffinity()
    callback.task_names = module.task_names
    trainer = SimpleNamespace(strategy=SimpleNamespace(reduce=lambda tensor, reduce_op: tensor))
    C = callback.measure(trainer, module, batch)
    shared = shared_parameters(module)
    rows = []
    for task in module.task_names:
        loss = module.task_losses(batch).losses[task]
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, shared)]).double())
    unit = torch.stack([r / r.norm() for r in rows])
    assert torch.allclose(C, unit @ unit.T, atol=1e-6)
    assert torch.allclose(C, C.T) and torch.allclose(C.diagonal(), torch.ones(3, dtype=torch.float64))


def test_affinity_is_the_mean_of_the_measured_steps() -> None:
    callback = GradientCosineAffinity(every_n_steps=3)
    steps: list[torch.Tensor] = []
    measure = callback.measure

    def recording(trainer, module, batch):
        steps.append(measure(trainer, module, batch))
        return steps[-1]

    callback.measure = recording  # type: ignore[method-assign]
    fit(callback, epochs=2)  # 8 steps: measured at 0, 3, 6
    assert len(steps) == callback.measurements == 3
    assert torch.allclose(callback.affinity(), torch.stack(steps).mean(dim=0))
