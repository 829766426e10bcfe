"""Head importance equals central finite differences of the task loss in each head's mask variable."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from mtl.attention_heads import head_importance, normalize_by_layer
from mtl.data.collate import collate
from mtl.module import MultiTaskModule
from tests.attention_heads.builders import PAD, TokenSource, task_batch, tiny_model

EPS = 1e-6


def _central_differences(
    model: MultiTaskModule, batch: dict[str, Any], task: str, at: torch.Tensor
) -> torch.Tensor:
    """``∂L/∂ξ_h`` of ``batch``'s mean cross-entropy for every head, by central differences around ``at``.

    The batch is repeated once per perturbed mask (``ξ_h ± EPS``, one copy each) so that one forward pass
    gives every perturbed loss; the loss is recomputed here in float64 from the logits (the heads' own
    loss runs in float32, too coarse for a difference quotient).
    """
    layers, heads = at.shape
    copies = 2 * layers * heads
    masks = at.repeat(copies, 1, 1)
    for k in range(layers * heads):
        masks[2 * k].view(-1)[k] += EPS
        masks[2 * k + 1].view(-1)[k] -= EPS
    rows = next(iter(batch["inputs"].values())).shape[0]
    model.encoder.set_head_mask(masks.repeat_interleave(rows, dim=0))
    with torch.no_grad():
        logits = model({key: value.repeat(copies, 1) for key, value in batch["inputs"].items()})[task]
    model.encoder.set_head_mask(None)
    route = batch["routes"][task]
    logits = logits.view(copies, rows, -1)[:, slice(None) if route is None else route]
    losses = torch.stack([F.cross_entropy(x, batch["targets"][task]) for x in logits]).view(-1, 2)
    return ((losses[:, 0] - losses[:, 1]) / (2 * EPS)).view(layers, heads)


def _single_examples(task: str, rows: range, unlabelled: int | None = None) -> tuple[dict[str, Any], list]:
    """A batch of ``rows`` (row ``unlabelled`` without a label) and each labelled row as its own batch."""
    dataset = TokenSource().load()[task].train
    examples = [(task, *dataset[i]) for i in rows]
    if unlabelled is not None:
        examples[unlabelled] = (task, examples[unlabelled][1], torch.tensor(-100))
    pad = {"input_ids": PAD}
    alone = [collate([ex], pad_values=pad) for i, ex in enumerate(examples) if i != unlabelled]
    return collate(examples, pad_values=pad), alone


@pytest.mark.parametrize("pruned", [False, True])
def test_per_example_importance_equals_mean_absolute_finite_difference(pruned: bool) -> None:
    model = tiny_model().double()
    at = torch.ones(3, 4, dtype=torch.float64)
    if pruned:  # the derivative is taken at the current mask, here with two heads already off
        at[0, 1] = at[2, 3] = 0.0
        model.encoder.set_head_mask(at.clone())
    batch, alone = _single_examples("last", range(5), unlabelled=2)
    assert batch["routes"]["last"].tolist() == [0, 1, 3, 4]
    importance = head_importance(model, [batch], ["last"])["last"]
    if pruned:
        assert torch.equal(model.encoder.head_mask, at)  # the configured mask is left as it was
        model.encoder.set_head_mask(None)
    expected = torch.stack([_central_differences(model, b, "last", at).abs() for b in alone]).mean(0)
    assert importance.shape == (3, 4)
    assert torch.allclose(importance, expected, rtol=1e-5, atol=1e-9)


def test_per_batch_importance_equals_absolute_finite_difference_of_the_batch_loss() -> None:
    model = tiny_model().double()
    batch = task_batch("first", slice(0, 6))
    importance = head_importance(model, [batch], ["first"], per_example=False)["first"]
    expected = _central_differences(model, batch, "first", torch.ones(3, 4, dtype=torch.float64)).abs()
    assert torch.allclose(importance, expected, rtol=1e-5, atol=1e-9)
    # |mean of gradients| <= mean of |gradients| (triangle inequality).
    per_example = head_importance(model, [batch], ["first"])["first"]
    assert torch.all(importance <= per_example + 1e-12)


def test_batches_are_averaged_per_example_and_tasks_kept_apart() -> None:
    model = tiny_model().double()
    a, b = task_batch("first", slice(0, 2)), task_batch("first", slice(2, 6))
    other = task_batch("last", slice(0, 3))
    scores = head_importance(model, [a, other, b])
    both = head_importance(model, [task_batch("first", slice(0, 6))], ["first"])["first"]
    # Per example, two batches of 2 and 4 examples give the mean over all 6 examples.
    assert torch.allclose(scores["first"], both, rtol=1e-10)
    alone = head_importance(model, [other], ["last"])["last"]
    assert torch.allclose(scores["last"], alone, rtol=1e-10)


def test_parameters_get_no_gradients_and_the_mode_is_restored() -> None:
    model = tiny_model().train()
    head_importance(model, [task_batch("first")], ["first"])
    assert model.training and model.encoder.head_mask is None
    assert all(p.grad is None for p in model.parameters())


def test_missing_task_and_encoder_without_heads_are_errors() -> None:
    model = tiny_model()
    with pytest.raises(ValueError, match=r"Expected the batches to hold labelled examples .* \['last'\]"):
        head_importance(model, [task_batch("first")])
    from mtl.heads import ClassificationHead
    from tests.toy import TinyEncoder

    plain = MultiTaskModule(TinyEncoder(), {"cls": ClassificationHead(num_classes=3)})
    with pytest.raises(TypeError, match="Expected the model's encoder to have maskable attention heads"):
        head_importance(plain, [])


def test_normalize_by_layer() -> None:
    scores = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    assert torch.allclose(normalize_by_layer(scores), torch.tensor([[0.6, 0.8], [0.0, 0.0]]))
