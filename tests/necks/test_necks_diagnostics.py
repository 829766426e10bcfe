"""The necks' diagnostic stats: per-example gate entropy and per-expert zero share, on hand-made gate
matrices and expert weights (exact values), then through every neck."""

from __future__ import annotations

import math

import pytest
import torch

from mtl.features import Features
from mtl.necks import CGC, PLE, DSelectK, HoME, MMoE, OMoE, StackedExperts, TaskSparseMoE
from mtl.necks.diagnostics import collapsed_experts, entropy, nonpositive_share, zero_share
from mtl.necks.home_gates import SwishExperts
from tests.necks.builders import WIDTH, bound, expert_outputs, pooled_features, token_features

LOG2, LOG3 = math.log(2), math.log(3)
#: Rows with entropies 0, log 2, log 3 and 1.5 log 2.
GATES = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.25, 0.25, 0.5]])
ENTROPIES = torch.tensor([0.0, LOG2, LOG3, 1.5 * LOG2])


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ----------------------------------------------------------------------------------- gate entropy
def test_entropy_of_hand_made_gates():
    torch.testing.assert_close(entropy(GATES), ENTROPIES)
    bf16 = entropy(GATES.bfloat16())
    assert bf16.dtype == torch.float32  # no bf16 accumulation
    torch.testing.assert_close(bf16, ENTROPIES, atol=1e-2, rtol=0)


def test_task_features_record_the_mean_per_row_gate_entropy():
    neck = bound(MMoE(3, [4]))
    stats: dict[str, torch.Tensor] = {}
    mixed = torch.zeros(4, 4)
    neck.task_features(Features(pooled=torch.zeros(4, WIDTH)), None, mixed, GATES, "a", stats)
    assert stats["gate_entropy/a"].item() == pytest.approx(float(ENTROPIES.mean()))
    torch.testing.assert_close(stats["gate/a"], GATES.mean(0))
    # The entropy of the mean gate bounds the mean entropy from above (concavity).
    assert entropy(stats["gate/a"]).item() > stats["gate_entropy/a"].item()


def test_token_gate_entropy_is_over_real_tokens_only():
    neck = bound(MMoE(3, [4]))
    # Two rows, pooled vector + 3 tokens; row 1's last token is padding, with a uniform gate.
    weights = torch.stack([GATES, torch.stack([GATES[3], GATES[0], GATES[1], GATES[2]])])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    features = Features(pooled=torch.zeros(2, WIDTH), tokens=torch.zeros(2, 3, WIDTH), mask=mask)
    stats: dict[str, torch.Tensor] = {}
    neck.task_features(features, None, torch.zeros(2, 4, 4), weights, "a", stats)
    assert stats["gate_entropy/a"].item() == pytest.approx((0.0 + 1.5 * LOG2) / 2)  # the pooled gates
    real = [LOG2, LOG3, 1.5 * LOG2, 0.0, LOG2]  # row 0's tokens, then row 1's real tokens
    assert stats["gate_entropy_tokens/a"].item() == pytest.approx(sum(real) / 5)
    assert stats["token_count/a"].item() == 5
    torch.testing.assert_close(stats["gate_tokens/a"], torch.cat([GATES[1:], GATES[:2]]).mean(0))


GATED = {
    "omoe": (lambda: OMoE(3, [6]), 3),
    "mmoe": (lambda: MMoE(3, [6]), 3),
    "cgc": (lambda: CGC(1, 2, [6]), 3),
    "ple": (lambda: PLE(2, 1, 2, [6]), 3),
    "dselect_k": (lambda: DSelectK(4, 2, [6]), 4),
    "dselect_k_static": (lambda: DSelectK(4, 2, [6], gate="static"), 4),
    "task_sparse_moe": (lambda: TaskSparseMoE(4, 2, [6]), 2),  # k = 2 experts per unit
    "home": (lambda: HoME(1, 1, [6], task_categories={"a": "x", "b": "x", "c": "y"}), 3),
}


