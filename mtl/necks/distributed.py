"""Sums over the ranks of a data-parallel job, for statistics that must describe the global batch.

A loss that is a non-linear function of batch statistics (the Switch load-balancing loss
``N Σ f_i P_i``, a mutual information) differs between ``k`` ranks, each on its shard, and one rank
on the whole batch, even after DDP averages the gradients. Computing it from statistics summed over
the ranks makes every rank compute the global loss, so that ``k`` ranks train exactly as one.
"""

from __future__ import annotations

import torch.distributed as dist
from torch import Tensor

__all__ = ["global_sum", "world_size"]


def world_size() -> int:
    """The number of ranks of the default process group (1 outside a distributed run)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def global_sum(local: Tensor) -> Tensor:
    """``Σ_r local_r`` over the ranks; on a single process, ``local`` itself.

    The value is the sum over all ranks (one all-reduce, no host sync); the gradient reaches this
    rank's ``local`` only, scaled by the world size ``W``: DDP averages gradients over the ranks, so
    the averaged gradient of a loss of the sum is ``(1/W) Σ_r W ∂L/∂S · ∂local_r/∂θ``, the gradient of
    that loss on one rank holding the whole batch. Every rank must call it at the same point of its
    forward pass (it is a collective).
    """
    ranks = world_size()
    if ranks == 1:
        return local
    total = local.detach().clone()
    dist.all_reduce(total)
    # Value: `total` exactly (the difference is exactly 0); gradient: W · d(local).
    scaled = ranks * local
    return total + (scaled - scaled.detach())
