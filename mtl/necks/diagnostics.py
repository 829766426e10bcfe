"""Pure functions that read how a mixture-of-experts neck uses its experts.

Two kinds of input, both reported by the necks as stats (`mtl.necks.gates.MixtureNeck`):

* gate distributions: a single gate ``[..., K]`` (`entropy` of each one), or the utilisation matrix
  ``U`` ``[T, K]``, row ``t`` task ``t``'s mean gate over its examples (`utilisation_entropy`,
  `effective_experts`, `expert_load`, `dead_experts`, `load_cv`, `task_expert_mutual_information`);
* expert activations: the share of each expert's output activations that are not positive
  (`nonpositive_share`, `zero_share`, `collapsed_experts`), the expert collapse of HoME (Wang et
  al., KDD 2025), where ReLU experts output exactly zero for most inputs.

`mtl.callbacks.ExpertDiagnostics` averages the stats over the validation set and logs these
functions of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "collapsed_experts",
    "dead_experts",
    "effective_experts",
    "entropy",
    "expert_load",
    "load_cv",
    "nonpositive_share",
    "task_expert_mutual_information",
    "utilisation_entropy",
    "zero_share",
]


# ----------------------------------------------------------------------------------- gates
def entropy(p: Tensor) -> Tensor:
    """Entropy in nats of each distribution ``p[..., :]``: ``-Σ_k p_k log p_k``, with ``0 log 0 = 0``.

    Computed in at least float32, so that bf16 gates do not lose the small terms. Returns ``[...]``.
    """
    p = p.float() if p.dtype in (torch.float16, torch.bfloat16) else p
    return -torch.xlogy(p, p).sum(dim=-1)


def _check_utilisation(U: Tensor) -> Tensor:
    if U.dim() != 2 or U.shape[0] < 1 or U.shape[1] < 1:
        raise ValueError(
            f"Expected a utilisation matrix of shape [T, K] with T, K >= 1, but got {tuple(U.shape)}."
        )
    return U.double()


def utilisation_entropy(U: Tensor) -> Tensor:
    """Entropy in nats of each task's utilisation: ``H_t = -Σ_e U[t, e] log U[t, e]`` (``[T]``).

    ``U`` ``[T, K]`` has rows summing to 1. Between 0 (one expert) and ``log K`` (uniform). With ``U``
    the task's mean gate this is the entropy of the *mean* gate, how spread the task's use of the
    experts is over the data; by concavity it is at least the mean per-example gate `entropy`, how
    soft each example's routing is (equal when every example is routed alike).
    """
    return entropy(_check_utilisation(U))


def effective_experts(U: Tensor) -> Tensor:
    """Effective number of experts of each task: ``exp(H_t)`` (the perplexity of its utilisation).

    Returns ``[T]``, between 1 (a single expert) and ``K`` (uniform use of the ``K`` experts).
    """
    return utilisation_entropy(U).exp()


def expert_load(U: Tensor) -> Tensor:
    """Per-expert load ``L_e = (1/T) Σ_t U[t, e]``, the unweighted mean over tasks (``[K]``, sums to 1)."""
    return _check_utilisation(U).mean(dim=0)


def dead_experts(U: Tensor, threshold: float = 0.1) -> Tensor:
    """Experts that (almost) no task uses: ``L_e < threshold / K``, with ``L_e = (1/T) Σ_t U[t, e]``.

    The total utilisation of an expert across tasks is taken as its load ``L_e`` (mean over tasks,
    so that the fair share is ``1/K`` whatever ``T``): with ``threshold = 0.1`` an expert is dead when
    it gets less than a tenth of its fair share. Returns a boolean mask ``[K]``.
    """
    load = expert_load(U)
    return load < threshold / load.shape[0]


def load_cv(U: Tensor) -> Tensor:
    """Coefficient of variation of the per-expert load: ``CV = std(L) / mean(L)``.

    ``L_e = (1/T) Σ_t U[t, e]``; ``std`` is the population standard deviation over the ``K`` experts
    and ``mean(L) = 1/K``. 0 for perfectly balanced experts, ``sqrt(K - 1)`` when one expert takes
    all the load. Returns a scalar tensor.
    """
    load = expert_load(U)
    return load.std(correction=0) / load.mean()


def task_expert_mutual_information(U: Tensor, task_weights: Tensor | Sequence[float] | None = None) -> Tensor:
    """Mutual information in nats between task and expert under ``P(t, e) = p(t) U[t, e]``.

    ``MI = Σ_{t,e} P(t, e) log(P(t, e) / (p(t) P(e)))`` with ``P(e) = Σ_t p(t) U[t, e]``, i.e.
    ``H(P(e)) - Σ_t p(t) H_t``. ``p(t)`` is ``task_weights`` normalised to sum to 1 (``None``:
    uniform). 0 when every task uses the experts alike; ``H(p)`` (``log T`` for uniform ``p``) when
    the tasks use disjoint experts. Returns a scalar tensor.
    """
    U = _check_utilisation(U)
    if task_weights is None:
        p = torch.full((U.shape[0],), 1.0 / U.shape[0], dtype=U.dtype)
    else:
        p = torch.as_tensor(task_weights, dtype=U.dtype, device=U.device)
        if p.shape != (U.shape[0],) or (p < 0).any() or p.sum() <= 0:
            raise ValueError(
                f"Expected `task_weights` to be {U.shape[0]} non-negative numbers with a positive sum, but got {p}."
            )
        p = p / p.sum()
    p = p.to(U.device)
    marginal = (p.unsqueeze(-1) * U).sum(dim=0)
    return entropy(marginal) - (p * entropy(U)).sum()


# ----------------------------------------------------------------------------------- activations
def nonpositive_share(activations: Tensor) -> Tensor:
    """Per unit and expert, the share of the ``O`` output activations that are ``<= 0``.

    ``activations`` ``[..., K, O]`` (post-activation, before dropout); returns float ``[..., K]``,
    detached. For ReLU experts these are exactly the zero outputs (``relu(z) = 0`` iff ``z <= 0``).
    For Swish experts, ``silu(z) = z·sigmoid(z) <= 0`` iff ``z <= 0`` as well: the share counts the
    outputs in Swish's negative half, small values in ``[-0.28, 0]``, the region a ReLU would zero;
    it is the share a ReLU expert with the same pre-activations would report.
    """
    return (activations.detach() <= 0).float().mean(dim=-1)


def zero_share(nonpositive: Tensor, valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per expert, the mean of ``nonpositive`` ``[..., K]`` over the valid units, and their number.

    Args:
        nonpositive: `nonpositive_share` of every unit (row, token or dispatch slot) and expert.
        valid: which units count: ``[...]`` (the same for every expert, e.g. real tokens) or
            ``[..., K]`` (per expert, e.g. the filled slots of a sparse dispatch); ``None``: all.

    Returns:
        ``(share [K], units [K])``: an expert without valid units has share 0 and weight 0, so that
        shares of several batches (or ranks) average exactly as ``Σ share·units / Σ units``.
    """
    num_experts = nonpositive.shape[-1]
    flat = nonpositive.float().reshape(-1, num_experts)
    if valid is None:
        units = torch.full((num_experts,), float(flat.shape[0]), device=flat.device)
        return flat.mean(dim=0) if flat.shape[0] else torch.zeros_like(units), units
    weight = valid.to(flat.dtype)
    if weight.dim() == nonpositive.dim() - 1:
        weight = weight.unsqueeze(-1)
    weight = weight.expand_as(nonpositive).reshape(-1, num_experts)
    units = weight.sum(dim=0)
    return (flat * weight).sum(dim=0) / units.clamp_min(1.0), units


def collapsed_experts(share: Tensor, threshold: float = 0.9) -> Tensor:
    """Experts whose share of non-positive (for ReLU: zero) activations exceeds ``threshold``.

    HoME reports ReLU experts with "over 90% zero activations" as collapsed, hence the default.
    ``NaN`` shares (experts that processed nothing) are never flagged. Returns a boolean mask ``[K]``.
    """
    return share > threshold
