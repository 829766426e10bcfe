"""OMoE, MMoE, CGC and PLE against their formulas, computed here with K separate MLPs and explicit
softmax gates, plus routing, statistics and errors."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from mtl.features import Features
from mtl.necks import CGC, PLE, MMoE, OMoE, SoftmaxGate
from tests.necks.builders import WIDTH, bound, expert_outputs, pooled_features, token_features

TASKS = ["a", "b", "c"]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def gated(gate: SoftmaxGate, x: Tensor, outputs: Tensor) -> Tensor:
    weights = torch.softmax(x @ gate.linear.weight.T, dim=-1)
    return (weights.unsqueeze(-1) * outputs).sum(-2)


@pytest.mark.parametrize("make", [pooled_features, token_features])
def test_mmoe_is_a_per_task_softmax_mixture_of_the_experts(make):
    neck = bound(MMoE(num_experts=3, expert_hidden=[7, 4]))
    features = make()
    out = neck(features, dict.fromkeys(TASKS))
    for task in TASKS:
        gate = neck.gates[task]
        expected = gated(gate, features.pooled, expert_outputs(neck.experts, features.pooled))
        torch.testing.assert_close(out.features[task].pooled, expected)
        if features.tokens is not None:
            expected = gated(gate, features.tokens, expert_outputs(neck.experts, features.tokens))
            torch.testing.assert_close(out.features[task].tokens, expected)
            assert torch.equal(out.features[task].mask, features.mask)
            assert torch.equal(out.features[task].input_ids, features.input_ids)
    assert out.aux_loss is None


def test_mmoe_with_one_expert_is_that_expert():
    neck = bound(MMoE(num_experts=1, expert_hidden=[4]))
    features = pooled_features()
    out = neck(features, {"a": None})
    torch.testing.assert_close(out.features["a"].pooled, expert_outputs(neck.experts, features.pooled)[:, 0])
    torch.testing.assert_close(out.stats["gate/a"], torch.ones(1))


@pytest.mark.parametrize("make", [pooled_features, token_features])
def test_omoe_equals_mmoe_whose_task_gates_share_weights(make):
    omoe, mmoe = bound(OMoE(3, [6])), bound(MMoE(3, [6]))
    mmoe.experts.load_state_dict(omoe.experts.state_dict())
    for gate in mmoe.gates.values():
        gate.load_state_dict(omoe.gate.state_dict())
    features = make()
    routes = {"a": None, "c": torch.tensor([0, 2])}
    a, b = omoe(features, routes), mmoe(features, routes)
    for task in routes:
        torch.testing.assert_close(a.features[task].pooled, b.features[task].pooled)
        if features.tokens is not None:
            torch.testing.assert_close(a.features[task].tokens, b.features[task].tokens)
        torch.testing.assert_close(a.stats[f"gate/{task}"], b.stats[f"gate/{task}"])


def test_cgc_mixes_only_the_tasks_own_and_the_shared_experts():
    neck = bound(CGC(num_shared_experts=2, num_task_experts=2, expert_hidden=[4]))
    level = neck.levels[0]
    features = pooled_features()
    out = neck(features, dict.fromkeys(TASKS))
    # Layout: [a0, a1, b0, b1, c0, c1, s0, s1]; task b reads experts 2, 3, 6, 7.
    outputs = expert_outputs(level.experts, features.pooled, [2, 3, 6, 7])
    torch.testing.assert_close(out.features["b"].pooled, gated(level.gates["b"], features.pooled, outputs))
    assert out.stats["gate/b"].shape == (4,)

    def zero_experts(ids: list[int]) -> None:
        with torch.no_grad():
            for weight, bias in zip(level.experts.weights, level.experts.biases, strict=True):
                weight[ids] = 0
                bias[ids] = 0

    zero_experts([2, 3, 4, 5])  # the experts of b and c
    after = neck(features, dict.fromkeys(TASKS))
    torch.testing.assert_close(after.features["a"].pooled, out.features["a"].pooled)
    assert not torch.allclose(after.features["b"].pooled, out.features["b"].pooled)
    zero_experts([0, 1])
    assert not torch.allclose(neck(features, {"a": None}).features["a"].pooled, out.features["a"].pooled)


@pytest.mark.parametrize("make", [pooled_features, token_features])
def test_ple_with_one_level_is_cgc(make):
    cgc = bound(CGC(2, 1, [6]))
    ple = bound(PLE(1, 2, 1, [6]))
    ple.load_state_dict(cgc.state_dict())
    features = make()
    routes = {"b": torch.tensor([1, 2]), "a": None}
    a, b = cgc(features, routes), ple(features, routes)
    for task in routes:
        torch.testing.assert_close(a.features[task].pooled, b.features[task].pooled)


def test_two_level_ple_matches_its_definition():
    neck = bound(PLE(num_levels=2, num_shared_experts=2, num_task_experts=1, expert_hidden=[6, 4]))
    low, top = neck.levels
    x = pooled_features().pooled
    n_tasks = len(TASKS)
    shared_ids = [n_tasks, n_tasks + 1]  # one expert per task, then the shared ones
    # Level 1: every branch gates its experts on x; the shared gate mixes all experts.
    everything = expert_outputs(low.experts, x)
    branch = {t: gated(low.gates[t], x, everything[:, [i, *shared_ids]]) for i, t in enumerate(TASKS)}
    shared = gated(low.shared_gate, x, everything)
    assert top.shared_gate is None  # no shared gate at the last level
    # Level 2: task t's expert and gate read t's branch; shared experts read the shared branch.
    out = neck(Features(pooled=x), dict.fromkeys(TASKS))
    for i, task in enumerate(TASKS):
        own = expert_outputs(top.experts, branch[task], [i])
        common = expert_outputs(top.experts, shared, shared_ids)
        expected = gated(top.gates[task], branch[task], torch.cat([own, common], dim=-2))
        torch.testing.assert_close(out.features[task].pooled, expected)


NECKS = {
    "omoe": lambda: OMoE(3, [6]),
    "mmoe": lambda: MMoE(3, [6]),
    "cgc": lambda: CGC(1, 2, [6]),
    "ple": lambda: PLE(2, 1, 2, [6]),
}


@pytest.mark.parametrize("name", NECKS)
@pytest.mark.parametrize("make", [pooled_features, token_features])
def test_routes_are_honoured_and_other_tasks_do_not_change_a_row(name, make):
    neck = bound(NECKS[name]())
    features = make()
    full = neck(features, dict.fromkeys(TASKS))
    rows = torch.tensor([3, 0])
    alone = neck(features, {"b": rows})  # one task present: CGC/PLE skip the others' top experts
    assert list(alone.features) == ["b"]
    torch.testing.assert_close(alone.features["b"].pooled, full.features["b"].pooled[rows])
    if features.tokens is not None:
        torch.testing.assert_close(alone.features["b"].tokens, full.features["b"].tokens[rows])
        assert torch.equal(alone.features["b"].mask, features.mask[rows])


@pytest.mark.parametrize("name", NECKS)
def test_stats_are_mean_gate_distributions_per_task(name):
    neck = bound(NECKS[name]())
    out = neck(token_features(), {"a": None, "c": torch.tensor([1])})
    gates = sorted(k for k in out.stats if k.startswith("gate/") or k.startswith("gate_tokens/"))
    assert gates == ["gate/a", "gate/c", "gate_tokens/a", "gate_tokens/c"]
    for key in gates:
        assert not out.stats[key].requires_grad
        torch.testing.assert_close(out.stats[key].sum(), torch.tensor(1.0))
    assert all(not value.requires_grad for value in out.stats.values())


def test_token_stats_leave_out_padding():
    neck = bound(MMoE(3, [4]))
    features = token_features()
    out = neck(features, {"a": None})
    weights = torch.softmax(features.tokens @ neck.gates["a"].linear.weight.T, dim=-1)
    real = features.mask.bool()
    torch.testing.assert_close(out.stats["gate_tokens/a"], weights[real].mean(0))


def test_gradients_reach_every_expert_and_gate():
    neck = PLE(2, 1, 1, [4])
    neck.bind(WIDTH, TASKS)
    out = neck(token_features(), dict.fromkeys(TASKS))
    sum(f.pooled.sum() + f.tokens.sum() for f in out.features.values()).backward()
    for name, parameter in neck.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_route_tokens_off_routes_only_pooled_and_spatial_is_dropped():
    neck = bound(MMoE(2, [4], route_tokens=False))
    features = token_features()
    out = neck(features, {"a": None}).features["a"]
    assert out.tokens is None and out.mask is None
    torch.testing.assert_close(
        out.pooled, neck(Features(pooled=features.pooled), {"a": None}).features["a"].pooled
    )
    spatial = Features(pooled=features.pooled, spatial=torch.randn(4, 2, 3, 3))
    assert neck(spatial, {"a": None}).features["a"].spatial is None


def test_clear_errors_for_unbound_necks_unknown_tasks_and_wrong_widths():
    with pytest.raises(RuntimeError, match="Expected MMoE to be bound before forward"):
        MMoE(2, [4])(pooled_features(), {"a": None})
    neck = bound(MMoE(2, [4]))
    with pytest.raises(
        ValueError, match=r"bound to MMoE \['a', 'b', 'c'\], but got unknown task\(s\) \['d'\]"
    ):
        neck(pooled_features(), {"d": None})
    with pytest.raises(ValueError, match="Expected features of width 5"):
        neck(Features(pooled=torch.randn(2, 6)), {"a": None})
    with pytest.raises(ValueError, match="distinct names"):
        MMoE(2, [4]).bind(WIDTH, ["a", "a"])


def test_dropout_acts_in_training_only():
    neck = MMoE(2, [64], dropout=0.5)
    neck.bind(WIDTH, ["a"])
    features = pooled_features()
    assert not torch.equal(
        neck(features, {"a": None}).features["a"].pooled, neck(features, {"a": None}).features["a"].pooled
    )
    neck.eval()
    assert torch.equal(
        neck(features, {"a": None}).features["a"].pooled, neck(features, {"a": None}).features["a"].pooled
    )


def test_parameters_follow_the_module_as_a_plain_nn_module():
    neck = bound(CGC(1, 1, [4]))
    assert isinstance(neck.levels, nn.ModuleList)
    assert "levels.0.selection" not in neck.state_dict()  # derived index buffers are not saved
