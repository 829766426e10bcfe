"""Step-by-step head pruning without retraining, recording every task's metric after each step.

The experiment of Michel et al. (NeurIPS 2019, §4, Figure 3): remove the least important heads a
share at a time (the paper: 10 % of all heads per step), evaluate, repeat. Importance is either
computed once on the unpruned model (the paper's default) or recomputed at the current mask before
every step (their code's ``--exact_pruning``). In a multi-task model the curve of each task shows
which heads it needs: under a ranking by one task's importance, the other tasks' curves show what
that task can spare that they cannot.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from mtl.attention_heads.importance import maskable_encoder
from mtl.attention_heads.masking import head_mask_applied
from mtl.attention_heads.ranking import MEAN, heads_to_prune, ranking_scores

if TYPE_CHECKING:
    from mtl.module import MultiTaskModule

__all__ = ["PruningStep", "prune_curve", "pruning_schedule"]


@dataclass(frozen=True)
class PruningStep:
    """One point of a pruning curve.

    Attributes:
        step: 0 for the model as given, then 1, 2, ...
        num_pruned: heads off after this step (including any the config had switched off).
        share_pruned: ``num_pruned`` over all heads of the model.
        newly_pruned: the ``(layer, head)`` pairs switched off at this step, least important first.
        metrics: ``{task: primary validation metric}`` with these heads off.
    """

    step: int
    num_pruned: int
    share_pruned: float
    newly_pruned: tuple[tuple[int, int], ...]
    metrics: dict[str, float]


def pruning_schedule(total_heads: int, steps: int, per_step: float | int | None = None) -> list[int]:
    """Cumulative numbers of heads pruned: ``[0, n_1, n_2, ...]``, increasing, at most ``total_heads``.

    Args:
        total_heads: heads in the model.
        steps: number of pruning steps.
        per_step: heads per step, as a fraction of all heads (a float in (0, 1]) or a count (an int >= 1);
            default ``1 / steps`` (the last step prunes every head).
    """
    if total_heads < 1 or steps < 1:
        raise ValueError(
            f"Expected `total_heads` and `steps` to be at least 1, but got {total_heads} and {steps}."
        )
    per_step = 1.0 / steps if per_step is None else per_step
    if isinstance(per_step, bool) or not (
        (isinstance(per_step, int) and per_step >= 1) or (isinstance(per_step, float) and 0 < per_step <= 1)
    ):
        raise ValueError(
            f"Expected `per_step` to be a fraction of all heads in (0, 1] or a count >= 1, but got {per_step!r}. "
            "E.g. 0.1 prunes 10 % of the heads per step, 4 prunes 4 heads per step."
        )
    counts = [0]
    for k in range(1, steps + 1):
        target = k * per_step if isinstance(per_step, int) else round(k * per_step * total_heads)
        target = min(target, total_heads)
        if target > counts[-1]:
            counts.append(target)
        if target == total_heads:
            break
    return counts


def prune_curve(
    model: MultiTaskModule,
    importance: Callable[[], Mapping[str, Tensor]],
    evaluate: Callable[[], dict[str, float]],
    schedule: list[int],
    *,
    by: str = MEAN,
    normalize: bool = True,
    recompute: bool = False,
    min_heads_per_layer: int = 0,
) -> list[PruningStep]:
    """Prune heads along ``schedule`` and evaluate after each step; the encoder's mask is restored after.

    Args:
        model: the model; its encoder's current mask is the starting point.
        importance: ``{task: I [layers, heads]}`` at the encoder's current mask (e.g. a closure over
            `mtl.attention_heads.head_importance` and fixed batches).
        evaluate: ``{task: metric}`` of the model as it is (e.g. `mtl.attention_heads.evaluate_tasks` on
            the validation batches).
        schedule: cumulative head counts, `pruning_schedule`.
        by: rank by this task's importance, or ``"mean"`` over tasks (`ranking_scores`).
        normalize: normalise each layer's scores by their L2 norm before ranking.
        recompute: recompute importance at the current mask before every step (else once, up front).
        min_heads_per_layer: never prune the last this-many heads of a layer.
    """
    encoder = maskable_encoder(model)
    layers, heads = encoder.attention_shape
    total = layers * heads
    current = encoder.head_mask
    if current is not None and current.dim() != 2:
        raise ValueError(
            f"Expected the encoder's head mask to be (layers, heads) = ({layers}, {heads}) when pruning starts, "
            f"but got {tuple(current.shape)}. Set a per-head mask, or none."
        )
    like = next(model.parameters())
    mask = (
        torch.ones(layers, heads, dtype=like.dtype, device=like.device)
        if current is None
        else current.detach().clone()
    )
    scores: Tensor | None = None
    curve: list[PruningStep] = []
    with head_mask_applied(encoder, mask.clone()):
        for step, target in enumerate(schedule):
            new: list[tuple[int, int]] = []
            if step > 0:
                wanted = target - int((mask == 0).sum())
                if wanted <= 0:
                    continue
                prunable = int(((mask > 0).sum(1) - min_heads_per_layer).clamp_min(0).sum())
                if prunable == 0:
                    break  # every remaining head is protected by `min_heads_per_layer`
                if scores is None or recompute:
                    scores = ranking_scores(importance(), by=by, normalize=normalize)
                new = heads_to_prune(scores, mask, wanted, min_heads_per_layer)
                for layer, head in new:
                    mask[layer, head] = 0.0
                encoder.set_head_mask(mask.clone())
            pruned = int((mask == 0).sum())
            curve.append(PruningStep(step, pruned, pruned / total, tuple(new), evaluate()))
    return curve
