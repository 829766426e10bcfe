"""Attention-head ablation: head masks, per-task head importance and step-by-step pruning.

Michel, Levy & Neubig, "Are Sixteen Heads Really Better than One?", NeurIPS 2019. The pieces:

* `HeadMasker` (`masking`): multiplies each head's output by a mask variable, via hooks on the
  attention output projections (`layout`); `mtl.encoders.HuggingFaceEncoder` exposes it as
  ``head_mask`` / ``pruned_heads`` in configs (`build_head_mask`) and ``set_head_mask`` in code.
* `head_importance`: per task, ``E_x |∂L_task(x)/∂ξ_h|``, a layers x heads matrix.
* `prune_curve`: switch off the least important heads a share at a time and record each task's metric.
* ``mtl heads`` (`mtl.attention_heads.command`, not imported here): all of it for a checkpoint.
"""

from mtl.attention_heads.batches import task_batches
from mtl.attention_heads.evaluation import evaluate_tasks
from mtl.attention_heads.importance import batch_rows, head_importance, maskable_encoder, normalize_by_layer
from mtl.attention_heads.layout import SUPPORTED_LAYOUTS, AttentionLayout, attention_layout
from mtl.attention_heads.mask_config import build_head_mask, pruned_pairs
from mtl.attention_heads.masking import HeadMasker, MaskableEncoder, check_mask_shape, head_mask_applied
from mtl.attention_heads.pruning import PruningStep, prune_curve, pruning_schedule
from mtl.attention_heads.ranking import MEAN, heads_to_prune, ranking_scores

__all__ = [
    "MEAN",
    "SUPPORTED_LAYOUTS",
    "AttentionLayout",
    "HeadMasker",
    "MaskableEncoder",
    "PruningStep",
    "attention_layout",
    "batch_rows",
    "build_head_mask",
    "check_mask_shape",
    "evaluate_tasks",
    "head_importance",
    "head_mask_applied",
    "heads_to_prune",
    "maskable_encoder",
    "normalize_by_layer",
    "prune_curve",
    "pruned_pairs",
    "pruning_schedule",
    "ranking_scores",
    "task_batches",
]
