"""Loss weightings inside `MultiTaskModule`: every method trains, learnt weights are optimised without
weight decay, FAMO sees the losses after each step, GradNorm gets the last layer's gradient norms,
DWA its epoch ends, and a method that needs every task rejects other layouts."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything

import mtl.weighting as weighting
from mtl.balancing.engine import task_gradients
from mtl.data.datamodule import MultiTaskDataModule
from mtl.heads import BinaryHead, ClassificationHead, RegressionHead
from mtl.module import MultiTaskModule
from tests.toy import TinyEncoder, ToySource

METHODS = [
    weighting.EW,
    weighting.UW,
    weighting.DWA,
    weighting.GLS,
    weighting.RLW,
    weighting.FAMO,
    weighting.IMTLL,
    weighting.STCH,
    weighting.GradNorm,
]


def make(method):
    seed_everything(0)
    heads = {"cls": ClassificationHead(num_classes=3), "reg": RegressionHead(), "bin": BinaryHead()}
    optimizer = lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1)  # noqa: E731
    return MultiTaskModule(encoder=TinyEncoder(), heads=heads, balancer=method, optimizer=optimizer)


def fit(module, epochs=2, layout="all_tasks"):
    data = MultiTaskDataModule(ToySource(n=64), batch_size=16, layout=layout, seed=3)
    trainer = Trainer(
        accelerator="cpu", max_epochs=epochs, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(module, datamodule=data)
    return trainer, data


@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.__name__)
def test_every_weighting_trains_through_the_module(cls):
    module = make(cls())
    trainer, _ = fit(module)
    assert trainer.global_step == 8
    assert module.automatic_optimization
    weights = module.weighting.weights
    assert weights is not None and weights.shape == (3,) and torch.isfinite(weights).all()
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_learnt_weights_are_optimised_without_weight_decay():
    module = make(weighting.UW())
    before = (
        module.weighting.log_variances.detach().clone()
        if hasattr(module.weighting, "log_variances")
        else None
    )
    own = list(module.weighting.parameters())
    trainer, _ = fit(module, epochs=1)
    groups = [g for g in trainer.optimizers[0].param_groups if any(p is own[0] for p in g["params"])]
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.0
    assert not torch.equal(before, module.weighting.log_variances.detach())


def test_famo_updates_its_logits_after_every_step():
    module = make(weighting.FAMO())
    calls = []
    original = module.weighting.after_step
    module.weighting.after_step = lambda losses: (calls.append(losses.clone()), original(losses))[1]
    fit(module, epochs=1)
    assert len(calls) == 4 and all(c.shape == (3,) for c in calls)
    assert not torch.equal(module.weighting.logits, torch.zeros(3))


def test_gradnorm_receives_the_norms_of_the_task_gradients_at_the_encoders_last_layer():
    module = make(weighting.GradNorm())
    seen = []
    original = module.weighting.combine

    def spy(losses, step, tasks, grad_norms):
        if not seen:
            last = module.encoder.last_layer_parameters()
            seen.append((grad_norms.clone(), task_gradients(losses, last).norm(dim=1)))
        return original(losses, step, tasks, grad_norms)

    module.weighting.combine = spy
    fit(module, epochs=1)
    passed, expected = seen[0]
    torch.testing.assert_close(passed, expected.detach())
    assert module.encoder.last_layer_parameters()[0] is module.encoder.net[0].weight
    torch.testing.assert_close(
        module.weighting.loss_weights.detach().sum(), torch.tensor(3.0), atol=0.05, rtol=0
    )


def test_dwa_sees_every_epoch_end():
    module = make(weighting.DWA())
    fit(module, epochs=2)
    assert torch.isfinite(module.weighting.history).all()  # two epoch means recorded


@pytest.mark.parametrize("cls", [weighting.FAMO, weighting.GradNorm, weighting.GLS, weighting.STCH])
def test_a_method_that_needs_every_task_rejects_other_layouts(cls):
    with pytest.raises(ValueError, match=r"data\.layout: all_tasks"):
        fit(make(cls()), epochs=1, layout="homogeneous")


@pytest.mark.parametrize("cls", [weighting.EW, weighting.UW, weighting.IMTLL, weighting.DWA, weighting.RLW])
def test_subset_methods_train_on_homogeneous_batches(cls):
    module = make(cls())
    trainer, _ = fit(module, epochs=1, layout="homogeneous")
    assert trainer.global_step > 0 and all(torch.isfinite(p).all() for p in module.parameters())
