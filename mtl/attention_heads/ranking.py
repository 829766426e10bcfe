"""Which heads to prune next: a global ranking of per-task importance scores.

Michel et al. (NeurIPS 2019, §4) prune heads in order of increasing importance across the whole model
(not layer by layer), with the scores of each layer normalised by their L2 norm; their public code can
also keep a minimum number of heads in every layer. A multi-task model has one score matrix per task,
so the ranking is either one task's (which heads can go without hurting *that* task, and what that
does to the others) or the mean over tasks, each task's matrix scaled to sum to 1 so that no task
dominates through the scale of its loss.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from mtl.attention_heads.importance import normalize_by_layer

__all__ = ["MEAN", "heads_to_prune", "ranking_scores"]

#: The ranking by the mean over tasks.
MEAN = "mean"


def ranking_scores(importance: Mapping[str, Tensor], by: str = MEAN, normalize: bool = True) -> Tensor:
    """The ``[layers, heads]`` scores heads are pruned by (lowest first).

    Args:
        importance: ``{task: I [layers, heads]}`` (`mtl.attention_heads.head_importance`).
        by: a task name, or ``"mean"`` for the mean over tasks of their sum-normalised scores.
        normalize: divide each layer's scores by their L2 norm first (the paper's choice).
    """
    if by != MEAN and by not in importance:
        raise ValueError(
            f"Expected `by` to be {MEAN!r} or one of the scored tasks {sorted(importance)}, but got {by!r}."
        )
    scores = {t: normalize_by_layer(m) if normalize else m for t, m in importance.items()}
    if by != MEAN:
        return scores[by]
    return torch.stack([m / m.sum().clamp_min(1e-20) for m in scores.values()]).mean(0)


def heads_to_prune(
    scores: Tensor, mask: Tensor, count: int, min_heads_per_layer: int = 0
) -> list[tuple[int, int]]:
    """The ``count`` lowest-scoring heads that are still on (``mask > 0``), as ``(layer, head)`` pairs.

    Ties go to the lower layer, then the lower head, so the order is deterministic. The
    ``min_heads_per_layer`` highest-scoring heads still on in each layer are never chosen, so fewer
    than ``count`` heads come back when too few may go.
    """
    if scores.shape != mask.shape or scores.dim() != 2:
        raise ValueError(
            f"Expected `scores` and `mask` of the same (layers, heads) shape, but got {tuple(scores.shape)} and "
            f"{tuple(mask.shape)}."
        )
    if count < 0 or min_heads_per_layer < 0:
        raise ValueError(
            f"Expected `count` and `min_heads_per_layer` to be >= 0, but got {count} and {min_heads_per_layer}."
        )
    scores = scores.detach().double().cpu()
    candidates: list[tuple[float, int, int]] = []
    for layer, (row, on) in enumerate(zip(scores.tolist(), (mask.detach().cpu() > 0).tolist(), strict=True)):
        alive = sorted((h for h in range(len(row)) if on[h]), key=lambda h: (-row[h], h))
        candidates += [(row[h], layer, h) for h in alive[min_heads_per_layer:]]
    candidates.sort()
    return [(layer, head) for _, layer, head in candidates[:count]]
