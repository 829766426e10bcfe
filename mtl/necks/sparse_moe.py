"""Task-aware sparse mixture-of-experts: noisy top-k routing with one router per task.

Every task owns a router that sends each row (and, on token inputs, each token) to only ``k`` of
``N`` shared experts, so that the compute per example is that of ``k`` experts whatever ``N`` is:

* Routing: noisy top-k gating (Shazeer et al., "Outrageously Large Neural Networks: The
  Sparsely-Gated Mixture-of-Experts Layer", ICLR 2017), ``H(x) = x W_g + ε · softplus(x W_noise)``
  with ``ε ~ N(0, 1)`` in training only, ``G(x) = softmax(TopK(H(x), k))``: the ``k`` largest logits
  are kept and renormalised by a softmax over them, so the ``k`` gate weights sum to 1.
* One router per task over shared experts, i.e. task-conditioned routing, as in Mod-Squad (Chen et
  al., "Mod-Squad: Designing Mixtures of Experts As Modular Multi-Task Learners", CVPR 2023) and
  task-level routing of Gupta et al., "Sparsely Activated Mixture-of-Experts are Robust Multi-Task
  Learners", 2022.
* Auxiliary losses (their weighted sum is the neck's ``aux_loss``, ``None`` when every weight is 0):

  - load balancing (Fedus et al., "Switch Transformers", JMLR 2022): ``N · Σ_i f_i · P_i``, with
    ``P_i`` the mean router probability of expert ``i`` and ``f_i`` the fraction of the top-k
    assignments that go to expert ``i`` (the top-k generalisation of Switch's top-1 fraction:
    ``f_i = #{(u, j): top_j(u) = i} / (k · U)``, so that ``Σ_i f_i = 1``; for ``k = 1`` it is
    Switch's). It equals 1 under uniform routing and grows with imbalance;
  - router z-loss (Zoph et al., "ST-MoE: Designing Stable and Transferable Sparse Expert Models",
    2022): ``mean_u (logsumexp_i h_i(u))²``, keeping the router logits small;
  - task-expert mutual information (Mod-Squad): ``-MI(T; E)`` from the batch's joint
    ``P(t, e) = P(t) · mean_{u ∈ t} p(e | u)``, ``P(t)`` the fraction of routed units that belong to
    task ``t``. Minimising it makes experts specialise in tasks while keeping all experts in use
    (``MI = H(E) - H(E | T)``).

  All three read the logits the router actually routes with (noisy in training) and their softmax
  ``p``, over every routed unit of every task together (pooled rows and real tokens; padding
  excluded), so that balance is global over the shared experts, as Mod-Squad's ``H(E)`` term. They
  are functions of sums over the units (per task: units and summed probabilities; per expert: top-k
  assignments; the summed squared log-partition; `mtl.necks.router_losses`). In training under torch.distributed these sums
  are added up over the ranks (`mtl.necks.distributed.global_sum`) before the losses are formed, so
  that ``k`` ranks compute the losses, and their gradients, of the global batch, exactly as one rank
  holding it would; in evaluation each rank uses its own batch (evaluation shards may differ in
  their number of batches, and a collective there could hang).

Dispatch (how the sparsity is realised). The ``(unit, expert)`` assignments of all tasks are
gathered into one list, sorted by expert, and scattered into a ``[C, E', H]`` buffer (``E'`` the
experts that received any unit, ``C`` the largest number of units one of them received, or the
capacity); one batched product per layer (`StackedExperts` with ``per_expert``, i.e. a ``bmm`` over
the expert axis with the selected experts' stacked weights) evaluates every expert on its own units
only, and an ``index_add`` scatters the gated outputs back to their units. No expert ever sees a unit
that did not select it and there is no Python loop over experts; the price is the padding of the
buffer to ``C`` rows per expert, which a ``capacity_factor`` bounds. Padded tokens are not routed
(their outputs are zero).

Capacity (Switch, GShard): with ``capacity_factor`` ``c``, each expert takes at most
``ceil(c · A / N)`` of the ``A`` assignments of the forward pass; first choices are served before
second choices, and within a choice earlier units first. An overflowing assignment is dropped: it
contributes nothing, and its unit's remaining gate weights are not renormalised (as in Switch). With
capacity the output of a row depends on the rest of the batch.

With ``k = 1`` the renormalised gate is always 1, so the task losses give the router no gradient;
it then learns only from the auxiliary losses (use ``k >= 2``, as Shazeer et al.).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtl.features import Features
from mtl.necks.base import NeckOutput
from mtl.necks.distributed import global_sum
from mtl.necks.experts import StackedExperts, check_count
from mtl.necks.gates import MixtureNeck
from mtl.necks.router_losses import (
    assignment_counts,
    balance_from_sums,
    load_balancing_loss,
    mutual_information_from_sums,
    mutual_information_loss,
    router_z_loss,
    weighted_sum,
)

__all__ = [
    "NoisyTopKRouter",
    "Routing",
    "TaskSparseMoE",
    "balance_from_sums",
    "load_balancing_loss",
    "mutual_information_from_sums",
    "mutual_information_loss",
    "router_z_loss",
]


@dataclass
class Routing:
    """One router's decision for ``U`` units.

    Attributes:
        logits: ``[U, N]`` the logits routed with (``x W_g``, plus the noise in training).
        probs: ``[U, N]`` their softmax over all experts.
        top_index: ``[U, k]`` the ``k`` chosen experts, by decreasing logit.
        top_gates: ``[U, k]`` their gate weights, a softmax over the ``k`` kept logits (sums to 1).
    """

    logits: Tensor
    probs: Tensor
    top_index: Tensor
    top_gates: Tensor

    def dense(self) -> Tensor:
        """``[U, N]`` gate weights, zero outside the top-k."""
        return torch.zeros_like(self.probs).scatter(1, self.top_index, self.top_gates)


class NoisyTopKRouter(nn.Module):
    """Noisy top-k gating (Shazeer et al., ICLR 2017) over ``num_experts`` experts.

    ``H(x) = x W_g + ε · softplus(x W_noise)``, ``ε ~ N(0, 1)`` drawn in training only (``noisy``),
    without biases as in the paper. ``W_noise`` starts at zero (noise std ``softplus(0) ≈ 0.69``,
    the paper's "no signal and some noise"); ``W_g`` starts as `nn.Linear` does, so that the experts
    are already routed apart before training.
    """

    def __init__(self, in_features: int, num_experts: int, k: int, noisy: bool = True) -> None:
        super().__init__()
        self.num_experts, self.k = num_experts, k
        self.linear = nn.Linear(in_features, num_experts, bias=False)
        self.noise: nn.Linear | None = None
        if noisy:
            self.noise = nn.Linear(in_features, num_experts, bias=False)
            nn.init.zeros_(self.noise.weight)

    def forward(self, x: Tensor) -> Routing:
        """Route ``x`` ``[U, in]``."""
        logits = self.linear(x)
        if self.noise is not None and self.training:
            logits = logits + torch.randn_like(logits) * F.softplus(self.noise(x))
        top_logits, top_index = logits.topk(self.k, dim=-1)
        return Routing(logits, torch.softmax(logits, dim=-1), top_index, torch.softmax(top_logits, dim=-1))


def _check_weight(value: float, name: str, owner: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"Expected `{name}` of {owner} to be a finite number >= 0, but got {value}.")
    return float(value)


class TaskSparseMoE(MixtureNeck):
    """Task-aware sparse mixture-of-experts: a noisy top-k router per task over ``N`` shared experts.

    Task ``t`` reads ``f_t(x) = Σ_{i ∈ TopK_t(x)} G_t(x)_i E_i(x)``; only the ``k`` chosen experts are
    evaluated for each routed row (and token), see the module docstring for the routing, the
    auxiliary losses, the dispatch and the capacity. Stats: the gate stats of
    `MixtureNeck.task_features` on the dense dispatched gates (``gate/{task}``, mean gate weights
    ``[N]``, zero outside the top-k; ``gate_entropy/{task}``, the entropy of each unit's ``k`` gate
    weights, at most ``log k``; their per-token versions), ``zero_share/level0`` (each expert's share
    of zero outputs over the units dispatched to it), ``load`` (``f_i``, the share of the top-k
    assignments per expert ``[N]``), ``dropped`` (share of assignments over capacity, with a
    ``capacity_factor``) and each enabled auxiliary term (``balance_loss``, ``z_loss``,
    ``mi_loss``, unweighted).

    Hyper-parameters:
        num_experts: ``N``, the number of shared experts.
        k: experts per row (``1 <= k <= N``); compute per row is ``k`` experts.
        expert_hidden: widths of each expert MLP's layers; the last is the output width.
        noisy: add the learned-scale Gaussian noise to the router logits in training.
        load_balance_weight: weight of the Switch load-balancing loss.
        z_loss_weight: weight of the router z-loss.
        mutual_information_weight: weight of the ``-MI(task; expert)`` loss.
        capacity_factor: ``None`` for no capacity limit, else each expert takes at most
            ``ceil(capacity_factor · A / N)`` of the ``A`` assignments of a forward pass.
        dropout: dropout after each expert layer.
        route_tokens: also route ``tokens`` per token when the encoder provides them.
    """

    def __init__(
        self,
        num_experts: int,
        k: int,
        expert_hidden: Sequence[int],
        noisy: bool = True,
        load_balance_weight: float = 0.01,
        z_loss_weight: float = 0.0,
        mutual_information_weight: float = 0.0,
        capacity_factor: float | None = None,
        dropout: float = 0.0,
        route_tokens: bool = True,
    ) -> None:
        super().__init__(expert_hidden, dropout, route_tokens)
        name = type(self).__name__
        self.num_experts = check_count(num_experts, "num_experts", name)
        self.k = check_count(k, "k", name)
        if self.k > self.num_experts:
            raise ValueError(
                f"Expected `k` to be at most `num_experts` ({self.num_experts}) of {name}, but got {k}."
            )
        if not isinstance(noisy, bool):
            raise ValueError(f"Expected `noisy` of {name} to be a bool, but got {noisy!r}.")
        self.noisy = noisy
        self.load_balance_weight = _check_weight(load_balance_weight, "load_balance_weight", name)
        self.z_loss_weight = _check_weight(z_loss_weight, "z_loss_weight", name)
        self.mutual_information_weight = _check_weight(
            mutual_information_weight, "mutual_information_weight", name
        )
        if capacity_factor is not None and (
            isinstance(capacity_factor, bool)
            or not isinstance(capacity_factor, (int, float))
            or not math.isfinite(capacity_factor)
            or capacity_factor <= 0
        ):
            raise ValueError(
                f"Expected `capacity_factor` of {name} to be None or a number > 0, but got {capacity_factor}."
            )
        self.capacity_factor = None if capacity_factor is None else float(capacity_factor)

    def build(self, in_features: int, tasks: list[str]) -> None:
        self.experts = StackedExperts(self.num_experts, in_features, self.expert_hidden, self.dropout)
        self.routers = nn.ModuleDict(
            {task: NoisyTopKRouter(in_features, self.num_experts, self.k, self.noisy) for task in tasks}
        )

    def extra_repr(self) -> str:
        return (
            f"num_experts={self.num_experts}, k={self.k}, noisy={self.noisy}, "
            f"load_balance_weight={self.load_balance_weight}, z_loss_weight={self.z_loss_weight}, "
            f"mutual_information_weight={self.mutual_information_weight}, "
            f"capacity_factor={self.capacity_factor}, {super().extra_repr()}"
        )

    def expert_counts(self) -> list[int]:
        return [self.num_experts]

    def route(self, task: str, x: Tensor) -> Routing:
        """Task ``task``'s routing of ``x`` ``[U, in]`` (noisy in training)."""
        return self.routers[task](x)

    # ----------------------------------------------------------------------------------- forward
    def forward(self, features: Features, routes: Mapping[str, Tensor | None]) -> NeckOutput:
        x = self.expert_inputs(features)  # [B, H] or [B, P, H]
        self.check_routes(routes)
        batch, positions = x.shape[0], (1 if x.dim() == 2 else x.shape[1])
        flat = x.reshape(batch * positions, x.shape[-1])
        # Real units: pooled rows and real tokens (padding is not routed).
        units_real = self.real_units(features, x)
        real = (
            torch.ones(batch * positions, dtype=torch.bool, device=x.device)
            if units_real is None
            else units_real.reshape(-1)
        )
        offsets = torch.arange(positions, device=x.device)

        units, routings, valid = [], [], []
        for task, rows in routes.items():
            rows = torch.arange(batch, device=x.device) if rows is None else rows.to(x.device)
            unit = (rows.unsqueeze(-1) * positions + offsets).reshape(-1)  # into `flat`
            units.append(unit)
            routings.append(self.route(task, flat[unit]))
            valid.append(real[unit])

        stats: dict[str, Tensor] = {}
        mixed, gates, load, dropped = self._dispatch(flat, units, routings, valid, stats)
        stats["load"] = load
        if dropped is not None:
            stats["dropped"] = dropped
        out: dict[str, Features] = {}
        start = 0
        for (task, rows), unit in zip(routes.items(), units, strict=True):
            n = len(unit)
            task_mixed, task_gates = mixed[start : start + n], gates[start : start + n]
            start += n
            if x.dim() == 3:
                task_mixed = task_mixed.view(-1, positions, task_mixed.shape[-1])
                task_gates = task_gates.view(-1, positions, self.num_experts)
            out[task] = self.task_features(features, rows, task_mixed, task_gates, task, stats)
        return NeckOutput(features=out, aux_loss=self._aux_loss(routings, valid, stats), stats=stats)

    def _dispatch(
        self,
        flat: Tensor,
        units: list[Tensor],
        routings: list[Routing],
        valid: list[Tensor],
        stats: dict[str, Tensor],
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """Evaluate each expert on the units dispatched to it; the gated sums ``[U, O]``, the dense
        dispatched gates ``[U, N]``, the load ``f`` ``[N]`` and the dropped share (or ``None``); records
        the experts' zero share (over the units each one served) in ``stats``."""
        n, k = self.num_experts, self.k
        device = flat.device
        source = torch.cat(units) if units else flat.new_zeros(0, dtype=torch.long)
        total = len(source)
        if routings:
            top_index = torch.cat([r.top_index for r in routings])  # [U, k]
            top_gates = torch.cat([r.top_gates for r in routings])
            real = torch.cat(valid)
        else:
            top_index = torch.zeros(0, k, dtype=torch.long, device=device)
            top_gates = flat.new_zeros(0, k)
            real = torch.zeros(0, dtype=torch.bool, device=device)

        # Assignments (unit u, choice j) of real units, in priority order: choice, then unit.
        choice = torch.arange(k, device=device).expand(total, k)
        unit_of = torch.arange(total, device=device).unsqueeze(-1).expand(total, k)
        keep = real.unsqueeze(-1).expand(total, k).clone()
        expert = top_index[keep]
        rank = (choice * total + unit_of)[keep]  # unique priority of each assignment
        counts = torch.bincount(expert, minlength=n)
        assignments = int(counts.sum())
        load = (counts.float() / max(assignments, 1)).detach()
        # Position of each assignment within its expert's queue.
        order = torch.argsort(expert * (k * total) + rank)
        starts = torch.cumsum(counts, 0) - counts
        position = torch.empty_like(order)
        position[order] = torch.arange(len(order), device=device) - starts[expert[order]]
        dropped = None
        if self.capacity_factor is not None:
            capacity = math.ceil(self.capacity_factor * assignments / n)
            served = position < capacity
            dropped = (1.0 - served.float().sum() / max(assignments, 1)).detach()
            kept = keep.clone()
            kept[keep] = served
            keep = kept
            expert, position = expert[served], position[served]
        unit = unit_of[keep]
        gate = top_gates[keep]

        dispatched_gates = torch.zeros(total, k, dtype=top_gates.dtype, device=device)
        dispatched_gates = dispatched_gates.masked_scatter(keep, gate)
        dense = torch.zeros(total, n, dtype=top_gates.dtype, device=device).scatter(
            1, top_index, dispatched_gates
        )
        mixed = flat.new_zeros(total, self.expert_hidden[-1])
        if len(expert) == 0:
            self.record_zero_share(stats, 0, flat.new_zeros(0, n))
            return mixed, dense, load, dropped
        # Group by expert: a [C, E', H] buffer, one batched product per layer over E' experts.
        served_counts = torch.bincount(expert, minlength=n)
        used = torch.nonzero(served_counts, as_tuple=True)[0]
        slot = torch.full((n,), -1, dtype=torch.long, device=device)
        slot[used] = torch.arange(len(used), device=device)
        depth = int(position.max()) + 1
        buffer = flat.new_zeros(depth, len(used), flat.shape[-1])
        buffer = buffer.index_put((position, slot[expert]), flat[source[unit]])
        outputs, nonpositive = self.experts(buffer, index=used, per_expert=True, activity=True)  # [C, E', O]
        filled = torch.arange(depth, device=device).unsqueeze(-1) < served_counts[used]  # [C, E']
        self.record_zero_share(stats, 0, nonpositive, filled, used)
        gated = outputs[position, slot[expert]] * gate.unsqueeze(-1).to(outputs.dtype)
        return mixed.index_add(0, unit, gated.to(mixed.dtype)), dense, load, dropped

    def _aux_loss(
        self, routings: list[Routing], valid: list[Tensor], stats: dict[str, Tensor]
    ) -> Tensor | None:
        """The weighted auxiliary losses, from router statistics summed over the real units of every
        task (and, in training under torch.distributed, over every rank: see `global_sum`)."""
        weights = {
            "balance_loss": self.load_balance_weight,
            "z_loss": self.z_loss_weight,
            "mi_loss": self.mutual_information_weight,
        }
        if not any(weights.values()) or not routings:
            return None
        # Per task: real units [T] and summed probabilities [T, N]; all tasks: assignments [N], z [].
        sums = [weighted_sum(r.probs, v) for r, v in zip(routings, valid, strict=True)]
        prob_sums, task_units = torch.stack([p for p, _ in sums]), torch.stack([u for _, u in sums])
        real = torch.cat(valid)
        assignments, _ = weighted_sum(
            assignment_counts(torch.cat([r.top_index for r in routings]), self.num_experts), real
        )
        z_sum, _ = weighted_sum(
            torch.logsumexp(torch.cat([r.logits for r in routings]).float(), -1).square(), real
        )
        if self.training:
            # One collective for all of them; a no-op on a single process.
            packed = torch.cat([task_units, prob_sums.flatten(), assignments, z_sum.view(1)])
            packed = global_sum(packed)
            n_tasks, n = len(routings), self.num_experts
            task_units, prob_sums = packed[:n_tasks], packed[n_tasks : n_tasks * (n + 1)].view(n_tasks, n)
            assignments, z_sum = packed[n_tasks * (n + 1) : -1], packed[-1]
        units = task_units.sum()
        terms: dict[str, Tensor] = {}
        if self.load_balance_weight:
            terms["balance_loss"] = balance_from_sums(prob_sums.sum(dim=0), assignments, units, self.k)
        if self.z_loss_weight:
            terms["z_loss"] = z_sum / units.clamp_min(1e-12)
        if self.mutual_information_weight:
            terms["mi_loss"] = mutual_information_from_sums(prob_sums, task_units)
        for name, term in terms.items():
            stats[name] = term.detach()
        return sum(weights[name] * term for name, term in terms.items())
