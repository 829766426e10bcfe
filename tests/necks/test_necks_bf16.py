"""Every mixture neck under bf16 autocast: finite outputs and gradients, gates summing to 1 and finite
auxiliary losses; and a short bf16-mixed fit of a module with an MoE neck."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything

from mtl.data import MultiTaskDataModule
from mtl.features import Features
from mtl.heads import BinaryHead, ClassificationHead, RegressionHead
from mtl.module import MultiTaskModule
from mtl.necks import MMoE, TaskSparseMoE
from tests.necks.test_necks_contract import NECKS, ROUTES, TASKS, features, make_neck
from tests.toy import TinyEncoder, ToySource

#: bf16 keeps 8 bits of mantissa: a sum of a few weights rounded to bf16 is 1 within ~1e-2.
BF16_ATOL = 2e-2
MIXTURES = [name for name in NECKS if name != "shared_bottom"]


@pytest.mark.parametrize("kind", ["pooled", "tokens"])
@pytest.mark.parametrize("name", MIXTURES)
def test_forward_and_backward_under_bf16_autocast(name, kind):
    neck = make_neck(name).train()
    inputs = features(kind)
    pooled = inputs.pooled.clone().requires_grad_(True)
    inputs = Features(pooled=pooled, tokens=inputs.tokens, mask=inputs.mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = neck(inputs, ROUTES)
        loss = sum(f.pooled.float().square().mean() for f in out.features.values())
        if out.aux_loss is not None:
            loss = loss + out.aux_loss
    for task in TASKS:
        task_features = out.features[task]
        assert torch.isfinite(task_features.pooled).all()
        if kind == "tokens":
            assert torch.isfinite(task_features.tokens).all()
        torch.testing.assert_close(out.stats[f"gate/{task}"].sum().item(), 1.0, atol=BF16_ATOL, rtol=0)
        assert torch.isfinite(out.stats[f"gate_entropy/{task}"])
    assert out.aux_loss is None or torch.isfinite(out.aux_loss)
    assert all(torch.isfinite(v).all() for v in out.stats.values())
    loss.backward()
    assert torch.isfinite(pooled.grad).all() and pooled.grad.abs().sum() > 0
    for parameter_name, parameter in neck.named_parameters():
        assert parameter.grad is None or torch.isfinite(parameter.grad).all(), parameter_name


def test_every_row_gate_sums_to_one_under_bf16():
    neck = make_neck("home")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        weights = neck.expert_weights(features("tokens"))
    for w in weights.values():
        torch.testing.assert_close(w.float().sum(-1), torch.ones(w.shape[:-1]), atol=BF16_ATOL, rtol=0)
    sparse = make_neck("task_sparse_moe")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        routing = sparse.route("a", features("pooled").pooled)
    torch.testing.assert_close(routing.dense().float().sum(-1), torch.ones(5), atol=BF16_ATOL, rtol=0)
    assert ((routing.dense() > 0).sum(-1) == sparse.k).all()


@pytest.mark.parametrize(
    "neck",
    [
        lambda: MMoE(3, [16]),
        lambda: TaskSparseMoE(4, 2, [16], z_loss_weight=1e-3, mutual_information_weight=0.01),
    ],
    ids=["mmoe", "task_sparse_moe"],
)
def test_bf16_mixed_fit_with_an_moe_neck(neck):
    seed_everything(0)
    heads = {"cls": ClassificationHead(num_classes=3), "reg": RegressionHead(), "bin": BinaryHead()}
    module = MultiTaskModule(encoder=TinyEncoder(), neck=neck(), heads=heads)
    before = {k: v.clone() for k, v in module.neck.state_dict().items()}
    trainer = Trainer(
        max_steps=6, precision="bf16-mixed", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1,
        limit_val_batches=2, num_sanity_val_steps=0, val_check_interval=6,
    )  # fmt: skip
    trainer.fit(module, datamodule=MultiTaskDataModule(ToySource(n=64), batch_size=16, layout="mixed"))
    assert trainer.global_step == 6
    assert torch.isfinite(trainer.callback_metrics["val/loss"])
    after = module.neck.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the neck trained
    assert all(v.dtype == torch.float32 for v in module.parameters())  # bf16-mixed keeps fp32 weights
