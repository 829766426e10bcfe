"""Per-task attention-head importance: the expected absolute gradient of the task loss w.r.t. a head mask.

Michel, Levy & Neubig, "Are Sixteen Heads Really Better than One?", NeurIPS 2019, §4.1: with every
head's output multiplied by a mask variable ``ξ_h``, the importance of head ``h`` is

    I_h = E_{x ~ X} | ∂L(x) / ∂ξ_h |        evaluated at the current mask (ξ = 1 for an unpruned model),

a first-order (Taylor) estimate of how much the loss changes when the head is removed (Molchanov et al.,
ICLR 2017). The paper ranks heads after normalising the scores of each layer by their L2 norm
(`normalize_by_layer`). Here ``L`` is one task's loss, so every task gets its own layers x heads matrix.

Per example, exactly and in one backward pass: the mask gets a row per example (``[B, layers, heads]``),
and since examples do not interact inside the encoder, the gradient of the batch loss with respect to
row ``b`` is example ``b``'s own gradient scaled by its weight in the batch loss (``1/n`` for a mean over
``n`` labelled examples). For a loss that is a plain mean over examples this gives the paper's
expectation exactly; a weighted mean (class weights) weights each example as the loss does. With
``per_example=False`` the absolute value is taken of each batch's gradient instead (cheaper in memory,
and the estimate of public re-implementations; a lower bound of the per-example one), for models in
which examples do interact (e.g. capacity-limited expert routing in a neck).

Runs in one process, in eval mode (no dropout); under several processes, sum ``total`` and ``count``
across ranks before dividing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch.utilities import move_data_to_device
from torch import Tensor, nn

from mtl.attention_heads.masking import MaskableEncoder, head_mask_applied

if TYPE_CHECKING:
    from mtl.module import MultiTaskModule

__all__ = ["batch_rows", "head_importance", "maskable_encoder", "normalize_by_layer"]


def maskable_encoder(model: nn.Module) -> MaskableEncoder:
    """The model's encoder, checked to have maskable attention heads."""
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, MaskableEncoder):
        raise TypeError(
            "Expected the model's encoder to have maskable attention heads (a transformer such as "
            f"`mtl.encoders.HuggingFaceEncoder`), but got {type(encoder).__name__}. Head importance and "
            "pruning need a transformer encoder."
        )
    return encoder


def batch_rows(inputs: Tensor | Mapping[str, Any]) -> int:
    """Number of rows of a batch's ``inputs`` (a tensor, or a dict of tensors)."""
    if isinstance(inputs, Tensor):
        return int(inputs.shape[0])
    return int(next(v for v in inputs.values() if isinstance(v, Tensor)).shape[0])


def normalize_by_layer(importance: Tensor, eps: float = 1e-20) -> Tensor:
    """Each layer's scores divided by their L2 norm (Michel et al., 2019); an all-zero layer stays zero."""
    norms = importance.norm(dim=-1, keepdim=True)
    return importance / norms.clamp_min(eps)


def _base_mask(encoder: MaskableEncoder, like: Tensor) -> Tensor:
    layers, heads = encoder.attention_shape
    current = encoder.head_mask
    if current is None:
        return torch.ones(layers, heads, dtype=like.dtype, device=like.device)
    if current.dim() != 2:
        raise ValueError(
            f"Expected the encoder's own head mask to be (layers, heads) = ({layers}, {heads}), but got "
            f"{tuple(current.shape)}: importance is taken at one mask for every example."
        )
    return current.detach().to(dtype=like.dtype, device=like.device)


def head_importance(
    model: MultiTaskModule,
    batches: Iterable[Mapping[str, Any]],
    tasks: Sequence[str] | None = None,
    *,
    per_example: bool = True,
) -> dict[str, Tensor]:
    """``{task: I [layers, heads]}``, ``I_h`` averaged over every labelled example of the batches.

    The derivative is taken at the encoder's current head mask (all ones unless heads are pruned). The
    model's parameters get no gradients (only the mask is differentiated) and its training mode is
    restored afterwards.

    Args:
        model: a `mtl.module.MultiTaskModule` (anything with ``encoder`` and ``task_losses(batch)``) whose
            encoder has maskable heads.
        batches: `mtl.data.collate` batches; a batch counts for each task it has labels of.
        tasks: the tasks to score (default: the model's tasks).
        per_example: the paper's per-example expectation (default); ``False``: absolute batch gradients.

    Raises:
        ValueError: a task has no labelled example in ``batches``.
    """
    encoder = maskable_encoder(model)
    tasks = list(model.heads) if tasks is None else list(tasks)
    like = next(model.parameters())
    base = _base_mask(encoder, like)
    totals = {t: torch.zeros_like(base, dtype=torch.float64) for t in tasks}
    counts = dict.fromkeys(tasks, 0)
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            batch = move_data_to_device(batch, like.device)
            present = [t for t in tasks if t in batch["targets"]]
            if not present:
                continue
            rows = batch_rows(batch["inputs"])
            xi = (base.expand(rows, *base.shape) if per_example else base).clone().requires_grad_(True)
            # The backward stays inside the block: gradient checkpointing re-runs the forward (and the
            # masking hooks) during backward, which must see the same mask.
            with head_mask_applied(encoder, xi):
                losses = model.task_losses(batch).losses
                for i, task in enumerate(present):
                    (grad,) = torch.autograd.grad(losses[task], xi, retain_graph=i < len(present) - 1)
                    n = len(batch["targets"][task])
                    # Per example: n * |g_b| is |∂L(x_b)/∂ξ| for a mean loss, summed over rows b; rows
                    # without this task's label have a zero gradient and add nothing.
                    scores = grad.abs().sum(0) if per_example else grad.abs()
                    totals[task] += n * scores.double()
                    counts[task] += n
    finally:
        model.train(was_training)
    empty = [t for t in tasks if counts[t] == 0]
    if empty:
        raise ValueError(
            f"Expected the batches to hold labelled examples of every scored task, but got none of {empty}. "
            "Pass batches of these tasks (or leave them out of `tasks`)."
        )
    return {t: (totals[t] / counts[t]).to(like.dtype) for t in tasks}
