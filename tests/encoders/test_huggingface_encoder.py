"""HuggingFaceEncoder from tiny random configs, tiny saved checkpoints and the bundled MiniLM."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from mtl.encoders import HuggingFaceEncoder

TINY: dict[str, Any] = {
    "model_type": "bert",
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "vocab_size": 100,
    "max_position_embeddings": 64,
}


def _batch() -> dict[str, torch.Tensor]:
    """Example 0 has 5 real tokens and 3 padding; example 1 has 8 real tokens."""
    ids = torch.tensor([[2, 11, 12, 13, 3, 0, 0, 0], [2, 21, 22, 23, 24, 25, 26, 3]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0, 0], [1] * 8])
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


@pytest.fixture(scope="module")
def tiny_mlm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BertForMaskedLM checkpoint (model weights only, no tokenizer files)."""
    from transformers import AutoConfig, AutoModelForMaskedLM

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_bert_mlm")
    AutoModelForMaskedLM.from_config(AutoConfig.for_model(**TINY)).save_pretrained(path)
    return path


def test_shapes_and_provides_from_config() -> None:
    enc = HuggingFaceEncoder(config=TINY).eval()
    batch = _batch()
    out = enc(batch)
    assert enc.provides == frozenset({"pooled", "tokens"})
    assert enc.out_features == 32
    assert out.pooled.shape == (2, 32)
    assert out.tokens is not None and out.tokens.shape == (2, 8, 32)
    assert out.mask is batch["attention_mask"] and out.input_ids is batch["input_ids"]
    assert enc.tokenizer is None and enc.mlm_head is None
    assert enc.get_input_embeddings().weight.shape == (100, 32)
    # Without an attention mask every token is real.
    no_mask = enc({"input_ids": batch["input_ids"][1:]})
    assert torch.allclose(no_mask.pooled, out.pooled[1:], atol=1e-5)


@pytest.mark.parametrize("pooling", ["cls", "mean", "max"])
def test_padded_example_pools_like_unpadded(pooling: str) -> None:
    torch.manual_seed(0)
    enc = HuggingFaceEncoder(config=TINY, pooling=pooling).eval()  # type: ignore[arg-type]
    batch = _batch()
    padded = enc(batch).pooled[0]
    alone = enc({key: value[:1, :5] for key, value in batch.items()}).pooled[0]
    assert torch.allclose(padded, alone, atol=1e-5)


def test_all_parameters_get_gradients() -> None:
    # The model's own pooler is dropped, so no parameter is unused (DDP needs no find_unused_parameters).
    enc = HuggingFaceEncoder(config=TINY).train()
    assert getattr(enc.model, "pooler", None) is None
    enc(_batch()).pooled.sum().backward()
    assert all(p.grad is not None for p in enc.parameters())


def test_freeze_means_no_grads_and_no_dropout() -> None:
    enc = HuggingFaceEncoder(config={**TINY, "hidden_dropout_prob": 0.5}, freeze=True)
    enc.train()
    assert all(not p.requires_grad for p in enc.parameters())
    assert enc.training and not enc.model.training
    out = enc(_batch())
    assert not out.pooled.requires_grad
    assert torch.equal(out.pooled, enc(_batch()).pooled)  # dropout stays off


