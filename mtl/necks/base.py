"""The neck contract: shared features in, one representation per task out."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import Tensor, nn

from mtl.features import FeatureKind, Features

__all__ = ["Neck", "NeckOutput"]


@dataclass
class NeckOutput:
    """What a neck returns.

    Attributes:
        features: per task, the features of that task's rows.
        aux_loss: an auxiliary loss (e.g. MoE load balancing) added to the total loss with the
            module's ``aux_loss_weight``, or ``None``.
        stats: scalars or tensors to log (e.g. expert utilisation per task).
    """

    features: dict[str, Features]
    aux_loss: Tensor | None = None
    stats: dict[str, Tensor] = field(default_factory=dict)


class Neck(nn.Module, abc.ABC):
    """Maps shared `Features` to one `Features` per task.

    ``routes`` maps each task present in the batch to the row indices of its examples (``None``: all
    rows). A neck must return features for exactly those tasks and rows.
    """

    def bind(self, in_features: int, tasks: list[str]) -> None:
        """Called once by the module with the encoder width and the task names, before training."""

    def out_features(self, in_features: int) -> int:
        """Width of the per-task features, given the encoder width."""
        return in_features

    def provides(self, upstream: frozenset[FeatureKind]) -> frozenset[FeatureKind]:
        """The kinds of features the neck passes to the heads, given those the encoder provides."""
        return upstream

    @abc.abstractmethod
    def forward(self, features: Features, routes: Mapping[str, Tensor | None]) -> NeckOutput:
        """Per-task features for the routed rows."""
