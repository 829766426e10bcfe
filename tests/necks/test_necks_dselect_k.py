"""DSelect-k against its definitions (smooth-step, binary-encoded selectors, entropy regulariser),
plus the neck contract, routing, tokens, errors and a short end-to-end training run."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from mtl.features import Features
from mtl.necks.dselect_k import DSelectGate, DSelectK, binary_codes, smooth_step
from tests.necks import builders
from tests.necks.builders import WIDTH, expert_outputs, pooled_features, token_features

TASKS = ["a", "b"]


def bound(neck: DSelectK, tasks: list[str] = TASKS) -> DSelectK:
    return builders.bound(neck, tasks)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def saturated_z(expert: int, num_bits: int, magnitude: float = 10.0) -> Tensor:
    """``z`` whose smooth-steps are exactly the binary code of ``expert`` (LSB first)."""
    return torch.tensor([magnitude if (expert >> j) & 1 else -magnitude for j in range(num_bits)])


# ------------------------------------------------------------------------------------ smooth-step
@pytest.mark.parametrize("gamma", [0.5, 1.0, 3.0])
def test_smooth_step_matches_its_closed_form(gamma):
    points = torch.tensor(
        [-2 * gamma, -gamma / 2, -gamma / 4, 0.0, gamma / 8, gamma / 2, 5 * gamma], dtype=torch.float64
    )
    expected = []
    for t in points.tolist():
        if t <= -gamma / 2:
            expected.append(0.0)
        elif t >= gamma / 2:
            expected.append(1.0)
        else:
            expected.append(-2 * t**3 / gamma**3 + 3 * t / (2 * gamma) + 0.5)
    torch.testing.assert_close(smooth_step(points, gamma), torch.tensor(expected, dtype=torch.float64))
    assert smooth_step(torch.tensor(0.0), gamma) == 0.5


@pytest.mark.parametrize("gamma", [0.5, 1.0, 3.0])
def test_smooth_step_is_continuously_differentiable_at_the_knots(gamma):
    def value(t: float) -> float:
        return float(smooth_step(torch.tensor(t, dtype=torch.float64), gamma))

    def derivative(t: float, h: float = 1e-7) -> float:
        return (value(t + h) - value(t - h)) / (2 * h)

    # The peak slope, at 0, is 3 / (2 gamma).
    assert abs(derivative(0.0) - 3 / (2 * gamma)) < 1e-6
    for knot, outside in ((-gamma / 2, 0.0), (gamma / 2, 1.0)):
        inward = -math.copysign(1.0, knot)
        # Continuous: the cubic meets the constant piece.
        assert abs(value(knot) - outside) < 1e-12
        assert abs(value(knot + inward * 1e-9) - outside) < 1e-8
        # Differentiable with slope 0 from both sides (the constant piece is flat).
        h = 1e-6
        assert abs((value(knot + inward * h) - value(knot)) / h) < 10 * h / gamma**2
        assert (value(knot - inward * h) - value(knot)) / h == 0.0
        # C¹: the slope inside the cubic region tends to 0 as the knot is approached (S' ≈ 6δ/gamma²).
        for delta in (1e-2, 1e-3, 1e-4):
            slope = derivative(knot + inward * delta)
            assert 0 <= slope <= 7 * delta / gamma**2, (delta, slope)


def test_binary_codes_are_lsb_first():
    codes = binary_codes(3)
    assert codes.shape == (8, 3)
    assert codes[6].tolist() == [False, True, True]  # 6 = 0b110
    assert all(sum(int(b) << j for j, b in enumerate(row)) == i for i, row in enumerate(codes.tolist()))


# ------------------------------------------------------------------------------------ the gate
@pytest.mark.parametrize("num_experts", [2, 4, 5, 6, 7])
@pytest.mark.parametrize("per_example", [True, False])
def test_weights_are_a_probability_vector_and_phantom_experts_get_zero(num_experts, per_example):
    gate = DSelectGate(WIDTH, num_experts, k=2, gamma=1.0, per_example=per_example)
    num_bits = math.ceil(math.log2(num_experts))
    assert gate.num_bits == num_bits and gate.codes.shape == (2**num_bits, num_bits)
    with torch.no_grad():  # spread z over the cubic region and beyond, so weights are far from uniform
        (gate.z_proj.weight if per_example else gate.z).uniform_(-1.0, 1.0)
    weights, selectors = gate(torch.randn(7, WIDTH))
    assert weights.shape == (7, num_experts)
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(7))
    torch.testing.assert_close(selectors.sum(-1), torch.ones(selectors.shape[:-1]))
    # Selectors leaning towards every code, phantom ones (num_experts <= i < 2^m) included: restricted
    # to the real experts and renormalised, each is still a distribution over the real experts.
    z = torch.stack([saturated_z(i, num_bits, 0.3) for i in range(2**num_bits)]).unsqueeze(1)  # [2^m, 1, m]
    r = gate.selectors(z)  # [2^m, 1, n]
    assert r.shape == (2**num_bits, 1, num_experts)
    torch.testing.assert_close(r.sum(-1), torch.ones(2**num_bits, 1))


def test_phantom_experts_get_zero_weight_and_the_rest_is_renormalised():
    gate = DSelectGate(WIDTH, num_experts=3, k=1, gamma=1.0, per_example=False)
    # S(z) = (0.75, 0.75)-ish: unnormalised code weights r_i = Π_j over 4 codes; expert 3 does not exist.
    z = torch.tensor([[0.2, 0.1]])
    s = smooth_step(z[0], 1.0)
    raw = torch.stack([(1 - s[0]) * (1 - s[1]), s[0] * (1 - s[1]), (1 - s[0]) * s[1], s[0] * s[1]])
    assert raw[3] > 0.2  # the phantom code 3 = 0b11 carries mass before the guard
    expected = raw[:3] / raw[:3].sum()
    torch.testing.assert_close(gate.selectors(z)[0], expected)
    # All mass on the phantom code 3 = 0b11: falls back to uniform over the real experts.
    torch.testing.assert_close(gate.selectors(torch.tensor([[5.0, 5.0]]))[0], torch.full((3,), 1 / 3))


@pytest.mark.parametrize("num_experts", [3, 4, 5, 8])
def test_saturated_selector_is_one_hot_on_the_encoded_expert(num_experts):
    gate = DSelectGate(WIDTH, num_experts, k=1, gamma=1.0, per_example=False)
    for expert in range(num_experts):
        with torch.no_grad():
            gate.z.copy_(saturated_z(expert, gate.num_bits).unsqueeze(0))
        weights, _ = gate(torch.randn(2, WIDTH))
        assert torch.equal(
            weights, torch.nn.functional.one_hot(torch.tensor([expert, expert]), num_experts).float()
        )


def test_k_selectors_saturated_on_distinct_experts_give_the_softmax_of_alpha():
    gate = DSelectGate(WIDTH, num_experts=6, k=2, gamma=1.0, per_example=False)
    with torch.no_grad():
        gate.z.copy_(torch.stack([saturated_z(1, 3), saturated_z(4, 3)]))
        gate.alpha.copy_(torch.tensor([0.3, -0.7]))
    weights, _ = gate(torch.randn(1, WIDTH))
    alpha = torch.softmax(torch.tensor([0.3, -0.7]), 0)
    expected = torch.zeros(6)
    expected[1], expected[4] = alpha
    torch.testing.assert_close(weights[0], expected)
    assert (weights[0] > 0).sum() == 2  # exactly k non-zeros


def test_per_example_gate_is_linear_in_the_input():
    gate = DSelectGate(WIDTH, num_experts=4, k=3, gamma=1.0, per_example=True)
    x = torch.randn(5, WIDTH)
    z = (x @ gate.z_proj.weight.T).view(5, 3, 2)
    alpha = torch.softmax(x @ gate.alpha_proj.weight.T, dim=-1)
    weights, selectors = gate(x)
    torch.testing.assert_close(selectors, gate.selectors(z))
    torch.testing.assert_close(weights, (alpha.unsqueeze(-1) * selectors).sum(1))


# ------------------------------------------------------------------------------------ the neck
@pytest.mark.parametrize("make", [pooled_features, token_features])
@pytest.mark.parametrize("gate", ["per_example", "static"])
def test_dselect_k_is_a_per_task_mixture_of_the_experts(make, gate):
    neck = bound(DSelectK(num_experts=5, k=2, expert_hidden=[7, 4], gate=gate))
    features = make()
    out = neck(features, dict.fromkeys(TASKS))
    for task in TASKS:
        for name in ("pooled", "tokens"):
            x = getattr(features, name)
            if x is None:
                continue
            weights, _ = neck.gates[task](x)
            expected = (weights.unsqueeze(-1) * expert_outputs(neck.experts, x)).sum(-2)
            torch.testing.assert_close(getattr(out.features[task], name), expected)
        assert out.stats[f"gate/{task}"].shape == (5,)
        torch.testing.assert_close(out.stats[f"gate/{task}"].sum(), torch.tensor(1.0))
        if features.tokens is not None:
            assert out.features[task].tokens.shape == (4, 3, 4)
            assert torch.equal(out.features[task].mask, features.mask)
            assert torch.equal(out.features[task].input_ids, features.input_ids)
            assert out.stats[f"gate_tokens/{task}"].shape == (5,)
    assert out.aux_loss is None


@pytest.mark.parametrize("num_experts", [3, 4])
def test_dselect_1_with_a_saturated_selector_is_that_expert(num_experts):
    neck = bound(DSelectK(num_experts=num_experts, k=1, expert_hidden=[4], gate="static"), ["a"])
    features = pooled_features()
    expected = expert_outputs(neck.experts, features.pooled)
    for expert in range(num_experts):
        with torch.no_grad():
            neck.gates["a"].z.copy_(saturated_z(expert, neck.gates["a"].num_bits).unsqueeze(0))
        out = neck(features, {"a": None})
        torch.testing.assert_close(out.features["a"].pooled, expected[:, expert])
        assert torch.equal(
            out.stats["gate/a"], torch.nn.functional.one_hot(torch.tensor(expert), num_experts).float()
        )


def test_entropy_aux_loss_by_hand():
    neck = bound(DSelectK(num_experts=3, k=2, expert_hidden=[4], gate="static", entropy_reg=0.5), ["a"])
    z = torch.tensor([[0.2, -0.1], [8.0, -8.0]])  # selector 2 is one-hot on expert 1 (entropy ~0)
    with torch.no_grad():
        neck.gates["a"].z.copy_(z)
    out = neck(pooled_features(), {"a": None})
    s = smooth_step(z[0], 1.0)
    raw = torch.stack([(1 - s[0]) * (1 - s[1]), s[0] * (1 - s[1]), (1 - s[0]) * s[1]])
    r = raw / raw.sum()
    first = -sum(float(p) * math.log(float(p) + 1e-6) for p in r)
    second = -1.0 * math.log(1.0 + 1e-6)  # the one-hot selector: -1·log(1 + ε) ≈ -1e-6
    torch.testing.assert_close(out.aux_loss, torch.tensor(0.5 * (first + second)))


def test_entropy_aux_loss_per_example_averages_rows_and_real_tokens_and_sums_tasks():
    neck = bound(DSelectK(num_experts=4, k=2, expert_hidden=[4], entropy_reg=2.0))
    features = token_features()
    routes = {"a": torch.tensor([0, 2]), "b": None}
    out = neck(features, routes)
    total = 0.0
    for task, rows in routes.items():
        sel = torch.arange(4) if rows is None else rows
        x = torch.cat([features.pooled[sel].unsqueeze(1), features.tokens[sel]], dim=1)
        _, selectors = neck.gates[task](x)  # [R, 1 + L, k, n]
        entropy = -(selectors * torch.log(selectors + 1e-6)).sum(dim=(-2, -1))  # [R, 1 + L]
        real = torch.cat([torch.ones(len(sel), 1), features.mask[sel].float()], dim=1)
        total += float((entropy * real).sum().detach() / real.sum())
    torch.testing.assert_close(out.aux_loss, torch.tensor(2.0 * total))


def test_entropy_regulariser_gradient_pushes_selectors_towards_binary():
    neck = bound(DSelectK(num_experts=4, k=1, expert_hidden=[4], gate="static", entropy_reg=1.0), ["a"])
    optimizer = torch.optim.SGD(neck.gates.parameters(), lr=0.5)
    first = None
    for _ in range(30):
        aux = neck(pooled_features(), {"a": None}).aux_loss
        first = float(aux.detach()) if first is None else first
        optimizer.zero_grad()
        aux.backward()
        optimizer.step()
    assert float(aux) < 0.5 * first


def test_gradients_reach_experts_gates_and_inputs():
    neck = bound(DSelectK(num_experts=5, k=2, expert_hidden=[6], entropy_reg=0.1)).train()
    pooled = torch.randn(6, WIDTH, requires_grad=True)
    out = neck(Features(pooled=pooled), {"a": None, "b": torch.tensor([1, 3])})
    loss = sum(f.pooled.pow(2).sum() for f in out.features.values()) + out.aux_loss
    loss.backward()
    assert pooled.grad is not None and pooled.grad.abs().sum() > 0
    for name, parameter in neck.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_routes_are_honoured():
    neck = bound(DSelectK(num_experts=3, k=2, expert_hidden=[4]), ["a", "b", "c"])
    features = pooled_features()
    routes = {"a": torch.tensor([0, 2]), "c": torch.tensor([5])}
    out = neck(features, routes)
    assert sorted(out.features) == ["a", "c"]
    assert sorted(k for k in out.stats if k.startswith("gate/")) == ["gate/a", "gate/c"]
    full = neck(features, dict.fromkeys(["a", "b", "c"]))
    for task, rows in routes.items():
        torch.testing.assert_close(out.features[task].pooled, full.features[task].pooled[rows])
    with pytest.raises(ValueError, match="unknown"):
        neck(features, {"d": None})


def test_route_tokens_off_drops_tokens():
    neck = bound(DSelectK(num_experts=3, k=2, expert_hidden=[4], route_tokens=False))
    out = neck(token_features(), dict.fromkeys(TASKS))
    assert out.features["a"].tokens is None and out.features["a"].pooled.shape == (4, 4)


def test_empty_route_gives_empty_features_and_a_finite_aux_loss():
    neck = bound(DSelectK(num_experts=3, k=2, expert_hidden=[4], entropy_reg=1.0))
    out = neck(pooled_features(), {"a": torch.tensor([], dtype=torch.long)})
    assert out.features["a"].pooled.shape == (0, 4) and torch.isfinite(out.aux_loss)


# ------------------------------------------------------------------------------------ contract
CONTRACT = {
    "per_example": lambda: DSelectK(num_experts=5, k=2, expert_hidden=[8, 5], dropout=0.1, entropy_reg=0.01),
    "static": lambda: DSelectK(num_experts=3, k=2, expert_hidden=[7], gate="static", entropy_reg=0.01),
}
ROUTES = {"a": torch.tensor([0, 2, 4]), "b": None}


def contract_neck(name: str, seed: int = 0) -> DSelectK:
    torch.manual_seed(seed)
    neck = CONTRACT[name]()
    neck.bind(WIDTH, TASKS)
    return neck


def outputs(neck: DSelectK, features: Features) -> list[Tensor]:
    out = neck(features, ROUTES)
    return [t for f in out.features.values() for t in (f.pooled, f.tokens) if t is not None]


@pytest.mark.parametrize("make", [pooled_features, token_features])
@pytest.mark.parametrize("name", CONTRACT)
def test_contract_width_finite_backward_and_state_dict(name, make):
    features = make(5) if make is pooled_features else make(5, 4)
    neck = contract_neck(name)
    pooled = features.pooled.clone().requires_grad_(True)
    features = Features(pooled=pooled, tokens=features.tokens, mask=features.mask)
    out = neck(features, ROUTES)
    for task, rows in ROUTES.items():
        n = 5 if rows is None else len(rows)
        assert out.features[task].pooled.shape == (n, neck.out_features(WIDTH))
        assert torch.isfinite(out.features[task].pooled).all()
        if features.tokens is not None:
            assert out.features[task].tokens.shape == (n, 4, neck.out_features(WIDTH))
    assert torch.isfinite(out.aux_loss)
    loss = sum(t.pow(2).sum() for t in outputs(neck, features)) + out.aux_loss
    loss.backward()
    assert pooled.grad is not None and torch.isfinite(pooled.grad).all() and pooled.grad.abs().sum() > 0
    for parameter_name, parameter in neck.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), parameter_name
    # state_dict round trip (the binary codes are a non-persistent buffer, rebuilt on construction)
    source, target = contract_neck(name, seed=0).eval(), contract_neck(name, seed=1).eval()
    assert not any("codes" in key for key in source.state_dict())
    target.load_state_dict(source.state_dict())
    with torch.no_grad():
        for a, b in zip(outputs(source, features), outputs(target, features), strict=True):
            assert torch.equal(a, b)


# ------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 4}, "Expected `k` to be at most `num_experts`"),
        ({"k": 0}, "`k` of DSelectK to be at least 1"),
        ({"num_experts": 0, "k": 1}, "`num_experts` of DSelectK"),
        ({"gamma": 0.0}, "`gamma`"),
        ({"gamma": -1.0}, "`gamma`"),
        ({"gate": "softmax"}, "`gate` of DSelectK to be one of"),
        ({"entropy_reg": -0.1}, "`entropy_reg`"),
        ({"expert_hidden": []}, "`expert_hidden`"),
        ({"dropout": 1.0}, "`dropout`"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, match):
    arguments = {"num_experts": 3, "k": 2, "expert_hidden": [4], **kwargs}
    with pytest.raises(ValueError, match=match):
        DSelectK(**arguments)


def test_forward_before_bind_raises():
    with pytest.raises(RuntimeError, match="bound before forward"):
        DSelectK(3, 2, [4])(pooled_features(), {"a": None})