def test_gradient_checkpointing_runs_backward() -> None:
    no_dropout = {**TINY, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    torch.manual_seed(0)
    plain = HuggingFaceEncoder(config=no_dropout).train()
    torch.manual_seed(0)
    ckpt = HuggingFaceEncoder(config=no_dropout, gradient_checkpointing=True).train()
    assert any(getattr(m, "gradient_checkpointing", False) for m in ckpt.model.modules())
    for enc in (plain, ckpt):
        enc(_batch()).pooled.pow(2).sum().backward()
    layer = "encoder.layer.0.attention.self.query.weight"
    grad_plain = dict(plain.model.named_parameters())[layer].grad
    grad_ckpt = dict(ckpt.model.named_parameters())[layer].grad
    assert grad_ckpt is not None and grad_plain is not None
    assert torch.allclose(grad_ckpt, grad_plain, atol=1e-5)


def test_trust_remote_code_defaults_false_and_is_passed(
    tiny_mlm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert inspect.signature(HuggingFaceEncoder).parameters["trust_remote_code"].default is False
    from transformers import AutoModel

    seen: dict[str, Any] = {}
    original = AutoModel.from_pretrained

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(AutoModel, "from_pretrained", spy)
    HuggingFaceEncoder(pretrained=str(tiny_mlm_dir))
    assert seen["trust_remote_code"] is False


def test_exactly_one_of_pretrained_and_config() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        HuggingFaceEncoder()
    with pytest.raises(ValueError, match="exactly one"):
        HuggingFaceEncoder(pretrained="bundled:all-MiniLM-L6-v2", config=TINY)
    with pytest.raises(ValueError, match="model_type"):
        HuggingFaceEncoder(config={"hidden_size": 32})
    with pytest.raises(ValueError, match="pooling"):
        HuggingFaceEncoder(config=TINY, pooling="sum")  # type: ignore[arg-type]


def test_checkpoint_without_tokenizer_files(tiny_mlm_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mtl.encoders.huggingface"):
        enc = HuggingFaceEncoder(pretrained=str(tiny_mlm_dir))
    assert enc.tokenizer is None
    assert "no tokenizer files" in caplog.text
    assert "randomly initialised" not in caplog.text  # the unused MLM head keys are not worth a warning
    with pytest.raises(ValueError, match="tokenizer files"):
        HuggingFaceEncoder(pretrained=str(tiny_mlm_dir), tokenizer=str(tiny_mlm_dir))


@pytest.mark.parametrize("model_type", ["bert", "roberta", "distilbert", "albert", "electra"])
def test_load_mlm_head_matches_masked_lm_logits(model_type: str, tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoModelForMaskedLM

    fields = dict(TINY, model_type=model_type)
    if model_type in ("albert", "electra"):
        fields["embedding_size"] = 16  # these factorise the embeddings; the head maps back to 16 first
    if model_type == "distilbert":
        fields = {"model_type": "distilbert", "dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64}
        fields.update(vocab_size=100, max_position_embeddings=64)
    torch.manual_seed(0)
    reference = AutoModelForMaskedLM.from_config(AutoConfig.for_model(**fields)).eval()
    reference.save_pretrained(tmp_path)

    enc = HuggingFaceEncoder(pretrained=str(tmp_path), load_mlm_head=True).eval()
    assert enc.mlm_head is not None
    batch = {key: value for key, value in _batch().items() if key != "token_type_ids"}
    batch["input_ids"] = batch["input_ids"] + 4  # clear of RoBERTa's padding index 1
    out = enc(batch)
    assert out.tokens is not None
    logits = enc.mlm_head(out.tokens)
    assert logits.shape == (2, 8, 100)
    with torch.no_grad():
        expected = reference(**batch).logits
    assert torch.allclose(logits, expected, atol=1e-5)


def test_load_mlm_head_from_checkpoint_without_head(tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoModel

    AutoModel.from_config(AutoConfig.for_model(**TINY)).save_pretrained(tmp_path)
    enc = HuggingFaceEncoder(pretrained=str(tmp_path), load_mlm_head=True)
    assert enc.mlm_head is None
    assert enc.out_features == 32


def test_bundled_minilm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = HuggingFaceEncoder(pretrained="bundled:all-MiniLM-L6-v2", load_mlm_head=True)
    # from_pretrained hands back an eval-mode model; fine-tuning needs dropout on.
    assert all(m.training for m in enc.modules())
    enc.eval()
    assert enc.out_features == 384
    assert enc.mlm_head is None  # a sentence-transformers checkpoint ships no MLM head
    assert enc.tokenizer is not None
    batch = enc.tokenizer(["a cat sat on the mat", "hello"], padding=True, return_tensors="pt")
    assert batch["input_ids"][0, 0].item() == enc.tokenizer.cls_token_id
    with torch.no_grad():
        out = enc(dict(batch))
    assert out.pooled.shape == (2, 384)
    assert out.tokens is not None and out.tokens.shape == (2, batch["input_ids"].shape[1], 384)
    assert enc.get_input_embeddings().weight.shape == (enc.tokenizer.vocab_size, 384)


def test_unknown_mlm_head_layout_warns(caplog: pytest.LogCaptureFixture) -> None:
    from mtl.encoders.huggingface import _mlm_head

    with caplog.at_level(logging.WARNING, logger="mtl.encoders.huggingface"):
        assert _mlm_head(torch.nn.Sequential(torch.nn.Linear(2, 2)), set()) is None
    assert "Unknown masked-LM head layout" in caplog.text


# ----------------------------------------------------------------------------------- head masks
def test_head_mask_and_pruned_heads_from_config() -> None:
    from mtl.attention_heads import pruned_pairs

    matrix = [[1, 0], [1, 1]]
    by_matrix = HuggingFaceEncoder(config=TINY, head_mask=matrix)
    assert by_matrix.attention_shape == (2, 2)
    assert torch.equal(by_matrix.head_mask, torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    by_pairs = HuggingFaceEncoder(config=TINY, pruned_heads=[[0, 1]])
    assert torch.equal(by_pairs.head_mask, by_matrix.head_mask)
    assert pruned_pairs(by_pairs.head_mask) == [[0, 1]]
    both = HuggingFaceEncoder(
        config=TINY, head_mask=matrix, pruned_heads=[[1, 0], [1, 0]]
    )  # a head is off if either says so
    assert torch.equal(both.head_mask, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    # The configured mask is what forward uses: the same as setting it on an unmasked twin.
    torch.manual_seed(0)
    configured = HuggingFaceEncoder(config=TINY, pruned_heads=[[1, 1]]).eval()
    torch.manual_seed(0)
    twin = HuggingFaceEncoder(config=TINY).eval()
    twin.set_head_mask(torch.tensor([[1.0, 1.0], [1.0, 0.0]]))
    assert torch.equal(configured(_batch()).pooled, twin(_batch()).pooled)
    assert not torch.allclose(
        configured(_batch()).pooled, HuggingFaceEncoder(config=TINY).eval()(_batch()).pooled
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"head_mask": [[1, 1]]}, r"Expected `head_mask` to be a 2 x 2 matrix .* but got 1 rows"),
        (
            {"head_mask": [[1, 1], [1, 1, 1]]},
            r"Expected `head_mask` to be a 2 x 2 matrix .* row 1 is \[1, 1, 1\]",
        ),
        (
            {"head_mask": [[1, 0.5], [1, 1]]},
            r"Expected `head_mask` values to be 0 \(head off\) or 1 .* 0.5 at \[0\]\[1\]",
        ),
        ({"pruned_heads": [[2, 0]]}, r"0 <= layer < 2 and 0 <= head < 2, but got \[2, 0\]"),
        ({"pruned_heads": [[0, 5]]}, r"0 <= layer < 2 and 0 <= head < 2, but got \[0, 5\]"),
        ({"pruned_heads": [[0, -1]]}, r"but got \[0, -1\]"),
        ({"pruned_heads": [[0]]}, r"Expected every `pruned_heads` entry to be a \[layer, head\] pair"),
    ],
)
def test_head_mask_config_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HuggingFaceEncoder(config=TINY, **kwargs)


def test_last_layer_is_the_last_transformer_layer_not_the_mlm_head(tiny_mlm_dir: Path) -> None:
    enc = HuggingFaceEncoder(pretrained=str(tiny_mlm_dir), load_mlm_head=True)
    assert enc.mlm_head is not None
    last = enc.last_layer_parameters()
    layer = enc.model.encoder.layer[-1].output.dense
    assert [id(p) for p in last] == [id(layer.weight), id(layer.bias)]