@pytest.mark.parametrize("name", GATED)
def test_every_neck_reports_per_example_gate_entropy_between_zero_and_log_k(name):
    make, chosen = GATED[name]
    neck = bound(make())
    out = neck(token_features(), {"a": None, "c": torch.tensor([1, 3])})
    for task in ("a", "c"):
        for suffix in ("", "_tokens"):
            value = out.stats[f"gate_entropy{suffix}/{task}"].item()
            assert -1e-6 <= value <= math.log(chosen) + 1e-6, (task, suffix)
        # The entropy of the mean gate is at least the mean entropy (equal for a static gate).
        mean_gate = entropy(out.stats[f"gate/{task}"]).item()
        if name == "dselect_k_static":
            assert mean_gate == pytest.approx(out.stats[f"gate_entropy/{task}"].item(), abs=1e-5)
        else:
            assert mean_gate > out.stats[f"gate_entropy/{task}"].item()


def test_mmoe_gate_entropy_matches_its_softmax_gates():
    neck = bound(MMoE(3, [6]))
    features = pooled_features(7)
    out = neck(features, {"b": torch.tensor([0, 2, 5])})
    gates = torch.softmax(features.pooled[[0, 2, 5]] @ neck.gates["b"].linear.weight.T, dim=-1)
    expected = -(gates * gates.log()).sum(-1).mean()
    torch.testing.assert_close(out.stats["gate_entropy/b"], expected)


# ----------------------------------------------------------------------------------- zero share
def test_zero_share_of_hand_made_activity():
    nonpositive = torch.tensor([[[1.0, 0.0], [0.5, 1.0]], [[0.0, 0.0], [1.0, 0.25]]])  # [2, 2, K=2]
    share, units = zero_share(nonpositive)
    torch.testing.assert_close(share, torch.tensor([2.5 / 4, 1.25 / 4]))
    torch.testing.assert_close(units, torch.tensor([4.0, 4.0]))
    valid = torch.tensor([[True, True], [True, False]])  # the same for every expert
    share, units = zero_share(nonpositive, valid)
    torch.testing.assert_close(share, torch.tensor([1.5 / 3, 1.0 / 3]))
    torch.testing.assert_close(units, torch.tensor([3.0, 3.0]))
    per_expert = torch.tensor([[[True, False], [True, False]], [[False, False], [False, True]]])
    share, units = zero_share(nonpositive, per_expert)
    torch.testing.assert_close(share, torch.tensor([1.5 / 2, 0.25 / 1]))
    torch.testing.assert_close(units, torch.tensor([2.0, 1.0]))
    share, units = zero_share(torch.zeros(0, 3))
    assert share.tolist() == [0.0, 0.0, 0.0] and units.tolist() == [0.0, 0.0, 0.0]
    flagged = collapsed_experts(torch.tensor([0.95, 0.9, float("nan"), 0.1]))
    assert flagged.tolist() == [True, False, False, False]


def hand_made_relu_experts(dropout: float = 0.0) -> StackedExperts:
    """Three experts on a 1-d input with four ReLU outputs: ``relu(w_k x)`` with ``w_0 = [1, 1, 1, 1]``,
    ``w_1 = -w_0`` and ``w_2 = [1, -1, 1, -1]``, no bias."""
    experts = StackedExperts(3, 1, [4], dropout=dropout)
    with torch.no_grad():
        experts.weights[0].copy_(torch.tensor([[[1.0] * 4], [[-1.0] * 4], [[1.0, -1.0, 1.0, -1.0]]]))
        experts.biases[0].zero_()
    return experts


X = torch.tensor([[-1.0], [1.0], [2.0], [3.0]])  # one negative input of four
SHARES = [1 / 4, 3 / 4, 1 / 2]


def test_relu_experts_report_their_exact_share_of_zero_outputs():
    experts = hand_made_relu_experts()
    outputs, nonpositive = experts(X, activity=True)
    assert torch.equal(outputs, experts(X))
    torch.testing.assert_close(nonpositive, (outputs == 0).float().mean(-1))  # exactly the zeros
    torch.testing.assert_close(zero_share(nonpositive)[0], torch.tensor(SHARES))


def test_zero_share_is_taken_before_dropout():
    experts = hand_made_relu_experts(dropout=0.5).train()
    outputs, nonpositive = experts(X.repeat(50, 1), activity=True)
    assert (outputs == 0).float().mean() > 0.6  # dropout adds zeros to the outputs ...
    torch.testing.assert_close(zero_share(nonpositive)[0], torch.tensor(SHARES))  # ... not to the share


