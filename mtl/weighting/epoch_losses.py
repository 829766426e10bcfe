"""Per-task epoch-mean training losses, kept in buffers and reduced over DDP ranks once per epoch."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["EpochLossMeans"]


class EpochLossMeans(nn.Module):
    """Sums and counts of every task's step losses over the current training epoch.

    DWA and STCH weight the tasks by *epoch-average* training losses. Adding a step's losses is two
    in-place additions on the losses' device (no host synchronisation); `close` reduces the sums
    and the counts over DDP ranks in a single call, returns the epoch means and starts a new epoch.
    Both live in buffers, so a checkpoint taken mid-epoch resumes with the partial sums. The
    counts are integers so that a module cast to half precision still counts steps exactly.

    Args:
        num_tasks: the number of tasks ``T``.
    """

    sums: Tensor
    counts: Tensor

    def __init__(self, num_tasks: int) -> None:
        super().__init__()
        self.register_buffer("sums", torch.zeros(num_tasks))
        self.register_buffer("counts", torch.zeros(num_tasks, dtype=torch.long))

    def add(self, losses: Tensor, tasks: Tensor | None = None) -> None:
        """Add the detached step ``losses`` [n] of the tasks ``tasks`` [n] (``None``: all tasks, in order)."""
        values = losses.detach().to(self.sums.dtype)
        if tasks is None:
            self.sums += values
            self.counts += 1
        else:
            index = tasks.to(self.sums.device)
            self.sums.index_add_(0, index, values)
            self.counts.index_add_(0, index, torch.ones_like(index))

    def close(self, reduce: Callable[[Tensor], Tensor]) -> Tensor:
        """The epoch means [T] over every rank's steps (NaN for a task no rank saw); starts a new epoch.

        ``reduce`` is a mean over ranks; the ratio of the mean sum to the mean count is the mean
        over all ranks' steps.
        """
        totals = reduce(torch.stack([self.sums, self.counts.to(self.sums.dtype)]))
        seen = totals[1] > 0
        means = torch.where(seen, totals[0] / torch.where(seen, totals[1], 1.0), float("nan"))
        self.reset()
        return means

    def reset(self) -> None:
        """Forget the current epoch's sums without reducing them."""
        self.sums.zero_()
        self.counts.zero_()
