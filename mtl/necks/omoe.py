"""One-gate mixture-of-experts (OMoE): shared experts and a single softmax gate for all tasks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor

from mtl.features import Features
from mtl.necks.base import NeckOutput
from mtl.necks.experts import StackedExperts, check_count
from mtl.necks.gates import MixtureNeck, SoftmaxGate, mix, take

__all__ = ["OMoE"]


class OMoE(MixtureNeck):
    """One-gate mixture-of-experts, the baseline of MMoE.

    Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate Mixture-of-Experts",
    KDD 2018 (the "One-gate MoE" model). Every task reads the same mixture
    ``f(x) = Σ_k g(x)_k E_k(x)`` with ``g(x) = softmax(W x)``; it differs from shared-bottom in that the
    shared representation is an input-dependent ensemble of experts, and from MMoE in that the
    mixture cannot differ between tasks.

    The experts and the gate are evaluated once for every row and each task takes its routed rows. On
    token inputs the experts and gate also act per token (see `MixtureNeck`). Stats: the gate stats of
    `MixtureNeck.task_features` (``gate/{task}``, the mean gate ``[K]`` over the task's rows,
    ``gate_entropy/{task}`` and their per-token versions) and ``zero_share/level0`` ``[K]``
    (`MixtureNeck.record_zero_share`). No auxiliary loss.

    Hyper-parameters:
        num_experts: ``K``, the number of shared experts.
        expert_hidden: widths of each expert MLP's layers; the last is the output width.
        dropout: dropout after each expert layer.
        route_tokens: also mix ``tokens`` per token when the encoder provides them.
    """

    def __init__(
        self,
        num_experts: int,
        expert_hidden: Sequence[int],
        dropout: float = 0.0,
        route_tokens: bool = True,
    ) -> None:
        super().__init__(expert_hidden, dropout, route_tokens)
        self.num_experts = check_count(num_experts, "num_experts", type(self).__name__)

    def build(self, in_features: int, tasks: list[str]) -> None:
        self.experts = StackedExperts(self.num_experts, in_features, self.expert_hidden, self.dropout)
        self.gate = SoftmaxGate(in_features, self.num_experts)

    def expert_counts(self) -> list[int]:
        return [self.num_experts]

    def forward(self, features: Features, routes: Mapping[str, Tensor | None]) -> NeckOutput:
        x = self.expert_inputs(features)
        self.check_routes(routes)
        # The gate is the same for every task, so mix once for all rows and let tasks take theirs.
        weights = self.gate(x)
        experts, nonpositive = self.experts(x, activity=True)
        mixed = mix(weights, experts)
        out: dict[str, Features] = {}
        stats: dict[str, Tensor] = {}
        self.record_zero_share(stats, 0, nonpositive, self.real_units(features, x))
        for task, rows in routes.items():
            out[task] = self.task_features(
                features, rows, take(mixed, rows), take(weights, rows), task, stats
            )
        return NeckOutput(features=out, stats=stats)
