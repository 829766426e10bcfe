"""Head masks scale exactly one head's share of the attention output, on every supported architecture."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

from mtl.attention_heads import HeadMasker, attention_layout, head_mask_applied
from mtl.encoders import HuggingFaceEncoder
from tests.attention_heads.builders import TINY_BERT, encoder_batch

_SMALL = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 32}
_NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
_COMMON = {"vocab_size": 60, "max_position_embeddings": 40}

# model_type -> (config fields, path of a layer's value projection inside the layer)
ARCHITECTURES: dict[str, tuple[dict[str, Any], str]] = {
    "bert": ({**_SMALL, **_NO_DROPOUT}, "attention.self.value"),
    "roberta": ({**_SMALL, **_NO_DROPOUT}, "attention.self.value"),
    "xlm-roberta": ({**_SMALL, **_NO_DROPOUT}, "attention.self.value"),
    "electra": ({**_SMALL, **_NO_DROPOUT, "embedding_size": 8}, "attention.self.value"),
    "deberta-v2": ({**_SMALL, **_NO_DROPOUT}, "attention.self.value_proj"),
    "mpnet": ({**_SMALL, **_NO_DROPOUT}, "attention.attn.v"),
    "distilbert": (
        {"dim": 16, "n_layers": 2, "n_heads": 4, "hidden_dim": 32, "dropout": 0.0, "attention_dropout": 0.0},
        "attention.v_lin",
    ),
}


def _encoder(model_type: str) -> HuggingFaceEncoder:
    fields, _ = ARCHITECTURES[model_type]
    torch.manual_seed(0)
    return HuggingFaceEncoder(config={"model_type": model_type, **fields, **_COMMON}).double().eval()


def _inputs() -> dict[str, torch.Tensor]:
    batch = encoder_batch()
    # Clear of the padding index of RoBERTa-style position ids (1); padding keeps id 0 but is masked.
    return {
        "input_ids": batch["input_ids"] + 4 * batch["attention_mask"],
        "attention_mask": batch["attention_mask"],
    }


def _get(module: nn.Module, path: str) -> Any:
    for name in path.split("."):
        module = getattr(module, name)
    return module


@pytest.mark.parametrize("model_type", sorted(ARCHITECTURES))
def test_mask_equals_scaling_the_projection_columns(model_type: str) -> None:
    # Independent truth: the output projection is linear, so scaling head h's context slice by m equals
    # scaling the projection's input columns of head h by m, in an unmasked copy.
    enc = _encoder(model_type)
    layers, heads = enc.attention_shape
    mask = torch.rand(layers, heads, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    mask[0, 1] = 0.0
    reference = copy.deepcopy(enc)
    layout = attention_layout(reference.model)
    with torch.no_grad():
        for layer, projection in enumerate(layout.projections):
            projection.weight.mul_(mask[layer].repeat_interleave(layout.head_dim)[None, :])
    enc.set_head_mask(mask)
    inputs = _inputs()
    assert torch.allclose(enc(inputs).tokens, reference(inputs).tokens, atol=1e-12)


@pytest.mark.parametrize("model_type", sorted(ARCHITECTURES))
def test_zero_mask_equals_zeroing_the_heads_values(model_type: str) -> None:
    # Independent of the context layout: a head whose value vectors are zero contributes nothing, so the
    # slice the mask zeroes must be that head's.
    _, value_path = ARCHITECTURES[model_type]
    enc = _encoder(model_type)
    layers, heads = enc.attention_shape
    layer, head = 1, 2
    reference = copy.deepcopy(enc)
    value = _get(attention_layout(reference.model).projections[0], "weight")  # for the head width only
    width = value.shape[1] // heads
    block = _get(
        _get(reference.model, "encoder.layer" if model_type != "distilbert" else "transformer.layer")[layer],
        value_path,
    )
    with torch.no_grad():
        block.weight[head * width : (head + 1) * width] = 0.0
        block.bias[head * width : (head + 1) * width] = 0.0
    mask = torch.ones(layers, heads, dtype=torch.float64)
    mask[layer, head] = 0.0
    enc.set_head_mask(mask)
    inputs = _inputs()
    masked = enc(inputs).tokens
    assert torch.allclose(masked, reference(inputs).tokens, atol=1e-12)
    enc.set_head_mask(None)
    assert not torch.allclose(masked, enc(inputs).tokens, atol=1e-6)  # the head did matter


def test_all_ones_mask_leaves_outputs_unchanged() -> None:
    torch.manual_seed(0)
    enc = HuggingFaceEncoder(config=TINY_BERT).eval()
    inputs = encoder_batch()
    plain = enc(inputs)
    enc.set_head_mask(torch.ones(enc.attention_shape))
    masked = enc(inputs)
    assert torch.equal(masked.tokens, plain.tokens) and torch.equal(masked.pooled, plain.pooled)


def test_per_example_mask_equals_each_example_with_its_own_mask() -> None:
    torch.manual_seed(0)
    enc = HuggingFaceEncoder(config=TINY_BERT).double().eval()
    inputs = encoder_batch()
    masks = torch.rand(3, *enc.attention_shape, dtype=torch.float64)
    enc.set_head_mask(masks)
    together = enc(inputs).pooled
    for row in range(3):
        enc.set_head_mask(masks[row])
        alone = enc({k: v[row : row + 1] for k, v in inputs.items()}).pooled[0]
        assert torch.allclose(together[row], alone, atol=1e-12)


def test_context_manager_restores_the_configured_mask() -> None:
    enc = HuggingFaceEncoder(config=TINY_BERT, pruned_heads=[[0, 1]])
    configured = enc.head_mask
    assert configured is not None
    with head_mask_applied(enc, torch.zeros(3, 4)):
        assert enc.head_mask is not None and enc.head_mask.sum() == 0
    assert enc.head_mask is configured


def test_no_mask_installs_no_hooks_and_masks_stay_out_of_checkpoints() -> None:
    plain = HuggingFaceEncoder(config=TINY_BERT)
    assert plain.head_masker is None and plain.head_mask is None
    assert all(not p._forward_pre_hooks for p in attention_layout(plain.model).projections)
    masked = HuggingFaceEncoder(config=TINY_BERT, pruned_heads=[[2, 3]])
    assert isinstance(masked.head_masker, HeadMasker)
    assert not any("head_masker" in key for key in masked.state_dict())
    masked.load_state_dict(plain.state_dict())  # strict: a masked encoder loads an unmasked checkpoint
    masked.double()
    assert masked.head_mask is not None and masked.head_mask.dtype == torch.float64  # follows the module


def test_pruned_head_gets_no_gradient_through_its_values() -> None:
    torch.manual_seed(0)
    enc = HuggingFaceEncoder(config=TINY_BERT, pruned_heads=[[1, 2]]).train()
    enc(encoder_batch()).pooled.pow(2).sum().backward()
    value = enc.model.encoder.layer[1].attention.self.value.weight.grad
    assert value is not None
    assert torch.count_nonzero(value[8:12]) == 0  # head 2 of width 4
    assert torch.count_nonzero(value[:8]) > 0 and torch.count_nonzero(value[12:]) > 0


def test_mask_shape_and_dtype_errors() -> None:
    enc = HuggingFaceEncoder(config=TINY_BERT)
    with pytest.raises(ValueError, match=r"Expected a head mask of shape \(3, 4\) or \(batch, 3, 4\)"):
        enc.set_head_mask(torch.ones(4, 3))
    with pytest.raises(ValueError, match=r"Expected a head mask of shape"):
        enc.set_head_mask(torch.ones(12))
    with pytest.raises(ValueError, match="floating-point"):
        enc.set_head_mask(torch.ones(3, 4, dtype=torch.long))


def test_unsupported_architecture_is_a_clear_error() -> None:
    albert = {"model_type": "albert", **_SMALL, "embedding_size": 8, **_COMMON}
    enc = HuggingFaceEncoder(config=albert)
    enc.set_head_mask(None)  # nothing to mask: no error, no hooks
    with pytest.raises(
        ValueError, match=r"Expected a transformer whose layers each own .* but got AlbertModel"
    ):
        enc.set_head_mask(torch.ones(2, 4))
    with pytest.raises(ValueError, match="AlbertModel"):
        HuggingFaceEncoder(config=albert, pruned_heads=[[0, 0]])
