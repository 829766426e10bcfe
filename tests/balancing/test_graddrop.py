"""GradDrop: sign purity, seeded masks, and agreeing signs left untouched."""

from __future__ import annotations

import torch

from mtl.balancing import GradDrop, graddrop_masks, sign_purity


def test_sign_purity_by_hand() -> None:
    G = torch.tensor([[1.0, -2.0, 0.0, 3.0], [3.0, 2.0, 0.0, -1.0]])
    torch.testing.assert_close(sign_purity(G), torch.tensor([1.0, 0.5, 0.5, 0.75]))


def test_masks_keep_one_sign_per_coordinate() -> None:
    G = torch.tensor([[1.0, -1.0], [-2.0, 3.0]])  # purities: 1/2 * (1 - 1/3) = 1/3 and 1/2 * (1 + 2/4) = 3/4
    masks = graddrop_masks(G, torch.tensor([0.2, 0.9]))
    # column 0: U = 0.2 < P = 1/3 -> keep positive; column 1: U = 0.9 >= 3/4 -> keep negative.
    assert masks.tolist() == [[True, True], [False, False]]


def test_agreeing_signs_return_the_mean_unchanged() -> None:
    G = torch.tensor([[1.0, -2.0, 0.0, 4.0], [3.0, -1.0, 5.0, 0.0], [0.5, -0.5, 1.0, 2.0]])
    for seed in range(3):
        torch.testing.assert_close(GradDrop(seed=seed)(G), G.mean(dim=0))
    torch.testing.assert_close(GradDrop(reduction="sum")(G), G.sum(dim=0))


def test_seeded_generator_makes_it_deterministic() -> None:
    G = torch.randn(3, 100, generator=torch.Generator().manual_seed(0))
    first, second = GradDrop(seed=7), GradDrop(seed=7)
    outputs = [first(G) for _ in range(2)]
    torch.testing.assert_close(outputs[0], second(G))
    torch.testing.assert_close(outputs[1], second(G))
    assert not torch.equal(outputs[0], outputs[1])  # fresh draws on every call
    assert not torch.equal(outputs[0], GradDrop(seed=8)(G))


def test_leak_one_is_the_plain_mean_and_leak_mixes_linearly() -> None:
    G = torch.randn(3, 50, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(GradDrop(leak=1.0)(G), G.mean(dim=0))
    pure, half = GradDrop(leak=0.0)(G), GradDrop(leak=0.5)(G)
    torch.testing.assert_close(half, 0.5 * G.mean(dim=0) + 0.5 * pure)
    per_task = GradDrop(leak=[1.0, 1.0, 1.0])(G)
    torch.testing.assert_close(per_task, G.mean(dim=0))


def test_every_output_coordinate_keeps_a_single_sign_of_the_inputs() -> None:
    G = torch.randn(4, 200, generator=torch.Generator().manual_seed(2))
    d = GradDrop()(G)
    positive_part = G.clamp(min=0).sum(dim=0) / 4
    negative_part = G.clamp(max=0).sum(dim=0) / 4
    assert torch.all(torch.isclose(d, positive_part) | torch.isclose(d, negative_part))


def test_direction_equals_the_papers_masked_sum_with_per_task_leaks() -> None:
    G = torch.randn(3, 300, generator=torch.Generator().manual_seed(3))
    G[:, :20] = 0.0  # all-zero coordinates: purity 1/2, zero output
    leak = torch.tensor([0.0, 0.3, 1.0]).unsqueeze(1)
    uniform = torch.rand(300, generator=torch.Generator().manual_seed(5))  # the aggregator's own draw
    masks = graddrop_masks(G, uniform).to(G.dtype)
    expected = ((leak + (1 - leak) * masks) * G).sum(dim=0)
    torch.testing.assert_close(GradDrop(leak=[0.0, 0.3, 1.0], reduction="sum", seed=5)(G), expected)
    torch.testing.assert_close(GradDrop(leak=[0.0, 0.3, 1.0], seed=5)(G), expected / 3)
