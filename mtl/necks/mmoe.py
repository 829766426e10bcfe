"""Multi-gate mixture-of-experts (MMoE): shared experts, one softmax gate per task."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from mtl.features import Features
from mtl.necks.base import NeckOutput
from mtl.necks.experts import StackedExperts, check_count
from mtl.necks.gates import MixtureNeck, SoftmaxGate, mix, take

__all__ = ["MMoE"]


class MMoE(MixtureNeck):
    """Multi-gate mixture-of-experts.

    Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate Mixture-of-Experts",
    KDD 2018. Task ``t`` reads ``f_t(x) = Σ_k g_t(x)_k E_k(x)`` with ``g_t(x) = softmax(W_t x)``: all
    tasks share the ``K`` experts, and each task learns its own mixture of them, so that weakly
    related tasks can use different experts.

    Experts are evaluated once for every row; each task's gate runs on its routed rows only. On
    token inputs the experts and gates also act per token (see `MixtureNeck`). Stats: the gate stats of
    `MixtureNeck.task_features` (``gate/{task}``, the task's mean gate ``[K]``, ``gate_entropy/{task}``
    and their per-token versions) and ``zero_share/level0`` ``[K]`` (`MixtureNeck.record_zero_share`).
    No auxiliary loss.

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
        self.gates = nn.ModuleDict({task: SoftmaxGate(in_features, self.num_experts) for task in tasks})

    def expert_counts(self) -> list[int]:
        return [self.num_experts]

    def forward(self, features: Features, routes: Mapping[str, Tensor | None]) -> NeckOutput:
        x = self.expert_inputs(features)
        self.check_routes(routes)
        experts, nonpositive = self.experts(x, activity=True)  # [B, (1 + L,) K, O], once for all rows
        out: dict[str, Features] = {}
        stats: dict[str, Tensor] = {}
        self.record_zero_share(stats, 0, nonpositive, self.real_units(features, x))
        for task, rows in routes.items():
            weights = self.gates[task](take(x, rows))
            mixed = mix(weights, take(experts, rows))
            out[task] = self.task_features(features, rows, mixed, weights, task, stats)
        return NeckOutput(features=out, stats=stats)
