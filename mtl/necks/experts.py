"""Stacked experts: ``K`` small MLPs evaluated together in one batched contraction per layer.

A mixture-of-experts neck evaluates every expert on every row (and, for sequence encoders, on every
token). Holding the experts as ``K`` separate ``nn.Linear`` stacks would mean a Python loop of ``K``
small matrix products per layer; stacking the weights as ``[K, in, out]`` turns each layer into a
single ``einsum`` whose cost is one large product, which is what keeps MoE necks cheap on GPUs.

Also home of the argument checks the MoE necks share, so that their errors read the same.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mtl.necks.diagnostics import nonpositive_share

__all__ = [
    "StackedExperts",
    "check_count",
    "check_dropout",
    "check_expert_hidden",
    "expert_layer",
    "stacked_weights",
]


def check_count(value: int, name: str, owner: str, minimum: int = 1) -> int:
    """``value`` if it is an integer ``>= minimum``, else ``ValueError`` naming ``name`` and ``owner``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"Expected `{name}` of {owner} to be at least {minimum}, but got {value}.")
    return value


def check_expert_hidden(hidden: Sequence[int], owner: str) -> list[int]:
    """``hidden`` as a non-empty list of positive widths, else ``ValueError``."""
    widths = list(hidden) if isinstance(hidden, Sequence) and not isinstance(hidden, str) else None
    if not widths or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(
            f"Expected `expert_hidden` of {owner} to be a non-empty list of positive layer widths, but got "
            f"{hidden}. Use e.g. `expert_hidden: [64]`; its last width is the neck's output width."
        )
    return widths


def check_dropout(dropout: float, owner: str) -> float:
    """``dropout`` as a float in ``[0, 1)``, else ``ValueError``."""
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"Expected `dropout` of {owner} to be in [0, 1), but got {dropout}. Use e.g. 0.1.")
    return float(dropout)


def stacked_weights(num_experts: int, widths: Sequence[int]) -> nn.ParameterList:
    """One ``[K, in, out]`` weight per layer, each expert initialised as `nn.Linear` would
    (uniform in ``±1/sqrt(fan_in)``)."""
    weights = nn.ParameterList()
    for i, o in itertools.pairwise(widths):
        weight = nn.Parameter(torch.empty(num_experts, i, o))
        bound = 1.0 / math.sqrt(i)
        nn.init.uniform_(weight, -bound, bound)
        weights.append(weight)
    return weights


def expert_layer(h: Tensor, weight: Tensor, shared_input: bool) -> Tensor:
    """One layer of stacked experts: ``[..., in]`` read by all ``K`` experts (``shared_input``: one
    product ``[N, in] x [in, K*out]``) or ``[..., K, in]``, one input per expert (a product batched
    over the expert axis); ``[..., K, out]`` either way."""
    if shared_input:
        return torch.einsum("...i,kio->...ko", h, weight)
    return torch.einsum("...ki,kio->...ko", h, weight)


class StackedExperts(nn.Module):
    """``K`` expert MLPs ``[Linear, ReLU, Dropout] * len(hidden)``, with weights stacked over experts.

    Layer ``j`` holds ``weights[j]``: ``[K, in_j, out_j]`` and ``biases[j]``: ``[K, out_j]``; expert
    ``k`` is exactly the MLP built from ``weights[j][k]`` and ``biases[j][k]``. Every layer ends with
    a ReLU, the last one included: the experts produce a hidden representation that a gate mixes
    and a task head then reads, as in MMoE and PLE, whose experts are ReLU layers.

    Inputs may have any leading shape, so the same experts serve pooled ``[B, H]`` and per-token
    ``[B, L, H]`` features (experts as per-token feed-forward blocks).

    Args:
        num_experts: ``K``.
        in_features: input width.
        hidden: widths of each expert's layers; the last is the output width.
        dropout: dropout after each layer's activation (0 disables it).
    """

    def __init__(
        self, num_experts: int, in_features: int, hidden: Sequence[int], dropout: float = 0.0
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        self.num_experts = check_count(num_experts, "num_experts", owner)
        self.in_features = check_count(in_features, "in_features", owner)
        self.hidden = check_expert_hidden(hidden, owner)
        self.weights = stacked_weights(num_experts, [in_features, *self.hidden])
        self.biases = nn.ParameterList(nn.Parameter(torch.empty(num_experts, o)) for o in self.hidden)
        for weight, bias in zip(self.weights, self.biases, strict=True):
            # As `nn.Linear` initialises its bias: uniform in ±1/sqrt(fan_in).
            nn.init.uniform_(bias, -1.0 / math.sqrt(weight.shape[1]), 1.0 / math.sqrt(weight.shape[1]))
        self.dropout = nn.Dropout(check_dropout(dropout, owner)) if dropout > 0 else nn.Identity()

    @property
    def out_features(self) -> int:
        return self.hidden[-1]

    def forward(
        self, x: Tensor, index: Tensor | None = None, per_expert: bool = False, activity: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Outputs ``[..., K', out]`` of the experts ``index`` (``K' = len(index)``; all when ``None``).

        Args:
            x: ``[..., in]``, one input read by every expert, or with ``per_expert``,
                ``[..., K', in]``, one input per selected expert (PLE's upper levels, where each
                expert reads its own branch).
            index: which experts to evaluate (a LongTensor of expert ids), e.g. only those of the tasks
                in the batch; selecting weights is far cheaper than computing unused experts.
            per_expert: whether ``x`` carries one input per expert.
            activity: also return `nonpositive_share` ``[..., K']`` of the last layer's activations
                (before dropout): per unit and expert, the share of zero outputs.
        """
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"Expected inputs of width {self.in_features} for {type(self).__name__}, but got shape "
                f"{tuple(x.shape)}."
            )
        h = x
        last = len(self.weights) - 1
        nonpositive = None
        for layer, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            if index is not None:
                weight, bias = weight.index_select(0, index), bias.index_select(0, index)
            h = torch.relu(expert_layer(h, weight, layer == 0 and not per_expert) + bias)
            if activity and layer == last:
                nonpositive = nonpositive_share(h)
            h = self.dropout(h)
        return h if nonpositive is None else (h, nonpositive)

    def extra_repr(self) -> str:
        return f"num_experts={self.num_experts}, in_features={self.in_features}, hidden={self.hidden}"
