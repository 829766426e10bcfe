"""Per-task gradients of the shared parameters: computed in one batched pass, written back as one
direction.

`task_gradients` builds the matrix ``G`` [T, D] that every `GradientAggregator` takes: row ``t`` is
the gradient of task ``t``'s loss with respect to the shared parameters. It asks autograd for all
``T`` rows in one vectorised backward pass (``is_grads_batched=True``: a vmap over the identity as
``grad_outputs``) and falls back to ``T`` separate passes where an operator has no batching rule.
The batched pass also avoids LibMTL's per-task ``backward`` plus host copies.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["flat_gradients", "representation_gradients", "task_gradients", "write_gradients"]

log = logging.getLogger(__name__)


def _flatten(grads: Sequence[Tensor | None], params: Sequence[nn.Parameter], rows: int) -> Tensor:
    parts = [
        (g if g is not None else p.new_zeros((rows, *p.shape))).reshape(rows, -1)
        for g, p in zip(grads, params, strict=True)
    ]
    return torch.cat(parts, dim=1)


def task_gradients(losses: Tensor, params: Sequence[nn.Parameter], batched: bool = True) -> Tensor:
    """``G`` [T, D]: the flattened gradient of each of the ``T`` ``losses`` w.r.t. ``params``.

    Args:
        losses: ``[T]`` per-task losses, all from one graph.
        params: the shared parameters (``D`` = their total size); unused ones give zero columns.
        batched: try the single vectorised backward pass first (exact same result as the loop).
    """
    rows = losses.shape[0]
    if batched:
        eye = torch.eye(rows, device=losses.device, dtype=losses.dtype)
        try:
            grads = torch.autograd.grad(
                losses, params, grad_outputs=eye, is_grads_batched=True, retain_graph=True, allow_unused=True
            )
            return _flatten(grads, params, rows)
        except RuntimeError as err:  # an operator without a vmap rule: take the per-task loop
            log.info("Batched per-task gradients unavailable (%s); using %d backward passes.", err, rows)
    per_task = [
        _flatten(torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True), params, 1)
        for loss in losses
    ]
    return torch.cat(per_task, dim=0)


def flat_gradients(loss: Tensor, params: Sequence[nn.Parameter]) -> Tensor:
    """The flattened gradient [D] of one scalar ``loss`` w.r.t. ``params`` (zeros where unused)."""
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return _flatten([g if g is None else g.unsqueeze(0) for g in grads], params, 1)[0]


def write_gradients(params: Sequence[nn.Parameter], flat: Tensor) -> None:
    """Set each parameter's ``.grad`` from its slice of the flat vector ``flat`` [D]."""
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).to(p.dtype).clone()
        offset += n
    if offset != flat.numel():
        raise ValueError(f"Expected a gradient vector of {offset} entries, but got {flat.numel()}.")


def representation_gradients(G: Tensor, strategy: Any) -> tuple[Tensor, slice]:
    """The per-task gradients w.r.t. the representation of the whole global batch, and this rank's columns.

    ``G`` [T, D_r] holds this rank's gradients w.r.t. its own rows' representation. Unlike parameter
    gradients they cannot be averaged across ranks (each rank's columns belong to different examples):
    they are gathered side by side into ``[T, sum_r D_r]`` (ranks may hold different numbers of
    tokens, hence a gather of the sizes and padding), divided by the number of ranks (each rank's loss
    is a mean over its own rows, and the global loss is the mean of the ranks'), so that every rank
    aggregates the same matrix. Returns that matrix and the slice of its columns that are this rank's.
    """
    world = int(getattr(strategy, "world_size", 1))
    if world == 1:
        return G, slice(0, G.shape[1])
    size = torch.tensor([G.shape[1]], device=G.device)
    sizes = [int(s) for s in strategy.all_gather(size).flatten().tolist()]
    padded = torch.nn.functional.pad(G, (0, max(sizes) - G.shape[1]))
    gathered = strategy.all_gather(padded.contiguous())  # [world, T, max D]
    full = torch.cat([gathered[r, :, : sizes[r]] for r in range(world)], dim=1) / world
    start = sum(sizes[: strategy.global_rank])
    return full, slice(start, start + G.shape[1])
