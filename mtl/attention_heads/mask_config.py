"""Head masks from config: a layers x heads 0/1 matrix, a list of ``[layer, head]`` pairs to prune, or both.

Two spellings because ablations need both: a matrix states the whole model at a glance, pairs are a
short overlay ("prune heads 3 and 7 of layer 0"). Both index layers and heads from 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["build_head_mask", "pruned_pairs"]


def _check_matrix(head_mask: Sequence[Sequence[float]], num_layers: int, num_heads: int) -> Tensor:
    shape = f"a {num_layers} x {num_heads} matrix (one row of {num_heads} values per layer)"
    if isinstance(head_mask, str | bytes) or not isinstance(head_mask, Sequence):
        raise ValueError(f"Expected `head_mask` to be {shape}, but got {head_mask!r}.")
    if len(head_mask) != num_layers:
        raise ValueError(
            f"Expected `head_mask` to be {shape}, but got {len(head_mask)} rows. The model has {num_layers} "
            f"layers of {num_heads} heads."
        )
    for layer, row in enumerate(head_mask):
        if isinstance(row, str | bytes) or not isinstance(row, Sequence) or len(row) != num_heads:
            raise ValueError(
                f"Expected `head_mask` to be {shape}, but row {layer} is {row!r}. The model has {num_layers} "
                f"layers of {num_heads} heads."
            )
        for head, value in enumerate(row):
            if isinstance(value, bool) or value not in (0, 1):
                raise ValueError(
                    f"Expected `head_mask` values to be 0 (head off) or 1 (head on), but got {value!r} at "
                    f"[{layer}][{head}]."
                )
    return torch.tensor([[float(v) for v in row] for row in head_mask])


def _check_pairs(
    pruned_heads: Sequence[Sequence[int]], num_layers: int, num_heads: int
) -> list[tuple[int, int]]:
    constraint = (
        f"a [layer, head] pair of integers with 0 <= layer < {num_layers} and 0 <= head < {num_heads}"
    )
    if isinstance(pruned_heads, str | bytes) or not isinstance(pruned_heads, Sequence):
        raise ValueError(
            f"Expected `pruned_heads` to be a list of [layer, head] pairs, but got {pruned_heads!r}."
        )
    pairs: list[tuple[int, int]] = []
    for entry in pruned_heads:
        ok = (
            isinstance(entry, Sequence)
            and not isinstance(entry, str | bytes)
            and len(entry) == 2
            and all(isinstance(i, int) and not isinstance(i, bool) for i in entry)
            and 0 <= entry[0] < num_layers
            and 0 <= entry[1] < num_heads
        )
        if not ok:
            raise ValueError(
                f"Expected every `pruned_heads` entry to be {constraint}, but got {entry!r}. Layers and heads "
                "count from 0."
            )
        pairs.append((int(entry[0]), int(entry[1])))
    return pairs


def build_head_mask(
    num_layers: int,
    num_heads: int,
    head_mask: Sequence[Sequence[float]] | None = None,
    pruned_heads: Sequence[Sequence[int]] | None = None,
) -> Tensor | None:
    """The ``[num_layers, num_heads]`` float mask (1 = head on) that the config asks for, or ``None``.

    A head is off when ``head_mask`` says 0 for it or ``pruned_heads`` names it; ``None`` when neither
    is given (every head on, and no masking hooks are needed).

    Raises:
        ValueError: a matrix of the wrong shape or with values other than 0 and 1, or a pair that is not
            two in-range integers.
    """
    if head_mask is None and pruned_heads is None:
        return None
    mask = torch.ones(num_layers, num_heads)
    if head_mask is not None:
        mask = _check_matrix(head_mask, num_layers, num_heads)
    for layer, head in _check_pairs(pruned_heads or [], num_layers, num_heads):
        mask[layer, head] = 0.0
    return mask


def pruned_pairs(mask: Tensor) -> list[list[int]]:
    """The ``[layer, head]`` pairs a 0/1 mask turns off: the `pruned_heads` config that rebuilds it."""
    return [[int(layer), int(head)] for layer, head in (mask == 0).nonzero().tolist()]
