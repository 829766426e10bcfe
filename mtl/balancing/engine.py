"""Per-task gradients of the shared parameters, written back as one direction.

`task_gradients` builds the matrix ``G`` [T, D] that every `GradientAggregator` takes: row ``t`` is
the gradient of task ``t``'s loss with respect to the shared parameters. Two engines give the same
matrix:

* ``batched``: all ``T`` rows in one vectorised backward pass (``is_grads_batched=True``: a vmap over
  the rows of the identity as ``grad_outputs``), one launch per operator instead of ``T``: the fast
  engine on a GPU. It falls back to the loop where an operator has no batching rule.
* ``loop``: ``T`` backward passes, one per task, each from that task's own loss (a separate scalar,
  so a pass visits only its own head, not the other ``T - 1`` heads with zero gradients). On a CPU,
  which gains nothing from batching ``T`` launches, the vmapped pass does the same arithmetic plus
  the ``T``-fold materialisation of every gradient it carries (with task-tagged examples, mostly
  zeros: task ``t``'s loss touches only its own rows), and measures slower
  (``benchmarks/results/balancing-cpu-census.md``).

``engine="auto"`` takes the batched pass on accelerators and the loop on CPU. Neither makes LibMTL's
host copies of every gradient.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

__all__ = [
    "ENGINES",
    "Engine",
    "flat_gradients",
    "representation_gradients",
    "resolve_engine",
    "task_gradients",
    "write_gradients",
]

log = logging.getLogger(__name__)


def _flatten(grads: Sequence[Tensor | None], params: Sequence[nn.Parameter], rows: int) -> Tensor:
    parts = [
        (g if g is not None else p.new_zeros((rows, *p.shape))).reshape(rows, -1)
        for g, p in zip(grads, params, strict=True)
    ]
    return torch.cat(parts, dim=1)


Engine = Literal["auto", "batched", "loop"]
ENGINES: tuple[str, ...] = ("auto", "batched", "loop")


def resolve_engine(engine: str, device: torch.device) -> str:
    """``batched`` or ``loop`` for ``engine`` on ``device`` (``auto``: batched off the CPU)."""
    if engine not in ENGINES:
        raise ValueError(f"Expected the gradient engine to be one of {list(ENGINES)}, but got {engine!r}.")
    if engine == "auto":
        return "loop" if device.type == "cpu" else "batched"
    return engine


def task_gradients(
    losses: Tensor | Sequence[Tensor],
    params: Sequence[nn.Parameter],
    engine: Engine = "auto",
    out: Tensor | None = None,
) -> Tensor:
    """``G`` [T, D]: the flattened gradient of each of the ``T`` ``losses`` w.r.t. ``params``.

    Args:
        losses: the ``T`` per-task losses, all from one graph: a sequence of scalars (preferred: the
            loop then differentiates each task's own graph) or a ``[T]`` tensor.
        params: the shared parameters (``D`` = their total size); unused ones give zero columns.
        engine: ``batched`` (one vectorised pass), ``loop`` (``T`` passes) or ``auto`` (batched
            unless the losses are on the CPU); both give the same matrix.
        out: a ``[T, D]`` tensor (of the losses' dtype and device) the loop writes ``G`` into, e.g.
            the previous step's ``G``: a fresh ``G`` of a large model costs more than filling it on
            the CPU, where every step would map and first-touch the pages of a new block (about 1 s
            for the 908 MB of MiniLM at T = 10 in `benchmarks/balancing.py`'s setting). Ignored when
            its shape, dtype or device differ, and by the batched engine.
    """
    parts = list(losses.unbind()) if isinstance(losses, Tensor) else list(losses)
    rows = len(parts)
    if rows == 0:
        raise ValueError("Expected at least one task loss, but got none.")
    if resolve_engine(engine, parts[0].device) == "batched":
        eye = torch.eye(rows, device=parts[0].device, dtype=parts[0].dtype)
        outputs, grad_outputs = (losses, eye) if isinstance(losses, Tensor) else (parts, list(eye.unbind(1)))
        try:
            grads = torch.autograd.grad(
                outputs,
                params,
                grad_outputs=grad_outputs,
                is_grads_batched=True,
                retain_graph=True,
                allow_unused=True,
            )
            return _flatten(grads, params, rows)
        except RuntimeError as err:  # an operator without a vmap rule: take the per-task loop
            log.info("Batched per-task gradients unavailable (%s); using %d backward passes.", err, rows)
    # Each task's gradients are copied straight into its row: one copy, no concatenation per row.
    shape = (rows, sum(p.numel() for p in params))
    fits = (
        out is not None
        and out.shape == shape
        and out.dtype == parts[0].dtype
        and out.device == parts[0].device
    )
    G = out if fits else parts[0].new_empty(shape)
    for t, loss in enumerate(parts):
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        offset = 0
        for g, p in zip(grads, params, strict=True):
            block = G[t, offset : offset + p.numel()]
            if g is None:
                block.zero_()
            else:
                block.copy_(g.reshape(-1))
            offset += p.numel()
    return G


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