def test_swish_experts_count_their_negative_half():
    experts = SwishExperts(2, 3, [4], norm="layer")
    with torch.no_grad():  # a zero scale makes every output silu(shift), whatever the input
        experts.norms[0].weight.zero_()
        experts.norms[0].bias.copy_(torch.tensor([[-1.0, 1.0, 1.0, 1.0], [-2.0, -0.5, 0.0, 3.0]]))
    outputs, nonpositive = experts(torch.randn(5, 3), activity=True)
    assert (outputs != 0).any(dim=-1).all()  # Swish outputs are not exactly zero ...
    torch.testing.assert_close(zero_share(nonpositive)[0], torch.tensor([1 / 4, 3 / 4]))  # ... but <= 0
    torch.testing.assert_close(nonpositive_share(outputs), nonpositive)


def test_mmoe_zero_share_leaves_out_padded_tokens():
    neck = MMoE(3, [4])
    neck.bind(1, ["a"])
    neck.experts.load_state_dict(hand_made_relu_experts().state_dict())
    # Pooled -1 and 3; tokens 1, 2 real and a padded -5 that would add zeros to experts 0 and 2.
    features = Features(
        pooled=torch.tensor([[-1.0], [3.0]]),
        tokens=torch.tensor([[[1.0], [-5.0]], [[2.0], [-5.0]]]),
        mask=torch.tensor([[1, 0], [1, 0]]),
    )
    out = neck(features, {"a": None})
    torch.testing.assert_close(out.stats["zero_share/level0"], torch.tensor(SHARES))
    torch.testing.assert_close(out.stats["expert_units/level0"], torch.full((3,), 4.0))
    pooled_only = neck(Features(pooled=X), {"a": None}).stats
    torch.testing.assert_close(pooled_only["zero_share/level0"], torch.tensor(SHARES))


def test_cgc_reports_every_level_and_zero_weight_for_experts_that_did_not_run():
    neck = bound(PLE(2, 1, 1, [6]))  # per level: [a, b, c, shared]
    out = neck(token_features(), {"b": None})
    units = 4 + 11  # 4 pooled rows and 11 real tokens (row 0 has 2 of 3)
    assert out.stats["expert_units/level0"].tolist() == [units] * 4
    assert out.stats["expert_units/level1"].tolist() == [0, units, 0, units]  # only b's and the shared
    assert out.stats["zero_share/level1"][[0, 2]].tolist() == [0.0, 0.0]
    assert ((out.stats["zero_share/level1"] >= 0) & (out.stats["zero_share/level1"] <= 1)).all()


def test_sparse_moe_zero_share_is_over_the_units_each_expert_served():
    neck = bound(TaskSparseMoE(4, 2, [6], noisy=False))
    x = torch.randn(9, WIDTH)
    out = neck(Features(pooled=x), {"a": None})
    top = (x @ neck.routers["a"].linear.weight.T).topk(2, dim=-1).indices
    served = torch.zeros(9, 4, dtype=torch.bool).scatter(1, top, True)
    torch.testing.assert_close(out.stats["expert_units/level0"], served.sum(0).float())
    reference = (expert_outputs(neck.experts, x) <= 0).float().mean(-1)  # [9, 4], every expert on every row
    expected = (reference * served).sum(0) / served.sum(0).clamp_min(1)
    torch.testing.assert_close(out.stats["zero_share/level0"], expected)


def test_home_reports_both_levels():
    neck = bound(HoME(1, 1, [6], task_categories={"a": "x", "b": "x", "c": "y"}))
    out = neck(pooled_features(6), {"a": None, "c": torch.tensor([0])})
    assert neck.expert_counts() == [2 + 1, 3 + 2 + 1]
    for level, k in (("level0", 3), ("level1", 6)):
        assert out.stats[f"zero_share/{level}"].shape == (k,)
        assert ((out.stats[f"zero_share/{level}"] >= 0) & (out.stats[f"zero_share/{level}"] <= 1)).all()
        assert out.stats[f"expert_units/{level}"].tolist() == [6.0] * k
