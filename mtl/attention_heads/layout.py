"""Where a Hugging Face transformer keeps each layer's attention output projection.

Masking a head means scaling its slice of the attention context (the concatenation of every head's
attention-weighted values, ``[B, L, heads x head_dim]``, head-major) before the output projection
mixes the heads. That input is exactly what the projection ``nn.Linear`` receives, so one forward
pre-hook per layer can mask heads without touching the model's code; this file finds those layers.

transformers 5 removed the ``head_mask`` argument from model forwards, which is why masking goes
through the projection rather than through the model's own API.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

__all__ = ["SUPPORTED_LAYOUTS", "AttentionLayout", "attention_layout"]

#: (path of the layer list, path of the attention output projection inside a layer, models using it).
SUPPORTED_LAYOUTS: tuple[tuple[str, str, str], ...] = (
    ("encoder.layer", "attention.output.dense", "BERT, MiniLM, RoBERTa, XLM-R, ELECTRA, DeBERTa-v2"),
    ("transformer.layer", "attention.out_lin", "DistilBERT"),
    ("encoder.layer", "attention.attn.o", "MPNet"),
)

# Config fields that hold the number of heads per layer, by model family.
_HEAD_COUNT_FIELDS = ("num_attention_heads", "n_heads")


@dataclass(frozen=True)
class AttentionLayout:
    """The attention output projections of a model, one per layer, and the head geometry.

    Attributes:
        projections: the ``nn.Linear`` that maps layer ``i``'s concatenated head contexts to the
            hidden size, in layer order.
        num_heads: heads per layer.
        head_dim: width of one head's context slice (``projection.in_features / num_heads``).
    """

    projections: tuple[nn.Linear, ...]
    num_heads: int
    head_dim: int

    @property
    def num_layers(self) -> int:
        return len(self.projections)


def _get(module: nn.Module, path: str) -> nn.Module | None:
    for name in path.split("."):
        module = getattr(module, name, None)
        if not isinstance(module, nn.Module):
            return None
    return module


def _num_heads(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    for name in _HEAD_COUNT_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def attention_layout(model: nn.Module) -> AttentionLayout:
    """The `AttentionLayout` of a Hugging Face encoder (the base model, e.g. ``BertModel``).

    Raises:
        ValueError: the architecture is not one of `SUPPORTED_LAYOUTS` (e.g. ALBERT, whose layers share
            one attention module, so one hook cannot tell the layers apart).
    """
    heads = _num_heads(model)
    for layers_path, projection_path, _ in SUPPORTED_LAYOUTS:
        layers = _get(model, layers_path)
        if not isinstance(layers, nn.ModuleList) or len(layers) == 0 or heads is None:
            continue
        projections = [_get(layer, projection_path) for layer in layers]
        if not all(isinstance(p, nn.Linear) for p in projections):
            continue
        width = projections[0].in_features
        if width % heads or any(p.in_features != width for p in projections):
            continue
        return AttentionLayout(tuple(projections), heads, width // heads)
    supported = "; ".join(f"{families} (`{layers}.N.{proj}`)" for layers, proj, families in SUPPORTED_LAYOUTS)
    raise ValueError(
        f"Expected a transformer whose layers each own an attention output projection with a known number of "
        f"heads ({supported}), but got {type(model).__name__}. Head masks support these architectures only; "
        "use one of them, or drop `head_mask`/`pruned_heads`."
    )
