"""TAG (Fifty et al., NeurIPS 2021): the lookahead step and Z_{i->j} against hand-computed values."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import seed_everything
from torch import nn

from mtl.encoders.base import Encoder
from mtl.features import Features
from mtl.grouping import TAGAffinity, lookahead_affinity, lookahead_deltas
from mtl.grouping.affinity import preserved_state
from mtl.heads import BinaryHead, ClassificationHead, RegressionHead
from mtl.module import MultiTaskModule
from tests.grouping.test_affinity import fit, toy_module
from tests.toy import TinyEncoder, ToySource


class LinearEncoder(Encoder):
    """``h = θ · x`` for 2-d inputs: one shared weight vector, no bias."""

    def __init__(self, theta: tuple[float, float]) -> None:
        super().__init__()
        self.out_features = 1
        self.linear = nn.Linear(2, 1, bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([theta]))

    def forward(self, inputs: torch.Tensor) -> Features:
        return Features(pooled=self.linear(inputs))


def linear_problem(optimizer) -> tuple[MultiTaskModule, dict]:
    """Two regression tasks on ``h = θ·x`` with heads ``ŷ_a = h`` and ``ŷ_b = 2h``; ``θ = (1, 1)``,
    inputs ``x_1 = (1, 0)``, ``x_2 = (0, 1)``, targets ``y_a = (2, 0)``, ``y_b = (0, 1)``."""
    heads = {"a": RegressionHead(), "b": RegressionHead()}
    module = MultiTaskModule(encoder=LinearEncoder((1.0, 1.0)), heads=heads, optimizer=optimizer)
    with torch.no_grad():
        for task, slope in (("a", 1.0), ("b", 2.0)):
            module.heads[task].net[-1].weight.fill_(slope)
            module.heads[task].net[-1].bias.zero_()
    batch = {
        "inputs": torch.eye(2),
        "targets": {"a": torch.tensor([2.0, 0.0]), "b": torch.tensor([0.0, 1.0])},
        "routes": {"a": None, "b": None},
    }
    return module, batch


def measure(callback: TAGAffinity, module: MultiTaskModule, batch: dict, optimizer=None) -> torch.Tensor:
    """One TAG measurement outside a Trainer (single process: the reduction is the identity)."""
    callback.task_names = module.task_names
    trainer = SimpleNamespace(
        optimizers=[optimizer or module.configure_optimizers()],
        strategy=SimpleNamespace(reduce=lambda tensor, reduce_op: tensor),
    )
    return callback.measure(trainer, module, batch)


def test_lookahead_affinity_formula() -> None:
    before = torch.tensor([2.0, 4.0])
    after = torch.tensor([[1.0, 5.0], [3.0, 1.0]])
    expected = torch.tensor([[0.5, -0.25], [-0.5, 0.75]])
    assert torch.allclose(lookahead_affinity(before, after), expected)
    with pytest.raises(ValueError, match="Expected positive losses"):
        lookahead_affinity(torch.tensor([0.0, 1.0]), after)
    with pytest.raises(ValueError, match=r"shape \[T\].*\[T, T\]"):
        lookahead_affinity(before, torch.zeros(3, 3))


def test_sgd_lookahead_on_a_linear_model_by_hand() -> None:
    """L_a = 1, L_b = 2.5, g_a = (-1, 1), g_b = (4, 2); with lr 0.1 θ_a = (1.1, 0.9), θ_b = (0.6, 0.8):
    L_a(θ_a) = 0.81, L_b(θ_a) = 2.74, L_a(θ_b) = 1.3, L_b(θ_b) = 0.9."""
    module, batch = linear_problem(lambda p: torch.optim.SGD(p, lr=0.1))
    Z = measure(TAGAffinity(), module, batch)
    expected = torch.tensor([[1 - 0.81, 1 - 2.74 / 2.5], [1 - 1.3, 1 - 0.9 / 2.5]], dtype=torch.float64)
    assert torch.allclose(Z, expected, atol=1e-6), Z


def test_adam_lookahead_on_a_linear_model_by_hand() -> None:
    """Adam's first step is -lr g / (|g| + ε) = -lr sign(g): θ_a = (1.1, 0.9), θ_b = (0.9, 0.9);
    L_a(θ_b) = 1.01, L_b(θ_b) = 1.94 (row a as for SGD: |g_a| = 1 elementwise)."""
    module, batch = linear_problem(lambda p: torch.optim.Adam(p, lr=0.1))
    Z = measure(TAGAffinity(), module, batch)
    expected = torch.tensor([[1 - 0.81, 1 - 2.74 / 2.5], [1 - 1.01, 1 - 1.94 / 2.5]], dtype=torch.float64)
    assert torch.allclose(Z, expected, atol=1e-6), Z


def test_plain_sgd_step_ignores_the_optimizer_state() -> None:
    """``step="sgd"`` takes -lr g whatever the optimizer: Adam (or RMSprop) at lr 0.1 gives the SGD values."""
    expected = torch.tensor([[1 - 0.81, 1 - 2.74 / 2.5], [1 - 1.3, 1 - 0.9 / 2.5]], dtype=torch.float64)
    for optimizer in (torch.optim.Adam, torch.optim.RMSprop):
        module, batch = linear_problem(lambda p, cls=optimizer: cls(p, lr=0.1))
        Z = measure(TAGAffinity(step="sgd"), module, batch)
        assert torch.allclose(Z, expected, atol=1e-6), optimizer
    with pytest.raises(ValueError, match="Expected `step` to be 'optimizer'"):
        TAGAffinity(step="adam")


def test_loss_weight_scales_the_lookahead_step() -> None:
    """w_b = 0.5 halves g_b: θ_b = (0.8, 0.9), L_a(θ_b) = (1.44 + 0.81) / 2, L_b(θ_b) = (2.56 + 0.64) / 2."""
    module, batch = linear_problem(lambda p: torch.optim.SGD(p, lr=0.1))
    module.loss_weights["b"] = 0.5
    Z = measure(TAGAffinity(), module, batch)
    assert torch.allclose(Z[1], torch.tensor([1 - 1.125, 1 - 1.6 / 2.5], dtype=torch.float64), atol=1e-6)


OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.05),
    "sgd_momentum": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01),
    "sgd_nesterov": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True, maximize=True),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.9), weight_decay=0.1),
    "adam_amsgrad": lambda p: torch.optim.Adam(p, lr=0.01, amsgrad=True, eps=1e-3),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.5),
    "adamw_maximize": lambda p: torch.optim.AdamW(p, lr=0.01, amsgrad=True, maximize=True),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("warm_steps", [0, 3])
def test_lookahead_equals_the_optimizer_step(name: str, warm_steps: int) -> None:
    """The lookahead update is exactly what ``optimizer.step()`` does with that gradient (two param
    groups with different learning rates, fresh state or after a few real steps)."""
    gen = torch.Generator().manual_seed(1)
    params = [nn.Parameter(torch.randn(3, 2, generator=gen)), nn.Parameter(torch.randn(4, generator=gen))]
    optimizer = OPTIMIZERS[name]([{"params": [params[0]]}, {"params": [params[1]], "lr": 0.2}])
    for _ in range(warm_steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        optimizer.step()
    candidates = [torch.randn(2, *p.shape, generator=gen) for p in params]
    deltas = lookahead_deltas(optimizer, params, candidates)
    for b in range(2):
        trial_params, trial = copy.deepcopy((params, optimizer))
        for p, g in zip(trial_params, candidates, strict=True):
            p.grad = g[b].clone()
        trial.step()
        for new, old, delta in zip(trial_params, params, deltas, strict=True):
            assert torch.allclose(new.detach() - old.detach(), delta[b], atol=1e-6, rtol=1e-5), name


def test_unsupported_optimizer_is_a_clear_error() -> None:
    params = [nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match=r"Expected `optimizer` to be one of torch.optim.SGD.*RMSprop"):
        lookahead_deltas(torch.optim.RMSprop(params), params, [torch.zeros(1, 2)])
    with pytest.raises(ValueError, match="Expected `optimizer` to be one of"):
        fit(TAGAffinity(), module=toy_module(optimizer=lambda p: torch.optim.RMSprop(p, lr=0.01)), epochs=1)


def test_parameter_outside_the_optimizer_is_refused() -> None:
    held, stray = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="held by the optimizer"):
        lookahead_deltas(torch.optim.SGD([held], lr=0.1), [stray], [torch.zeros(1, 2)])


def dropout_module() -> MultiTaskModule:
    heads = {
        "cls": ClassificationHead(num_classes=3, hidden=[8], dropout=0.5),
        "reg": RegressionHead(hidden=[8], dropout=0.5),
        "bin": BinaryHead(hidden=[8], dropout=0.5),
    }
    return MultiTaskModule(
        encoder=TinyEncoder(), heads=heads, optimizer=lambda p: torch.optim.Adam(p, lr=0.01)
    )


def toy_batch(rows: int = 16) -> dict:
    data = ToySource(n=rows).load()
    x = data["cls"].train.inputs
    return {
        "inputs": x,
        "targets": {t: s.train.targets for t, s in data.items()},
        "routes": dict.fromkeys(data),
    }


def test_measurement_leaves_no_trace() -> None:
    """Parameters, buffers, gradients, optimizer state and the random stream are as before."""
    seed_everything(0)
    module = dropout_module()
    optimizer = module.configure_optimizers()
    batch = toy_batch()
    module.task_losses(batch).total.backward()
    optimizer.step()  # non-empty Adam state
    optimizer.zero_grad(set_to_none=True)
    params = copy.deepcopy(module.state_dict())
    state = copy.deepcopy(optimizer.state_dict())
    rng = torch.get_rng_state()
    callback = TAGAffinity()
    callback.task_names = module.task_names
    trainer = SimpleNamespace(
        optimizers=[optimizer], strategy=SimpleNamespace(reduce=lambda tensor, reduce_op: tensor)
    )
    with preserved_state(module):
        callback.measure(trainer, module, batch)
    for key, value in module.state_dict().items():
        assert torch.equal(value, params[key]), key
    assert all(p.grad is None for p in module.parameters())
    after = optimizer.state_dict()
    for key, value in state["state"].items():
        for name, tensor in value.items():
            assert torch.equal(after["state"][key][name], tensor), (key, name)
    assert after["param_groups"] == state["param_groups"]
    assert torch.equal(torch.get_rng_state(), rng)


def test_no_step_means_no_affinity_even_with_dropout() -> None:
    """With lr 0 the lookahead parameters equal the current ones: Z = 0 exactly, which holds only if
    every lookahead forward replays the dropout masks of the first one."""
    seed_everything(0)
    module = dropout_module()
    Z = measure(TAGAffinity(), module, toy_batch(), torch.optim.SGD(module.parameters(), lr=0.0))
    assert torch.equal(Z, torch.zeros(3, 3, dtype=torch.float64))


def test_training_is_not_disturbed() -> None:
    """Fitting with the TAG callback ends at bitwise the same parameters as fitting without it."""
    seed_everything(0)
    reference = dropout_module()
    fit(None, module=reference, epochs=1)
    seed_everything(0)
    measured = dropout_module()
    callback = TAGAffinity(every_n_steps=1)
    fit(callback, module=measured, epochs=1)
    assert callback.measurements == 4
    for (name, a), b in zip(reference.state_dict().items(), measured.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
