"""The auxiliary losses of sparse routing, as functions of sums over the routed units.

Each loss is a function of a few sums over the units a router routed (units per task, summed router
probabilities per task, top-k assignments per expert, summed squared log-partitions), so that the
sums of several batches, or of several ranks, give the loss of their union. `TaskSparseMoE`
(`mtl.necks.sparse_moe`) forms the sums, adds them over the ranks in training, and calls the
``*_from_sums`` functions; the per-unit functions (`load_balancing_loss`, `router_z_loss`,
`mutual_information_loss`) are the same losses on one batch of units.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mtl.necks.diagnostics import entropy

__all__ = [
    "assignment_counts",
    "balance_from_sums",
    "load_balancing_loss",
    "mutual_information_from_sums",
    "mutual_information_loss",
    "router_z_loss",
    "weighted_sum",
]


def weighted_sum(values: Tensor, weight: Tensor | None) -> tuple[Tensor, Tensor]:
    """``(Σ_u w_u values[u], Σ_u w_u)`` over the first axis (``weight`` ``[U]``; ``None``: all 1), in
    at least float32."""
    values = values.float()
    if weight is None:
        return values.sum(dim=0), values.new_tensor(float(values.shape[0]))
    weight = weight.to(values.dtype)
    shape = (-1,) + (1,) * (values.dim() - 1)
    return (values * weight.view(shape)).sum(dim=0), weight.sum()


def assignment_counts(top_index: Tensor, num_experts: int) -> Tensor:
    """``[U, N]``: how many of unit ``u``'s top-k choices went to expert ``i`` (0 or 1)."""
    ones = torch.ones_like(top_index, dtype=torch.float32)
    return torch.zeros(top_index.shape[0], num_experts, device=top_index.device).scatter_add_(
        1, top_index, ones
    )


def balance_from_sums(prob_sum: Tensor, assignments: Tensor, units: Tensor, k: int) -> Tensor:
    """Switch loss ``N Σ_i f_i P_i`` from sums over ``units`` routed units: ``P_i = prob_sum_i / units``,
    ``f_i = assignments_i / (k · units)`` (``assignments_i``: top-k choices of expert ``i``)."""
    units = units.clamp_min(1e-12)
    return prob_sum.shape[-1] * ((assignments / (k * units)) * (prob_sum / units)).sum()


def mutual_information_from_sums(prob_sums: Tensor, units: Tensor) -> Tensor:
    """``-MI(T; E)`` from per-task sums: ``P(e | t) = prob_sums[t] / units[t]``, ``P(t) = units[t] / Σ
    units``. A task without units has ``P(t) = 0`` and drops out."""
    conditionals = prob_sums / units.clamp_min(1e-12).unsqueeze(-1)
    task_prior = units / units.sum().clamp_min(1e-12)
    marginal = (task_prior.unsqueeze(-1) * conditionals).sum(dim=0)  # P(e)
    return -(entropy(marginal) - (task_prior * entropy(conditionals)).sum())


def load_balancing_loss(probs: Tensor, top_index: Tensor, weight: Tensor | None = None) -> Tensor:
    """Switch load-balancing loss ``N · Σ_i f_i · P_i`` (Fedus et al., JMLR 2022).

    Args:
        probs: ``[U, N]`` router probabilities (softmax over all experts) of ``U`` routed units.
        top_index: ``[U, k]`` the experts each unit was dispatched to; ``f_i`` is the fraction of the
            ``k · U`` assignments that chose expert ``i`` (Switch's top-1 fraction when ``k = 1``).
        weight: ``[U]`` unit weights (e.g. 0 for padding), or ``None``.
    """
    prob_sum, units = weighted_sum(probs, weight)
    assignments, _ = weighted_sum(assignment_counts(top_index, probs.shape[-1]), weight)
    return balance_from_sums(prob_sum, assignments, units, top_index.shape[-1])


def router_z_loss(logits: Tensor, weight: Tensor | None = None) -> Tensor:
    """Router z-loss ``mean_u (logsumexp_i logits[u, i])²`` (Zoph et al., ST-MoE, 2022)."""
    total, units = weighted_sum(torch.logsumexp(logits.float(), dim=-1).square(), weight)
    return total / units.clamp_min(1e-12)


def mutual_information_loss(
    probs: Sequence[Tensor], weights: Sequence[Tensor | None] | None = None
) -> Tensor:
    """``-MI(T; E)`` of the batch's task-expert joint (Mod-Squad, Chen et al., CVPR 2023).

    ``P(e | t)`` is task ``t``'s mean router probability, ``P(t)`` the share of the routed units that
    belong to ``t`` (weighted by ``weights``), and ``MI = H(Σ_t P(t) P(· | t)) - Σ_t P(t) H(P(· | t))``,
    which equals ``Σ_{t,e} P(t, e) log(P(t, e) / (P(t) P(e)))``.

    Args:
        probs: per task, ``[U_t, N]`` router probabilities of its units.
        weights: per task, ``[U_t]`` unit weights (e.g. 0 for padding), or ``None``.
    """
    weights = list(weights) if weights is not None else [None] * len(probs)
    sums = [weighted_sum(p, w) for p, w in zip(probs, weights, strict=True)]
    return mutual_information_from_sums(torch.stack([s for s, _ in sums]), torch.stack([n for _, n in sums]))
