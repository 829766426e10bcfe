"""HoME: hierarchy mask, normalised Swish experts, feature and self gates, errors, contract, training."""

from __future__ import annotations

import pytest
import torch

from mtl.features import Features
from mtl.necks.home import HoME
from mtl.necks.home_gates import FeatureGate, SwishExperts

WIDTH = 6
TASKS = ["a", "b", "c"]
CATEGORIES = {"a": "x", "b": "y", "c": "x"}
ROUTES = {"a": torch.tensor([0, 2, 4]), "b": None, "c": torch.tensor([1])}


def make(seed: int = 0, **kwargs) -> HoME:
    torch.manual_seed(seed)
    options = {
        "num_shared_experts": 2,
        "num_task_experts": 1,
        "expert_hidden": [8, 5],
        "task_categories": CATEGORIES,
        "num_category_experts": 2,
        "feature_gate_rank": 3,
    }
    neck = HoME(**{**options, **kwargs})
    neck.bind(WIDTH, TASKS)
    return neck


def features(kind: str = "pooled", rows: int = 6) -> Features:
    generator = torch.Generator().manual_seed(1)
    pooled = torch.randn(rows, WIDTH, generator=generator)
    if kind == "pooled":
        return Features(pooled=pooled)
    tokens = torch.randn(rows, 4, WIDTH, generator=generator)
    mask = torch.ones(rows, 4, dtype=torch.long)
    mask[0, 3] = 0
    return Features(pooled=pooled, tokens=tokens, mask=mask)


def outputs(neck: HoME, inputs: Features, routes=ROUTES) -> dict[str, list[torch.Tensor]]:
    out = neck(inputs, routes)
    return {t: [f.pooled] + ([] if f.tokens is None else [f.tokens]) for t, f in out.features.items()}


# ------------------------------------------------------------------------------------- contract
@pytest.mark.parametrize("kind", ["pooled", "tokens"])
def test_outputs_have_the_declared_width_and_rows_and_are_finite(kind):
    neck = make()
    inputs = features(kind)
    out = neck(inputs, ROUTES)
    assert sorted(out.features) == sorted(ROUTES) and out.aux_loss is None
    for task, rows in ROUTES.items():
        n = len(inputs.pooled) if rows is None else len(rows)
        assert out.features[task].pooled.shape == (n, neck.out_features(WIDTH)) == (n, 5)
        assert torch.isfinite(out.features[task].pooled).all()
        if kind == "tokens":
            assert out.features[task].tokens.shape == (n, 4, 5)
            assert torch.isfinite(out.features[task].tokens).all()
            assert torch.equal(out.features[task].mask, inputs.mask if rows is None else inputs.mask[rows])


@pytest.mark.parametrize("kind", ["pooled", "tokens"])
def test_backward_reaches_the_inputs_and_every_parameter(kind):
    neck = make()
    with torch.no_grad():  # LoRA-style zero init gives the feature gates' down-projection no gradient
        neck.feature_gates.up.normal_()
    inputs = features(kind)
    pooled = inputs.pooled.clone().requires_grad_(True)
    inputs = Features(pooled=pooled, tokens=inputs.tokens, mask=inputs.mask)
    sum(t.pow(2).sum() + t.sum() for ts in outputs(neck, inputs).values() for t in ts).backward()
    assert pooled.grad is not None and pooled.grad.abs().sum() > 0
    for name, parameter in neck.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kind", ["pooled", "tokens"])
def test_state_dict_round_trip_gives_identical_outputs(kind):
    source = make(seed=0)
    source(features(kind, rows=8), {t: None for t in TASKS})  # move the running statistics
    source.eval()
    target = make(seed=1).eval()
    target.load_state_dict(source.state_dict())
    with torch.no_grad():
        expected, got = outputs(source, features(kind)), outputs(target, features(kind))
    for task in expected:
        for a, b in zip(expected[task], got[task], strict=True):
            assert torch.equal(a, b)


def test_same_seed_same_result():
    first, second = make(seed=3).eval(), make(seed=3).eval()
    with torch.no_grad():
        expected, got = outputs(first, features("tokens"))["a"], outputs(second, features("tokens"))["a"]
    for a, b in zip(expected, got, strict=True):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------------- hierarchy mask
