"""DSelect-k: shared experts, one differentiable sparse gate per task.

Hazimeh, Zhao, Chowdhery, Sathiamoorthy, Chen, Mazumder, Hong and Chi, "DSelect-k: Differentiable
Selection in the Mixture of Experts with Applications to Multi-Task Learning", NeurIPS 2021.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from mtl.features import Features
from mtl.necks.base import NeckOutput
from mtl.necks.experts import StackedExperts, check_count
from mtl.necks.gates import MixtureNeck, mix, take

__all__ = ["DSelectGate", "DSelectK", "binary_codes", "selector_entropy", "smooth_step"]

GateKind = Literal["static", "per_example"]

#: Added inside the logarithm of the entropy regulariser, so that its gradient stays finite at 0.
ENTROPY_EPS = 1e-6


def smooth_step(t: Tensor, gamma: float) -> Tensor:
    """The cubic smooth-step ``S(t)`` of DSelect-k (Section 3 of the paper).

    With ``g = gamma``: ``S(t) = 0`` for ``t <= -g/2``, ``1`` for ``t >= g/2``, and
    ``-2t³/g³ + 3t/(2g) + 1/2`` in between. It is continuously differentiable (``S'(±g/2) = 0``) and
    exactly 0 or 1 outside ``[-g/2, g/2]``, which is what lets a selector reach an exactly binary
    (one-hot) state.
    """
    cubic = -2.0 * t.pow(3) / gamma**3 + 3.0 * t / (2.0 * gamma) + 0.5
    return torch.where(
        t <= -gamma / 2, torch.zeros_like(t), torch.where(t >= gamma / 2, torch.ones_like(t), cubic)
    )


def binary_codes(num_bits: int) -> Tensor:
    """``[2**num_bits, num_bits]`` booleans: row ``i`` is the binary code of ``i``, least significant
    bit first (entry ``[i, j]`` is bit ``j`` of ``i``)."""
    ids = torch.arange(2**num_bits).unsqueeze(-1)
    return (ids >> torch.arange(num_bits)) & 1 == 1


def selector_entropy(selectors: Tensor) -> Tensor:
    """``Σ_l h(r^(l))`` with ``h(r) = -Σ_i r_i log(r_i + ε)``: the entropy of each single-expert
    selector ``selectors[..., l, :]``, summed over the ``k`` selectors (shape ``[...]``)."""
    return -(selectors * torch.log(selectors + ENTROPY_EPS)).sum(dim=(-2, -1))


class DSelectGate(nn.Module):
    """One task's DSelect-k gate: ``k`` single-expert selectors and a softmax over them.

    With ``m = max(1, ⌈log2 n⌉)`` binary-encoding variables ``z ∈ R^m``, single-expert selector ``l``
    gives expert ``i`` the weight ``r(z)_i = Π_j (S(z_j) if bit j of i is 1 else 1 - S(z_j))``, a
    distribution over the ``2^m`` codes; the gate returns ``q = Σ_l softmax(alpha)_l r(z^(l))``. The
    ``static`` gate learns ``z^(1..k)`` and ``alpha`` directly (task-only conditioning); the
    ``per_example`` gate computes ``z^(l) = W_z^(l) x`` and ``alpha = W_alpha x`` (no biases, like the
    softmax gates of the other necks).

    Experts that do not exist (codes ``n .. 2^m - 1`` when ``n`` is not a power of 2): each selector
    ``r`` is restricted to the ``n`` real codes and renormalised, ``r̃_i = r_i / Σ_{i'<n} r_i'``, so
    phantom experts get exactly zero weight and every ``r̃`` (hence ``q``) sums to 1. Should a
    selector put all of its mass on phantom codes (``Σ_{i<n} r_i = 0``, only possible once its ``z``
    saturate), ``r̃`` falls back to uniform over the real experts. The paper and its reference code
    instead keep ``r`` and add the penalty ``1 / Σ_{i<n} r_i`` to the loss; renormalising makes the
    gate a probability vector over the real experts at every step, with no extra loss term.

    Initialisation: ``z`` (or ``W_z``) uniform in ``±gamma/100``, so that every ``S(z_j)`` starts
    near 1/2, inside the region where it has a gradient (the reference code's choice); ``alpha`` (or
    ``W_alpha``) uniform in ``±0.05``.
    """

    def __init__(self, in_features: int, num_experts: int, k: int, gamma: float, per_example: bool) -> None:
        super().__init__()
        self.num_experts, self.k, self.gamma, self.per_example = num_experts, k, gamma, per_example
        self.num_bits = max(1, math.ceil(math.log2(num_experts)))
        self.register_buffer("codes", binary_codes(self.num_bits), persistent=False)
        if per_example:
            self.z_proj = nn.Linear(in_features, k * self.num_bits, bias=False)
            self.alpha_proj = nn.Linear(in_features, k, bias=False)
            z, alpha = self.z_proj.weight, self.alpha_proj.weight
        else:
            self.z = nn.Parameter(torch.empty(k, self.num_bits))
            self.alpha = nn.Parameter(torch.empty(k))
            z, alpha = self.z, self.alpha
        nn.init.uniform_(z, -gamma / 100, gamma / 100)
        nn.init.uniform_(alpha, -0.05, 0.05)

    def selectors(self, z: Tensor) -> Tensor:
        """``[..., k, n]``: the renormalised single-expert selectors ``r̃(z^(l))``, for ``z``
        ``[..., k, m]``."""
        s = smooth_step(z, self.gamma).unsqueeze(-2)  # [..., k, 1, m]
        r = torch.where(self.codes, s, 1 - s).prod(dim=-1)[..., : self.num_experts]  # [..., k, n]
        total = r.sum(dim=-1, keepdim=True)
        alive = total > 0
        renormalised = r / torch.where(alive, total, torch.ones_like(total))
        return torch.where(alive, renormalised, torch.full_like(r, 1.0 / self.num_experts))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(q, r̃)`` for inputs ``x`` ``[..., H]``: the expert weights ``[..., n]`` (a probability
        vector per input) and the selectors ``[..., k, n]`` (static gate: ``[k, n]``, the same for all
        inputs)."""
        lead = x.shape[:-1]
        if self.per_example:
            selectors = self.selectors(self.z_proj(x).view(*lead, self.k, self.num_bits))
            alpha = torch.softmax(self.alpha_proj(x), dim=-1)
            return torch.einsum("...l,...ln->...n", alpha, selectors), selectors
        selectors = self.selectors(self.z)
        weights = torch.softmax(self.alpha, dim=-1) @ selectors
        return weights.expand(*lead, self.num_experts), selectors

    def extra_repr(self) -> str:
        kind = "per_example" if self.per_example else "static"
        return (
            f"num_experts={self.num_experts}, k={self.k}, num_bits={self.num_bits}, gamma={self.gamma}, "
            f"gate={kind}"
        )


class DSelectK(MixtureNeck):
    """Multi-gate mixture-of-experts with DSelect-k gates.

    Hazimeh et al., "DSelect-k: Differentiable Selection in the Mixture of Experts with Applications to
    Multi-Task Learning", NeurIPS 2021. As in MMoE, task ``t`` reads ``f_t(x) = Σ_i q_t(x)_i E_i(x)``
    over ``n`` shared experts, but ``q_t`` is a DSelect-k gate (see `DSelectGate`): a softmax-weighted
    combination of ``k`` single-expert selectors built on a smoothed binary encoding of the expert
    index. It is continuously differentiable and, once its encoding variables leave
    ``[-gamma/2, gamma/2]``, selects at most ``k`` experts exactly.

    Experts are evaluated once for every row (training computes all of them, as the paper does); each
    task's gate runs on its routed rows only. On token inputs a ``per_example`` gate acts per token
    (see `MixtureNeck`); a ``static`` gate gives every row and token the same weights.

    Auxiliary loss (``None`` when ``entropy_reg == 0``): the paper's entropy regulariser, which pushes
    each selector towards a one-hot (binary) state: ``entropy_reg · Σ_t mean Σ_l h(r̃_t^(l))``, with
    ``h(r) = -Σ_i r_i log(r_i + 1e-6)``, the mean over task ``t``'s routed rows (and, on tokens, over
    their pooled vector and real tokens), summed over the tasks in the batch.

    Stats: the gate stats of `MixtureNeck.task_features` (``gate/{task}``, the task's mean expert
    weights ``[n]`` over its rows, ``gate_entropy/{task}``, and their per-token versions) and
    ``zero_share/level0`` ``[n]`` (`MixtureNeck.record_zero_share`).

    Hyper-parameters:
        num_experts: ``n``, the number of shared experts.
        k: ``k``, the number of single-expert selectors per task: at most ``k`` experts are selected
            once the gate has converged (``1 <= k <= n``).
        expert_hidden: widths of each expert MLP's layers; the last is the output width.
        gate: ``"per_example"`` (``z``, ``alpha`` linear in the input) or ``"static"`` (learned per
            task).
        gamma: ``> 0``, the width of the smooth-step's cubic region; smaller converges to binary
            selections faster.
        entropy_reg: ``λ >= 0``, the weight of the entropy regulariser (0 disables it).
        dropout: dropout after each expert layer.
        route_tokens: also mix ``tokens`` per token when the encoder provides them.
    """

    def __init__(
        self,
        num_experts: int,
        k: int,
        expert_hidden: Sequence[int],
        gate: GateKind = "per_example",
        gamma: float = 1.0,
        entropy_reg: float = 0.0,
        dropout: float = 0.0,
        route_tokens: bool = True,
    ) -> None:
        super().__init__(expert_hidden, dropout, route_tokens)
        name = type(self).__name__
        self.num_experts = check_count(num_experts, "num_experts", name)
        self.k = check_count(k, "k", name)
        if k > num_experts:
            raise ValueError(
                f"Expected `k` to be at most `num_experts` ({num_experts}) for {name}, but got k={k}: "
                "each task selects at most `num_experts` experts."
            )
        if gate not in get_args(GateKind):
            raise ValueError(
                f"Expected `gate` of {name} to be one of {list(get_args(GateKind))}, but got {gate!r}."
            )
        self.gate = gate
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 < gamma < math.inf:
            raise ValueError(f"Expected `gamma` of {name} to be a positive finite number, but got {gamma}.")
        self.gamma = float(gamma)
        if (
            isinstance(entropy_reg, bool)
            or not isinstance(entropy_reg, (int, float))
            or not 0 <= entropy_reg < math.inf
        ):
            raise ValueError(
                f"Expected `entropy_reg` of {name} to be a non-negative finite number, but got {entropy_reg}."
            )
        self.entropy_reg = float(entropy_reg)

    def build(self, in_features: int, tasks: list[str]) -> None:
        self.experts = StackedExperts(self.num_experts, in_features, self.expert_hidden, self.dropout)
        per_example = self.gate == "per_example"
        self.gates = nn.ModuleDict(
            {
                task: DSelectGate(in_features, self.num_experts, self.k, self.gamma, per_example)
                for task in tasks
            }
        )

    def expert_counts(self) -> list[int]:
        return [self.num_experts]

    def forward(self, features: Features, routes: Mapping[str, Tensor | None]) -> NeckOutput:
        x = self.expert_inputs(features)
        self.check_routes(routes)
        experts, nonpositive = self.experts(x, activity=True)  # [B, (1 + L,) n, O], once for all rows
        real = self.real_units(features, x)
        out: dict[str, Features] = {}
        stats: dict[str, Tensor] = {}
        self.record_zero_share(stats, 0, nonpositive, real)
        entropies: list[Tensor] = []
        for task, rows in routes.items():
            weights, selectors = self.gates[task](take(x, rows))
            mixed = mix(weights, take(experts, rows))
            out[task] = self.task_features(features, rows, mixed, weights, task, stats)
            if self.entropy_reg > 0:
                entropies.append(self._mean_entropy(selectors, None if real is None else take(real, rows)))
        aux_loss = self.entropy_reg * torch.stack(entropies).sum() if entropies else None
        return NeckOutput(features=out, aux_loss=aux_loss, stats=stats)

    def _mean_entropy(self, selectors: Tensor, real: Tensor | None) -> Tensor:
        """Selector entropy averaged over the rows (and real positions ``real``) the gate was
        evaluated on."""
        entropy = selector_entropy(selectors)
        if self.gate == "static":
            return entropy  # one set of selectors per task: the same for every row
        if real is None:
            return entropy.sum() / max(entropy.numel(), 1)
        weight = real.to(entropy.dtype)
        return (entropy * weight).sum() / weight.sum().clamp_min(1)

    def extra_repr(self) -> str:
        return (
            f"num_experts={self.num_experts}, k={self.k}, gate={self.gate!r}, gamma={self.gamma}, "
            f"entropy_reg={self.entropy_reg}, {super().extra_repr()}"
        )
