"""Head masking: scale each attention head's output by a mask variable ``ξ_h``.

Michel et al. (NeurIPS 2019) write multi-head attention as ``Σ_h ξ_h · Att_h(x)``, where ``Att_h`` is
head ``h``'s contribution after the output projection; since the projection is linear, scaling head
``h``'s slice of the context *before* the projection by ``ξ_h`` is the same thing. `HeadMasker` does that
with one forward pre-hook per layer (`mtl.attention_heads.layout`). The mask is an ordinary tensor, so
it can require gradients: ``∂L/∂ξ_h`` is what head importance is made of.

A mask is ``[layers, heads]`` (one value per head, the same for every example) or ``[batch, layers,
heads]`` (one per example: the gradient of a summed loss with respect to example ``b``'s row is
example ``b``'s own gradient, which gives per-example importance in one backward pass).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import partial
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn

from mtl.attention_heads.layout import AttentionLayout

__all__ = ["HeadMasker", "MaskableEncoder", "check_mask_shape", "head_mask_applied"]


def check_mask_shape(mask: Tensor, num_layers: int, num_heads: int) -> None:
    """Raise ``ValueError`` unless ``mask`` is ``[layers, heads]`` or ``[batch, layers, heads]``."""
    if mask.dim() not in (2, 3) or tuple(mask.shape[-2:]) != (num_layers, num_heads):
        raise ValueError(
            f"Expected a head mask of shape ({num_layers}, {num_heads}) or (batch, {num_layers}, {num_heads}) "
            f"(layers x heads, optionally per example), but got {tuple(mask.shape)}."
        )
    if not mask.is_floating_point():
        raise ValueError(
            f"Expected a floating-point head mask, but got dtype {mask.dtype}. Use `mask.float()`."
        )


class HeadMasker(nn.Module):
    """Multiplies head ``h`` of layer ``l``'s context slice by ``mask[..., l, h]``; no mask, no change.

    A module (without parameters) so that the mask, a non-persistent buffer, follows the encoder across
    devices and stays out of checkpoints (the config is where a mask is stated).

    Args:
        layout: the model's attention output projections (`mtl.attention_heads.attention_layout`).
    """

    def __init__(self, layout: AttentionLayout) -> None:
        super().__init__()
        self.num_layers = layout.num_layers
        self.num_heads = layout.num_heads
        self.head_dim = layout.head_dim
        self.register_buffer("mask", None, persistent=False)
        # The hooks hold this module, not the other way round: the projections stay plain Linears.
        for layer, projection in enumerate(layout.projections):
            projection.register_forward_pre_hook(partial(self._scale, layer))

    def set_mask(self, mask: Tensor | None) -> None:
        """Use ``mask`` from the next forward on (``None``: every head on, no work done)."""
        if mask is not None:
            check_mask_shape(mask, self.num_layers, self.num_heads)
        self.mask = mask

    def _scale(self, layer: int, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        mask: Tensor | None = self.mask
        if mask is None:
            return None
        context, *rest = args
        gate = mask[..., layer, :].to(dtype=context.dtype, device=context.device)
        if gate.dim() == 2:  # per example: [B, H] -> [B, 1, ..., H, 1] over the context's token axes
            gate = gate.reshape(gate.shape[0], *([1] * (context.dim() - 2)), self.num_heads, 1)
        else:
            gate = gate.unsqueeze(-1)
        heads = context.unflatten(-1, (self.num_heads, self.head_dim))
        return ((heads * gate).flatten(-2), *rest)

    def extra_repr(self) -> str:
        return f"layers={self.num_layers}, heads={self.num_heads}, head_dim={self.head_dim}"


@runtime_checkable
class MaskableEncoder(Protocol):
    """An encoder whose attention heads can be masked (`mtl.encoders.HuggingFaceEncoder`)."""

    @property
    def attention_shape(self) -> tuple[int, int]:
        """``(layers, heads per layer)``."""
        ...

    @property
    def head_mask(self) -> Tensor | None:
        """The mask in use, or ``None`` (every head on)."""
        ...

    def set_head_mask(self, mask: Tensor | None) -> None:
        """Use ``mask`` (``[layers, heads]`` or ``[batch, layers, heads]``) from the next forward on."""
        ...


@contextlib.contextmanager
def head_mask_applied(encoder: MaskableEncoder, mask: Tensor | None) -> Iterator[None]:
    """Use ``mask`` inside the block, then restore the encoder's own mask (e.g. the configured one)."""
    previous = encoder.head_mask
    encoder.set_head_mask(mask)
    try:
        yield
    finally:
        encoder.set_head_mask(previous)
