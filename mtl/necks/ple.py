"""Progressive layered extraction (PLE): CGC levels stacked, with shared gates between them."""

from __future__ import annotations

from collections.abc import Sequence

from mtl.necks.cgc import CGC
from mtl.necks.experts import check_count

__all__ = ["PLE"]


class PLE(CGC):
    """Progressive layered extraction: ``num_levels`` CGC levels.

    Tang et al., "Progressive Layered Extraction (PLE): A Novel Multi-Task Learning (MTL) Model for
    Personalized Recommendations", RecSys 2020 (section 4.2). Level ``j`` has its own task-specific
    and shared experts. Task ``t``'s experts and gate at level ``j`` read ``g_{t,j-1}``, task ``t``'s
    gated output at level ``j-1``; the shared experts read ``g_{s,j-1}``, the output of a shared gate
    over *all* experts of level ``j-1`` (tasks' and shared). The shared gate exists between levels, not
    at the last level, whose task gates give the outputs. The first level reads the encoder's features.
    Every level's experts use the same ``expert_hidden``. With ``num_levels=1`` PLE is `CGC` (same
    parameters, same state_dict keys).

    Upper levels evaluate every task's branch on every row, since the shared gates mix every task's
    experts; only the last level is restricted to the routed tasks and rows. The gate stats are those of
    the last level's task gates; ``zero_share/level{j}`` is reported for every level (see `CGC`). No
    auxiliary loss.

    Hyper-parameters:
        num_levels: number of extraction levels (``>= 1``).
        num_shared_experts: shared experts per level (``>= 0``).
        num_task_experts: experts of each task per level (``>= 0``).
        expert_hidden: widths of each expert MLP's layers; the last is the output width of every level.
        dropout: dropout after each expert layer.
        route_tokens: also mix ``tokens`` per token when the encoder provides them.
    """

    def __init__(
        self,
        num_levels: int,
        num_shared_experts: int,
        num_task_experts: int,
        expert_hidden: Sequence[int],
        dropout: float = 0.0,
        route_tokens: bool = True,
    ) -> None:
        super().__init__(num_shared_experts, num_task_experts, expert_hidden, dropout, route_tokens)
        self.num_levels = check_count(num_levels, "num_levels", type(self).__name__)
