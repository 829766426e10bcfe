"""GradDrop: gradient sign dropout (Chen et al., NeurIPS 2020)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from mtl.balancing.aggregator import GradientAggregator

__all__ = ["GradDrop", "graddrop_masks", "sign_purity"]


def sign_purity(G: Tensor) -> Tensor:
    """The positive sign purity ``P = (1 + sum_i g_i / sum_i |g_i|) / 2`` per coordinate, in [0, 1].

    Coordinates where every gradient is zero get ``P = 1/2`` (they are zero whatever the mask).
    """
    total = G.sum(dim=0)
    magnitude = G.abs().sum(dim=0)
    ratio = torch.where(magnitude > 0, total / torch.where(magnitude > 0, magnitude, 1.0), 0.0)
    return 0.5 * (1.0 + ratio)


def graddrop_masks(G: Tensor, uniform: Tensor) -> Tensor:
    """The keep-masks ``M_i = [U < P][g_i > 0] + [U >= P][g_i < 0]`` for a sample ``uniform`` ~ U[0, 1).

    With ``P`` the `sign_purity`: one sign is kept per coordinate, positive with probability ``P``.
    (The paper writes ``[P > U]`` and ``[P < U]``; the tie ``U = P`` has probability zero, and this
    choice keeps every gradient when all of them share a sign, whatever ``U`` in [0, 1).)
    """
    keep_positive = (uniform < sign_purity(G)).unsqueeze(0)
    return (keep_positive & (G > 0)) | (~keep_positive & (G < 0))


class GradDrop(GradientAggregator):
    """GradDrop (Chen et al., "Just Pick a Sign: Optimizing Deep Multitask Models with Gradient Sign
    Dropout", NeurIPS 2020).

    Per coordinate, computes the positive sign purity ``P`` of the task gradients, draws ``U`` ~ U[0, 1)
    from this aggregator's own generator, keeps the positive components if ``U < P`` and the negative
    ones otherwise (`graddrop_masks`), and combines ``leak_i g_i + (1 - leak_i) M_i g_i``. The paper
    applies it to the gradients at a shared activation layer (optionally multiplied by the sign of the
    layer input); here it acts on the coordinates of ``G``, whatever they are. Stochastic: seeded by
    ``seed``; `reset` re-seeds.

    Scale: ``reduction="mean"`` (default) averages the masked gradients (``T`` identical gradients, or
    any gradients whose signs agree coordinate-wise, give their mean unchanged); the paper sums them
    (``reduction="sum"``).

    Args:
        leak: leak parameter ``l`` in [0, 1], one for all tasks or one per task (paper's default:
            0, pure GradDrop; 1 recovers the plain mean/sum).
        reduction: ``"mean"`` or ``"sum"`` of the masked gradients.
        seed: seed of the generator.
    """

    weighted = False  # per-coordinate masks, not per-task weights
    representation = True  # the paper's GradDrop layer acts on the gradients at a shared activation

    def __init__(
        self, leak: float | Sequence[float] = 0.0, reduction: Literal["mean", "sum"] = "mean", seed: int = 0
    ) -> None:
        super().__init__()
        leaks = [leak] if isinstance(leak, int | float) else list(leak)
        if not all(0.0 <= value <= 1.0 for value in leaks):
            raise ValueError(f"Expected `leak` to be in [0, 1], but got {leak!r}.")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"Expected `reduction` to be 'mean' or 'sum', but got {reduction!r}.")
        self.leak = leak
        self.reduction = reduction
        self.seed = seed
        self._generator: torch.Generator | None = None

    def reset(self) -> None:
        super().reset()
        self._generator = None

    def _uniform(self, G: Tensor) -> Tensor:
        if self._generator is None or self._generator.device != G.device:
            self._generator = torch.Generator(device=G.device).manual_seed(self.seed)
        return torch.rand(G.shape[1], generator=self._generator, device=G.device, dtype=G.dtype)

    def _aggregate(self, G: Tensor, losses: Tensor | None) -> Tensor:
        T = G.shape[0]
        leak = torch.as_tensor(self.leak, dtype=G.dtype, device=G.device).reshape(-1)
        if leak.shape[0] not in (1, T):
            raise ValueError(
                f"Expected `leak` to have 1 or {T} values (one per task), but got {leak.shape[0]}."
            )
        leak = leak.expand(T)
        # The masked sum in closed form: a kept coordinate is a task's positive part where the positive
        # sign wins and its negative part elsewhere, so sum_i (1 - l_i) M_i g_i needs only the weighted
        # sums of the positive and of the negative parts. Two products with a [2, T] matrix replace the
        # T x D masks (same value as `graddrop_masks`, a fraction of the memory traffic).
        weights = torch.stack([torch.ones_like(leak), 1.0 - leak])
        positive = weights @ G.clamp_min(0.0)  # [2, D]: plain and (1 - l)-weighted sums
        negative = weights @ G - positive  # g = max(g, 0) + min(g, 0): no second T x D temporary
        magnitude = positive[0] - negative[0]
        ratio = torch.where(magnitude > 0, (positive[0] + negative[0]) / magnitude.clamp_min(1e-38), 0.0)
        keep_positive = self._uniform(G) < 0.5 * (1.0 + ratio)
        out = torch.where(keep_positive, positive[1], negative[1])
        if bool((leak > 0).any()):
            out = out + leak @ G
        return out / T if self.reduction == "mean" else out
