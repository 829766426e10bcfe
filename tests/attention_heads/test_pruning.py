"""Pruning schedules, the global ranking, and the bookkeeping of a pruning curve."""

from __future__ import annotations

import math

import pytest
import torch

from mtl.attention_heads import (
    evaluate_tasks,
    head_importance,
    heads_to_prune,
    prune_curve,
    pruning_schedule,
    ranking_scores,
)
from tests.attention_heads.builders import task_batch, tiny_model


@pytest.mark.parametrize(
    ("total", "steps", "per_step", "expected"),
    [
        (72, 10, None, [0, 7, 14, 22, 29, 36, 43, 50, 58, 65, 72]),  # k * 7.2, rounded
        (12, 10, 0.25, [0, 3, 6, 9, 12]),  # stops once every head is pruned
        (12, 5, 4, [0, 4, 8, 12]),
        (12, 2, 1, [0, 1, 2]),
        (10, 3, 0.04, [0, 1]),  # 0.4 rounds to 0: no empty step; 0.8 -> 1; 1.2 -> 1 again
    ],
)
def test_pruning_schedule(total: int, steps: int, per_step: float | int | None, expected: list[int]) -> None:
    assert pruning_schedule(total, steps, per_step) == expected


@pytest.mark.parametrize("per_step", [0, 0.0, 1.5, -2, True])
def test_pruning_schedule_rejects_bad_steps(per_step: float) -> None:
    with pytest.raises(ValueError, match="Expected `per_step` to be a fraction of all heads in"):
        pruning_schedule(12, 3, per_step)
    with pytest.raises(ValueError, match="Expected `total_heads` and `steps` to be at least 1"):
        pruning_schedule(12, 0)


def test_heads_to_prune_ranks_globally_skips_pruned_and_protects_layers() -> None:
    scores = torch.tensor([[3.0, 1.0, 2.0], [0.5, 5.0, 4.0]])
    on = torch.ones(2, 3)
    assert heads_to_prune(scores, on, 2) == [(1, 0), (0, 1)]
    off = on.clone()
    off[1, 0] = 0
    assert heads_to_prune(scores, off, 2) == [(0, 1), (0, 2)]
    # Two heads kept per layer: only the weakest of each layer may go.
    assert heads_to_prune(scores, on, 5, min_heads_per_layer=2) == [(1, 0), (0, 1)]
    assert heads_to_prune(torch.zeros(2, 2), torch.ones(2, 2), 3) == [
        (0, 0),
        (0, 1),
        (1, 0),
    ]  # ties: by index
    with pytest.raises(ValueError, match="same \\(layers, heads\\) shape"):
        heads_to_prune(scores, torch.ones(3, 2), 1)


def test_ranking_scores() -> None:
    importance = {"a": torch.tensor([[1.0, 3.0]]), "b": torch.tensor([[2.0, 2.0]])}
    # Each task's matrix scaled to sum 1: a -> [.25, .75], b -> [.5, .5]; their mean.
    assert torch.allclose(ranking_scores(importance, normalize=False), torch.tensor([[0.375, 0.625]]))
    assert torch.allclose(ranking_scores(importance, by="a"), torch.tensor([[1.0, 3.0]]) / math.sqrt(10))
    with pytest.raises(
        ValueError, match=r"Expected `by` to be 'mean' or one of the scored tasks \['a', 'b'\]"
    ):
        ranking_scores(importance, by="c")


def test_prune_curve_bookkeeping() -> None:
    model = tiny_model()
    scores = torch.arange(12.0).flip(0).view(3, 4)  # head (2, 3) is least important, (0, 0) most
    seen_masks: list[torch.Tensor] = []
    calls = []

    def importance() -> dict[str, torch.Tensor]:
        calls.append(model.encoder.head_mask.clone())
        return {"first": scores}

    def evaluate() -> dict[str, float]:
        mask = model.encoder.head_mask
        seen_masks.append(torch.ones(3, 4) if mask is None else mask.clone())
        return {"first": float(seen_masks[-1].sum())}

    schedule = pruning_schedule(12, 4)
    curve = prune_curve(model, importance, evaluate, schedule, by="first", normalize=False)
    assert [p.num_pruned for p in curve] == schedule == [0, 3, 6, 9, 12]
    assert [p.step for p in curve] == [0, 1, 2, 3, 4]
    assert [p.share_pruned for p in curve] == [n / 12 for n in schedule]
    assert len(calls) == 1 and calls[0].sum() == 12  # fixed importance, taken on the full model
    order = [pair for p in curve for pair in p.newly_pruned]
    assert order == [(layer, head) for layer in (2, 1, 0) for head in (3, 2, 1, 0)]  # increasing score
    assert len(set(order)) == 12
    for point, mask in zip(curve, seen_masks, strict=True):
        assert point.metrics == {"first": 12.0 - point.num_pruned}  # evaluated with exactly these heads off
        assert all(mask[layer, head] == 0 for p in curve[: point.step + 1] for layer, head in p.newly_pruned)
    assert model.encoder.head_mask is None  # restored


def test_prune_curve_recompute_and_protected_layers() -> None:
    model = tiny_model(pruned_heads=[[0, 0]])
    calls: list[int] = []

    def importance() -> dict[str, torch.Tensor]:
        calls.append(int((model.encoder.head_mask == 0).sum()))
        return {"first": torch.rand(3, 4), "last": torch.rand(3, 4)}

    curve = prune_curve(
        model, importance, lambda: {}, pruning_schedule(12, 6), recompute=True, min_heads_per_layer=1
    )
    # The configured head counts as pruned from the start; each step sees the mask of the step before.
    assert [p.num_pruned for p in curve] == [1, 2, 4, 6, 8, 9]
    assert calls == [1, 2, 4, 6, 8]
    assert curve[-1].step == 5 and len(curve[-1].newly_pruned) == 1  # then only the protected 3 are left
    assert model.encoder.head_mask is not None and int((model.encoder.head_mask == 0).sum()) == 1


def test_prune_curve_end_points_equal_direct_evaluation() -> None:
    model = tiny_model()
    batches = [task_batch("first", slice(0, 12)), task_batch("last", slice(0, 12))]
    curve = prune_curve(
        model,
        lambda: head_importance(model, batches),
        lambda: evaluate_tasks(model, batches),
        pruning_schedule(12, 2),
    )
    assert curve[0].metrics == evaluate_tasks(model, batches)
    model.encoder.set_head_mask(torch.zeros(3, 4))
    assert curve[-1].metrics == evaluate_tasks(model, batches)  # every head off


def test_evaluate_tasks_matches_accuracy_by_hand() -> None:
    model = tiny_model()
    batches = [
        task_batch("first", slice(0, 10)),
        task_batch("first", slice(10, 30)),
        task_batch("last", slice(0, 7)),
    ]
    metrics = evaluate_tasks(model, batches)
    with torch.no_grad():
        correct = {
            t: sum(
                int((model(b["inputs"])[t].argmax(-1) == b["targets"][t]).sum())
                for b in batches
                if t in b["targets"]
            )
            for t in ("first", "last")
        }
    assert metrics == pytest.approx({"first": correct["first"] / 30, "last": correct["last"] / 7})


def test_prune_curve_needs_a_per_head_starting_mask() -> None:
    model = tiny_model()
    model.encoder.set_head_mask(torch.ones(2, 3, 4))
    with pytest.raises(
        ValueError, match=r"Expected the encoder's head mask to be \(layers, heads\) = \(3, 4\)"
    ):
        prune_curve(model, dict, dict, [0, 1])
