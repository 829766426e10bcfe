"""Building blocks of HoME (`mtl.necks.home`): normalised Swish experts and low-rank feature gates.

Wang et al., "HoME: Hierarchy of Multi-Gate Experts for Multi-Task Learning at Kuaishou", KDD 2025
(arXiv:2408.05430). Both blocks hold ``K`` experts stacked on a leading expert axis, so that every
layer is one ``einsum`` over all experts, as in `StackedExperts`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtl.necks.diagnostics import nonpositive_share
from mtl.necks.experts import check_count, check_dropout, check_expert_hidden, expert_layer, stacked_weights

__all__ = ["ExpertNorm", "FeatureGate", "NormKind", "SwishExperts"]

NormKind = Literal["batch", "layer"]


class ExpertNorm(nn.Module):
    """Normalises ``[..., K, O]`` expert outputs separately for every expert.

    * ``"batch"`` (HoME's choice): batch normalisation with statistics per (expert, feature) over
      every leading position (rows, and tokens on token inputs), running statistics in eval mode, and
      a learnt scale and shift per (expert, feature). Training needs more than one position.
    * ``"layer"``: layer normalisation over each expert's ``O`` features, with a learnt scale and shift
      per (expert, feature); independent of the batch, for tiny batches or padded tokens.
    """

    def __init__(self, kind: NormKind, num_experts: int, features: int) -> None:
        super().__init__()
        if kind not in ("batch", "layer"):
            raise ValueError(f"Expected `expert_norm` to be 'batch' or 'layer', but got {kind!r}.")
        self.kind, self.num_experts, self.features = kind, num_experts, features
        if kind == "batch":
            self.norm = nn.BatchNorm1d(num_experts * features)
        else:
            self.weight = nn.Parameter(torch.ones(num_experts, features))
            self.bias = nn.Parameter(torch.zeros(num_experts, features))

    def forward(self, h: Tensor) -> Tensor:
        if self.kind == "batch":
            flat = h.reshape(-1, self.num_experts * self.features)
            return self.norm(flat).reshape(h.shape)
        return F.layer_norm(h, (self.features,)) * self.weight + self.bias

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, num_experts={self.num_experts}, features={self.features}"


class SwishExperts(nn.Module):
    """``K`` expert MLPs whose layers are ``Linear -> Norm -> Swish -> Dropout`` (HoME's experts).

    HoME replaces the ReLU experts of MMoE by normalised Swish experts: normalising each expert's
    output puts all experts on a comparable scale (so the softmax gates compare like with like), and
    Swish (``SiLU``, ``x·sigmoid(x)``) does not zero out the negative half as ReLU does. The
    normalisation (with its learnt shift) follows every layer, so the linear maps carry no bias.

    Args:
        num_experts: ``K``.
        in_features: input width.
        hidden: widths of each expert's layers; the last is the output width.
        dropout: dropout after each layer's activation.
        norm: ``"batch"`` or ``"layer"`` (see `ExpertNorm`).
    """

    def __init__(
        self,
        num_experts: int,
        in_features: int,
        hidden: Sequence[int],
        dropout: float = 0.0,
        norm: NormKind = "batch",
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        self.num_experts = check_count(num_experts, "num_experts", owner)
        self.in_features = check_count(in_features, "in_features", owner)
        self.hidden = check_expert_hidden(hidden, owner)
        self.weights = stacked_weights(num_experts, [in_features, *self.hidden])
        self.norms = nn.ModuleList(ExpertNorm(norm, num_experts, o) for o in self.hidden)
        self.dropout = nn.Dropout(check_dropout(dropout, owner)) if dropout > 0 else nn.Identity()

    @property
    def out_features(self) -> int:
        return self.hidden[-1]

    def forward(
        self, x: Tensor, per_expert: bool = False, activity: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """``[..., K, out]`` from ``x``: ``[..., in]`` read by every expert or, with ``per_expert``,
        ``[..., K, in]``, one input per expert. With ``activity``, also `nonpositive_share`
        ``[..., K]`` of the last layer's Swish outputs (before dropout): the share in Swish's negative
        half, where a ReLU expert would output zero."""
        h = x
        last = len(self.weights) - 1
        nonpositive = None
        for layer, (weight, norm) in enumerate(zip(self.weights, self.norms, strict=True)):
            h = F.silu(norm(expert_layer(h, weight, layer == 0 and not per_expert)))
            if activity and layer == last:
                nonpositive = nonpositive_share(h)
            h = self.dropout(h)
        return h if nonpositive is None else (h, nonpositive)

    def extra_repr(self) -> str:
        return f"num_experts={self.num_experts}, in_features={self.in_features}, hidden={self.hidden}"


class FeatureGate(nn.Module):
    """One private input per expert: ``x_k = x ⊙ 2·sigmoid(x B_k A_k)`` (HoME's feature gate).

    ``B_k``: ``[H, r]`` and ``A_k``: ``[r, H]`` are a LoRA-style low-rank factorisation of a full
    ``[H, H]`` gate, which keeps the gates cheap for wide inputs. The factor ``2`` centres the gate on
    ``1``: its values lie in ``(0, 2)``, so a feature can be damped or amplified. ``A_k`` starts at
    zero (as LoRA's up-projection does), so every gate is exactly the identity at initialisation and
    the experts start from the plain input.

    Args:
        num_experts: ``K``, one gate per expert.
        in_features: ``H``.
        rank: ``r``.
    """

    def __init__(self, num_experts: int, in_features: int, rank: int) -> None:
        super().__init__()
        self.num_experts, self.in_features, self.rank = num_experts, in_features, rank
        self.down = nn.Parameter(torch.empty(num_experts, in_features, rank))
        self.up = nn.Parameter(torch.zeros(num_experts, rank, in_features))
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.down, -bound, bound)

    def gates(self, x: Tensor) -> Tensor:
        """``2·sigmoid(x B_k A_k)``, ``[..., K, H]``, in ``(0, 2)``."""
        low = torch.einsum("...i,kir->...kr", x, self.down)
        return 2.0 * torch.sigmoid(torch.einsum("...kr,kri->...ki", low, self.up))

    def forward(self, x: Tensor) -> Tensor:
        """``[..., K, H]``: the input ``[..., H]`` as seen by each expert."""
        return x.unsqueeze(-2) * self.gates(x)

    def extra_repr(self) -> str:
        return f"num_experts={self.num_experts}, in_features={self.in_features}, rank={self.rank}"