def test_gates_sum_to_one_over_visible_experts_and_are_zero_elsewhere():
    neck = make()
    weights = neck.expert_weights(features("tokens"))
    # Level 2: [a's, b's, c's | x's (2), y's (2) | shared (2)]
    visible = {"a": [0, 3, 4, 7, 8], "b": [1, 5, 6, 7, 8], "c": [2, 3, 4, 7, 8]}
    for task, columns in visible.items():
        w = weights[task]
        assert w.shape == (6, 5, 9)
        assert torch.allclose(w.sum(-1), torch.ones(6, 5))
        hidden = [k for k in range(9) if k not in columns]
        assert torch.equal(w[..., hidden], torch.zeros_like(w[..., hidden]))
        assert (w[..., columns] > 0).all()
    assert neck.meta_visible.tolist() == [[0, 1, 4, 5], [2, 3, 4, 5]]
    assert neck.source.tolist() == [0, 1, 0, 0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("train", [False, True])
def test_masked_out_experts_do_not_change_a_task(train):
    neck = make().train(train)
    inputs = features("tokens")
    with torch.no_grad():
        before = outputs(neck, inputs)["a"]
        for weight in neck.experts.weights:  # every level-2 expert task a cannot see: b's and y's
            weight[[1, 5, 6]] = torch.randn_like(weight[[1, 5, 6]]) * 10
        for parameter in [*neck.gates["b"].parameters(), *neck.self_gates["c"].parameters()]:
            parameter.normal_()
        after = outputs(neck, inputs)["a"]
        for a, b in zip(before, after, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        neck.experts.weights[0][3].normal_()  # one of category x's experts: visible to a
        assert not torch.allclose(outputs(neck, inputs)["a"][0], before[0])


def test_without_categories_all_tasks_share_one_category():
    neck = make(task_categories=None, num_category_experts=1)
    assert neck.categories == ["all"] and neck.meta_visible.tolist() == [[0, 1, 2]]
    assert neck.meta_shared_gate is not None and neck.experts.num_experts == 3 + 1 + 2


def test_no_shared_experts_means_no_shared_branch():
    neck = make(num_shared_experts=0)
    assert neck.meta_shared_gate is None and neck.meta_experts.num_experts == 4
    out = neck(features(), ROUTES)
    assert out.stats["gate/a"].shape == (1 + 2,)


def test_stats_are_mean_gate_distributions_in_the_documented_order():
    neck = make()
    out = neck(features("tokens"), ROUTES)
    for task in ROUTES:
        assert out.stats[f"gate/{task}"].shape == (1 + 2 + 2,)
        assert torch.isclose(out.stats[f"gate/{task}"].sum(), torch.tensor(1.0))
        assert torch.isclose(out.stats[f"gate_tokens/{task}"].sum(), torch.tensor(1.0))
        assert out.stats[f"self_gate/{task}"].shape == (2 + 2,)
        assert ((out.stats[f"self_gate/{task}"] > 0) & (out.stats[f"self_gate/{task}"] < 1)).all()
    for category in ("x", "y"):
        assert torch.isclose(out.stats[f"meta_gate/{category}"].sum(), torch.tensor(1.0))
    assert "gate/c" in out.stats and "self_gate/c" in out.stats


# ------------------------------------------------------------------------ experts and the gates
def test_batch_normalised_experts_have_zero_mean_unit_variance_per_feature_and_swish():
    torch.manual_seed(0)
    experts = SwishExperts(3, 4, [16, 8], norm="batch").train()
    normed: list[torch.Tensor] = []
    experts.norms[-1].register_forward_hook(lambda module, args, out: normed.append(out))
    x = torch.randn(256, 4) * torch.tensor([10.0, 0.1, 3.0, 1.0]) + 5
    out = experts(x)
    z = normed[0]  # [256, 3, 8]: per (expert, feature) over rows
    assert torch.allclose(z.mean(0), torch.zeros(3, 8), atol=1e-5)
    assert torch.allclose(z.var(0, unbiased=False), torch.ones(3, 8), atol=1e-3)
    torch.testing.assert_close(out, torch.nn.functional.silu(z))
    assert (out < 0).any() and (out != 0).all()  # Swish keeps the negative half, unlike ReLU


def test_layer_normalised_experts_have_zero_mean_unit_variance_per_expert_row():
    torch.manual_seed(0)
    experts = SwishExperts(3, 4, [16], norm="layer")
    normed: list[torch.Tensor] = []
    experts.norms[-1].register_forward_hook(lambda module, args, out: normed.append(out))
    experts(torch.randn(2, 5, 4) * 7)
    z = normed[0]  # [2, 5, 3, 16]
    assert torch.allclose(z.mean(-1), torch.zeros(2, 5, 3), atol=1e-5)
    assert torch.allclose(z.var(-1, unbiased=False), torch.ones(2, 5, 3), atol=1e-3)


def test_home_with_layer_norm_is_independent_of_the_batch():
    neck = make(expert_norm="layer").train()
    inputs = features()
    whole = neck(inputs, {"a": None}).features["a"].pooled
    alone = neck(Features(pooled=inputs.pooled[:1]), {"a": None}).features["a"].pooled
    torch.testing.assert_close(whole[:1], alone)


def test_feature_gate_is_identity_at_init_and_in_zero_two_range():
    torch.manual_seed(0)
    gate = FeatureGate(4, 6, rank=2)
    x = torch.randn(10, 3, 6)
    assert torch.equal(gate(x), x.unsqueeze(-2).expand(10, 3, 4, 6))
    with torch.no_grad():
        gate.up.normal_(std=3.0)  # logits of a few units: far from float saturation
    g = gate.gates(x)
    assert g.shape == (10, 3, 4, 6) and (g > 0).all() and (g < 2).all()
    assert (g < 0.5).any() and (g > 1.5).any()
    torch.testing.assert_close(gate(x), x.unsqueeze(-2) * g)
    assert not torch.allclose(g[:, :, 0], g[:, :, 1])  # a private input per expert


def test_self_gate_is_a_sigmoid_weighted_residual_of_the_level_one_experts():
    neck = make().eval()
    inputs = features()
    with torch.no_grad():
        for norm in neck.experts.norms[-1:]:  # level-2 experts output silu(0) = 0
            norm.norm.weight.zero_()
            norm.norm.bias.zero_()
        meta, branches, _, _ = neck.meta_level(inputs.pooled)
        got = neck(inputs, {"b": None}).features["b"].pooled
        h = branches[:, 1]  # task b is in category y (index 1)
        expected = torch.einsum("bk,bko->bo", torch.sigmoid(neck.self_gates["b"](h)), meta[:, [2, 3, 4, 5]])
    torch.testing.assert_close(got, expected)


def test_switches_remove_the_feature_and_self_gates():
    neck = make(feature_gate=False, self_gate=False)
    assert neck.feature_gates is None and neck.self_gates is None
    out = neck(features("tokens"), ROUTES)
    assert not any(key.startswith("self_gate/") for key in out.stats)
    assert torch.isfinite(out.features["a"].tokens).all()


# ------------------------------------------------------------------------------ routes and tokens
@pytest.mark.parametrize("kind", ["pooled", "tokens"])
def test_routes_are_honoured(kind):
    neck = make().eval()
    inputs = features(kind)
    with torch.no_grad():
        full = outputs(neck, inputs, {t: None for t in TASKS})
        routed = outputs(neck, inputs)
    for task, rows in ROUTES.items():
        for a, b in zip(routed[task], full[task], strict=True):
            torch.testing.assert_close(a, b if rows is None else b[rows])


def test_route_tokens_off_routes_only_pooled():
    neck = make(route_tokens=False)
    out = neck(features("tokens"), ROUTES)
    assert all(f.tokens is None and f.pooled.shape[-1] == 5 for f in out.features.values())


# ------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("kwargs", "tasks", "match"),
    [
        ({"task_categories": {"a": "x", "b": "y"}}, TASKS, r"task\(s\) \['c'\] have none"),
        ({"task_categories": {**CATEGORIES, "d": "z"}}, TASKS, r"category\(ies\) \['z'\] have none"),
        ({"task_categories": {**CATEGORIES, "d": "x"}}, TASKS, r"unknown task\(s\) \['d'\]"),
    ],
)
def test_bad_categories_fail_at_bind(kwargs, tasks, match):
    neck = HoME(1, 1, [4], **kwargs)
    with pytest.raises(ValueError, match=match):
        neck.bind(WIDTH, tasks)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_category_experts": 0}, "category needs experts of its own"),
        ({"task_categories": {"a": ""}}, "non-empty category names"),
        ({"task_categories": ["a"]}, "non-empty category names"),
        ({"expert_norm": "group"}, "'batch' or 'layer'"),
        ({"feature_gate_rank": 0}, "feature_gate_rank"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_hyper_parameters_fail_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HoME(1, 1, [4], **kwargs)


def test_clear_errors_for_unbound_neck_unknown_tasks_and_wrong_widths():
    with pytest.raises(RuntimeError, match="bound"):
        HoME(1, 1, [4])(features(), {"a": None})
    neck = make()
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['z'\]"):
        neck(features(), {"z": None})
    with pytest.raises(ValueError, match="width 6"):
        neck(Features(pooled=torch.randn(3, 7)), {"a": None})
