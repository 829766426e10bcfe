"""The probability a model gives to an example's true label, per head kind: the quantity data maps track.

Data maps (Swayamdipta et al., EMNLP 2020) follow ``p(y* | x)``, the model's probability of the gold
label, across epochs. For classification heads this is read from the softmax (or sigmoid); for
regression, which has no probability of "the" label, it is defined here as the Gaussian likelihood of
the target relative to its mode, ``exp(-(ŷ - y)² / (2 s²))`` with ``s`` a fixed per-output scale
(the standard deviation of the targets): 1 for an exact prediction, ``exp(-1/2) ≈ 0.61`` for an
error of one standard deviation, towards 0 for large errors. Like a class probability it lies in
``(0, 1]`` and rises as the model fits the example, so confidence and variability keep their meaning.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mtl.heads import BinaryHead, ClassificationHead, Head, MLMVerbalizerHead, MultiLabelHead, RegressionHead
from mtl.labels import missing

__all__ = ["SUPPORTED_HEADS", "check_head", "target_scale", "true_label_probability"]

#: The head kinds that have a probability of the true label.
SUPPORTED_HEADS: tuple[type[Head], ...] = (
    BinaryHead,
    ClassificationHead,
    MLMVerbalizerHead,
    MultiLabelHead,
    RegressionHead,
)


def check_head(head: Head, task: str | None = None) -> None:
    """Raise unless ``head`` has a probability of the true label (one of `SUPPORTED_HEADS`)."""
    if not isinstance(head, SUPPORTED_HEADS):
        kinds = ", ".join(k.__name__ for k in SUPPORTED_HEADS)
        which = "the head" if task is None else f"the head of task `{task}`"
        raise ValueError(
            f"Expected {which} to have a probability of the true label ({kinds}), but got "
            f"{type(head).__name__}. Data maps need per-example confidences; measure this task's affinity "
            "with `tag` or `cosine` instead."
        )


def target_scale(targets: Tensor) -> Tensor:
    """Per-output standard deviation of regression ``targets`` ``[N]`` or ``[N, K]`` (NaN ignored), the
    ``s`` of the regression confidence; 1 where an output is constant (no scale to compare with)."""
    values = targets.double().reshape(targets.shape[0], -1)
    present = ~values.isnan()
    count = present.sum(dim=0).clamp_min(1)
    clean = torch.where(present, values, torch.zeros_like(values))
    mean = clean.sum(dim=0) / count
    var = (torch.where(present, values - mean, torch.zeros_like(values)) ** 2).sum(dim=0) / count
    std = var.sqrt()
    return torch.where(std > 0, std, torch.ones_like(std))


def _mean_present(values: Tensor, present: Tensor) -> Tensor:
    values = values.reshape(values.shape[0], -1)
    present = present.reshape(present.shape[0], -1)
    total = torch.where(present, values, torch.zeros_like(values)).sum(dim=1)
    return total / present.sum(dim=1).clamp_min(1)


def true_label_probability(
    head: Head, predictions: Tensor, targets: Tensor, scale: Tensor | None = None
) -> Tensor:
    """``[N]``: the probability ``head``'s raw ``predictions`` give to each row's true label.

    Binary: ``sigmoid(z)`` for label 1, ``1 - sigmoid(z)`` for 0. Multi-class (and MLM verbalizer): the softmax
    probability of the true class. Multi-label: the mean over the row's labelled entries of the
    binary probability. Regression: ``exp(-(ŷ - y)² / (2 s²))``, averaged over the row's present
    outputs, with ``s`` = ``scale`` (see `target_scale`; required for regression).
    """
    predictions = predictions.detach().double()
    if isinstance(head, (ClassificationHead, MLMVerbalizerHead)):
        return predictions.softmax(-1).gather(-1, targets.long().reshape(-1, 1)).squeeze(-1)
    if isinstance(head, (BinaryHead, MultiLabelHead)):
        targets = targets.reshape(predictions.shape)
        present = ~missing(targets)
        y = torch.where(present, targets, torch.zeros_like(targets)).double()
        positive = predictions.sigmoid()
        return _mean_present(y * positive + (1 - y) * (1 - positive), present)
    if isinstance(head, RegressionHead):
        if scale is None:
            raise ValueError(
                "Expected `scale` (the per-output standard deviation of the targets) for a regression "
                "head, but got None. Pass `target_scale(targets)`."
            )
        targets = targets.double().reshape(predictions.shape)
        present = ~targets.isnan()
        error = (predictions - torch.where(present, targets, predictions)) / scale.to(predictions).reshape(
            -1 if predictions.dim() > 1 else ()
        )
        return _mean_present(torch.exp(-0.5 * error**2), present)
    check_head(head)
    raise AssertionError(f"{type(head).__name__} is supported but not handled")
