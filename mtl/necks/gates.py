"""Softmax gates, the gated mixture, and the plumbing every mixture-of-experts neck shares.

`MixtureNeck` decides how experts and gates read `Features` and how a gated mixture becomes a
task's `Features`, so that OMoE, MMoE, CGC and PLE only describe their experts and gates:

* Pooled features ``[B, H]`` go through the experts and gates as they are.
* When ``tokens`` ``[B, L, H]`` are present (and ``route_tokens`` is on), the experts also act per
  token, as feed-forward blocks, and each task's gate is evaluated per token from the token's own
  state. The pooled vector is prepended as position 0, so that one expert pass serves both: the
  task's ``pooled`` output is the gated mixture of the experts on the pooled vector (not a pooling
  of the gated tokens, which would depend on a pooling rule the neck does not know), and its
  ``tokens`` output is the per-token gated mixture; ``mask`` and ``input_ids`` pass through.
* ``spatial`` maps are not routed through the experts and are dropped (their width would no
  longer match ``out_features``); spatial heads belong behind shared-bottom.

Stats every mixture neck reports (for `mtl.callbacks.ExpertDiagnostics`): per task, the mean gate
and the mean per-example gate entropy (`MixtureNeck.task_features`); per level of experts, the
share of zero output activations of each expert (`MixtureNeck.record_zero_share`).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from mtl.features import FeatureKind, Features
from mtl.necks.base import Neck
from mtl.necks.diagnostics import entropy, zero_share
from mtl.necks.experts import check_count, check_dropout, check_expert_hidden

__all__ = ["MixtureNeck", "SoftmaxGate", "mix", "take"]


class SoftmaxGate(nn.Module):
    """``g(x) = softmax(W x)``: a distribution over ``num_experts`` for every input vector.

    No bias, as in the gates of MMoE (Ma et al., KDD 2018) and PLE (Tang et al., RecSys 2020). Works on
    any leading shape (rows, or rows and tokens). With one expert the gate is exactly 1.
    """

    def __init__(self, in_features: int, num_experts: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, num_experts, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(self.linear(x), dim=-1)


def mix(weights: Tensor, experts: Tensor) -> Tensor:
    """``Σ_k weights[..., k] · experts[..., k, :]``: the gated mixture ``[..., H]``."""
    return torch.einsum("...k,...kh->...h", weights, experts)


def take(x: Tensor, rows: Tensor | None) -> Tensor:
    """The rows ``rows`` of ``x`` (all rows when ``None``)."""
    return x if rows is None else x[rows]


class MixtureNeck(Neck):
    """Base of the mixture-of-experts necks: argument checks, token packing, routes and stats.

    Subclasses create their experts and gates in `build` (called by `bind`, once the encoder width
    and the task names are known), say how many experts each level holds (`expert_counts`) and
    implement `forward` with `expert_inputs`, `check_routes`, `task_features` (every task's output
    goes through it, so that every neck reports the same gate stats) and `record_zero_share`.

    Args:
        expert_hidden: widths of each expert's layers; the last is the neck's output width.
        dropout: dropout after each expert layer.
        route_tokens: also run the experts and gates on ``tokens`` when present (cost grows with
            ``L · K``); ``False`` routes only ``pooled`` and drops ``tokens`` from the outputs.
    """

    def __init__(self, expert_hidden: Sequence[int], dropout: float = 0.0, route_tokens: bool = True) -> None:
        super().__init__()
        name = type(self).__name__
        self.expert_hidden = check_expert_hidden(expert_hidden, name)
        self.dropout = check_dropout(dropout, name)
        self.route_tokens = bool(route_tokens)
        self.in_features: int | None = None
        self.tasks: list[str] = []

    def out_features(self, in_features: int) -> int:
        return self.expert_hidden[-1]

    def provides(self, upstream: frozenset[FeatureKind]) -> frozenset[FeatureKind]:
        """``pooled``, plus ``tokens`` when they are routed; ``spatial`` maps are dropped."""
        kinds: set[FeatureKind] = {"pooled"}
        if self.route_tokens and "tokens" in upstream:
            kinds.add("tokens")
        return frozenset(kinds)

    def bind(self, in_features: int, tasks: list[str]) -> None:
        name = type(self).__name__
        check_count(in_features, "in_features", name)
        if not tasks or len(set(tasks)) != len(tasks):
            raise ValueError(
                f"Expected `tasks` of {name} to be a non-empty list of distinct names, but got {tasks}."
            )
        self.in_features, self.tasks = in_features, list(tasks)
        self.build(in_features, self.tasks)

    @abc.abstractmethod
    def build(self, in_features: int, tasks: list[str]) -> None:
        """Create the experts and gates for inputs of width ``in_features`` and these tasks."""

    def extra_repr(self) -> str:
        return f"expert_hidden={self.expert_hidden}, dropout={self.dropout}, route_tokens={self.route_tokens}"

    # ----------------------------------------------------------------------------------- helpers
    def expert_inputs(self, features: Features) -> Tensor:
        """``pooled`` ``[B, H]``, or ``[B, 1 + L, H]`` with the pooled vector at position 0 when routing
        tokens."""
        name = type(self).__name__
        if self.in_features is None:
            raise RuntimeError(
                f"Expected {name} to be bound before forward, but `bind(in_features, tasks)` was never "
                "called. MultiTaskModule binds its neck; call it yourself when using the neck alone."
            )
        width = features.pooled.shape[-1]
        if width != self.in_features:
            raise ValueError(
                f"Expected features of width {self.in_features} (the width {name} was bound to), but got {width}."
            )
        if features.tokens is None or not self.route_tokens:
            return features.pooled
        return torch.cat([features.pooled.unsqueeze(1), features.tokens], dim=1)

    def check_routes(self, routes: Mapping[str, Tensor | None]) -> None:
        unknown = [t for t in routes if t not in self.tasks]
        if unknown:
            raise ValueError(
                f"Expected routes to name tasks bound to {type(self).__name__} {self.tasks}, but got unknown "
                f"task(s) {unknown}. Bind the neck with every task that has a head."
            )

    def real_units(self, features: Features, x: Tensor) -> Tensor | None:
        """Which units of the expert inputs ``x`` (`expert_inputs`) are real: ``None`` when all are
        (pooled inputs, or tokens without a mask), else a boolean ``[B, 1 + L]``: the pooled vector
        and the unpadded tokens."""
        if x.dim() == 2 or features.mask is None:
            return None
        real = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        real[:, 1:] = features.mask.bool()
        return real

    def task_features(
        self,
        features: Features,
        rows: Tensor | None,
        mixed: Tensor,
        weights: Tensor,
        task: str,
        stats: dict[str, Tensor],
    ) -> Features:
        """Task ``task``'s `Features` from its gated mixture ``mixed`` (``[R, O]`` or ``[R, 1 + L, O]``)
        and its gate ``weights`` (``[R, K]`` or ``[R, 1 + L, K]``), recording in ``stats``:

        * ``gate/{task}``: the mean gate over the task's rows (the pooled vector's gate on tokens);
        * ``gate_entropy/{task}``: the mean over those rows of each row's gate `entropy` (nats);
        * on token inputs, over the real (unpadded) tokens: ``gate_tokens/{task}`` (the mean gate),
          ``gate_entropy_tokens/{task}`` (the mean per-token gate entropy) and ``token_count/{task}``
          (the number of real tokens, the weight of both means).

        All are float32, detached, and computed on the device (no host sync).
        """
        input_ids = None if features.input_ids is None else take(features.input_ids, rows)
        weights = weights.detach().float()
        if mixed.dim() == 2:
            stats[f"gate/{task}"] = weights.mean(dim=0)
            stats[f"gate_entropy/{task}"] = entropy(weights).mean()
            return Features(pooled=mixed, input_ids=input_ids)
        mask = None if features.mask is None else take(features.mask, rows)
        stats[f"gate/{task}"] = weights[:, 0].mean(dim=0)
        stats[f"gate_entropy/{task}"] = entropy(weights[:, 0]).mean()
        token_weights = weights[:, 1:]
        real = torch.ones(token_weights.shape[:-1], device=weights.device) if mask is None else mask.float()
        count = real.sum()
        denominator = count.clamp_min(1)
        stats[f"gate_tokens/{task}"] = (token_weights * real.unsqueeze(-1)).sum(dim=(0, 1)) / denominator
        stats[f"gate_entropy_tokens/{task}"] = (entropy(token_weights) * real).sum() / denominator
        stats[f"token_count/{task}"] = count
        return Features(pooled=mixed[:, 0], tokens=mixed[:, 1:], mask=mask, input_ids=input_ids)

    def record_zero_share(
        self,
        stats: dict[str, Tensor],
        level: int,
        nonpositive: Tensor,
        valid: Tensor | None = None,
        index: Tensor | None = None,
    ) -> None:
        """Record level ``level``'s per-expert `zero_share` in ``stats``: ``zero_share/level{level}``
        (the share of zero, for Swish experts non-positive, output activations, over the valid units)
        and ``expert_units/level{level}`` (the units each expert processed, the weight of its share).

        ``nonpositive`` ``[..., K']`` comes from the experts (``activity=True``); ``index``: the expert
        ids of its ``K'`` columns when only some of the level's experts ran (the others get share 0
        and weight 0).
        """
        share, units = zero_share(nonpositive, valid)
        if index is not None:
            total = self.expert_counts()[level]
            share = share.new_zeros(total).index_copy(0, index, share)
            units = units.new_zeros(total).index_copy(0, index, units)
        stats[f"zero_share/level{level}"] = share
        stats[f"expert_units/level{level}"] = units

    @abc.abstractmethod
    def expert_counts(self) -> list[int]:
        """The number of experts on each level (one level for MMoE; PLE and HoME have several), in the
        order of the ``zero_share/level{j}`` stats."""

    def gate_index(self, task: str) -> Tensor | None:
        """Which of the last level's experts task ``task``'s gate weighs, in the order of its weights
        (``None``: all of them, in order). CGC, PLE and HoME gate a task over a subset."""
        return None
