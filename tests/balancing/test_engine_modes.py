"""The engine's choices of gradients (shared parameters, last layer, representation), DB-MTL's loss
transform, fp16 loss scaling, and the errors for combinations that make no sense."""

from __future__ import annotations

import copy

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.loggers import Logger
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import nn

from mtl.balancing import DBMTL, IMTLG, MGDA, GradDrop, PCGrad, UPGrad
from mtl.data.datamodule import MultiTaskDataModule
from mtl.encoders.base import Encoder
from mtl.features import Features
from mtl.heads import BinaryHead, ClassificationHead, RegressionHead
from mtl.module import MultiTaskModule
from mtl.weighting.ew import EW
from tests.toy import ToySource

LR = 0.1


class TwoLayerEncoder(Encoder):
    """Two linear layers, so that the last layer is a strict part of the shared parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.out_features = 6
        self.first = nn.Linear(8, 12)
        self.last = nn.Linear(12, 6)

    def forward(self, inputs: torch.Tensor) -> Features:
        return Features(pooled=torch.tanh(self.last(torch.tanh(self.first(inputs)))))

    def check_input_spec(self, spec) -> None:
        pass


def make(balancer, balance_on="shared"):
    seed_everything(0)
    heads = {"cls": ClassificationHead(num_classes=3), "reg": RegressionHead(), "bin": BinaryHead()}
    return MultiTaskModule(
        encoder=TwoLayerEncoder(),
        heads=heads,
        balancer=balancer,
        balance_on=balance_on,
        optimizer=lambda p: torch.optim.SGD(p, lr=LR),
    )


def one_step(module, **trainer_kwargs):
    """Train one step; return the first batch and a copy of the module from before the step."""
    before = copy.deepcopy(module)
    data = MultiTaskDataModule(ToySource(n=64), batch_size=16, layout="all_tasks", seed=3)
    trainer = Trainer(
        accelerator="cpu", max_steps=1, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
        **{"logger": False, **trainer_kwargs},
    )  # fmt: skip
    trainer.fit(module, datamodule=data)
    return next(iter(data.train_dataloader())), before


def grads(loss, params):
    return torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)


def flat(tensors):
    return torch.cat([t.flatten() for t in tensors])


def assert_stepped(after: nn.Module, before: nn.Module, gradient: list[torch.Tensor]) -> None:
    for p_after, p_before, g in zip(after.parameters(), before.parameters(), gradient, strict=True):
        torch.testing.assert_close(p_after, p_before - LR * g, atol=1e-6, rtol=1e-5)


def test_last_layer_weights_from_the_last_layer_weigh_all_shared_gradients():
    module = make(MGDA(), "last_layer")
    batch, before = one_step(module)
    step = before.task_losses(batch)
    losses = [step.losses[t] for t in ("cls", "reg", "bin")]
    last = list(before.encoder.last.parameters())
    assert [p.shape for p in before.encoder.last_layer_parameters()] == [p.shape for p in last]
    G = torch.stack([flat(grads(loss, last)) for loss in losses])
    aggregator = MGDA()
    aggregator(G)
    w = aggregator.weights.float()
    weighted = sum(wi * loss for wi, loss in zip(w, losses, strict=True))
    assert_stepped(module.encoder, before.encoder, list(grads(weighted, list(before.encoder.parameters()))))
    for task, loss in zip(("cls", "reg", "bin"), losses, strict=True):  # heads: their own task, unweighted
        head = before.heads[task]
        assert_stepped(module.heads[task], head, list(grads(loss, list(head.parameters()))))


@pytest.mark.parametrize("aggregator", [IMTLG, MGDA, GradDrop], ids=lambda c: c.__name__)
def test_representation_aggregate_is_back_propagated_through_the_encoder(aggregator):
    module = make(aggregator(), "representation")
    batch, before = one_step(module)
    step = before.task_losses(batch)
    losses = [step.losses[t] for t in ("cls", "reg", "bin")]
    z = step.shared.pooled
    Gz = torch.stack([flat(grads(loss, [z])) for loss in losses])
    direction = aggregator()(Gz).view_as(z)
    encoder = list(before.encoder.parameters())
    expected = torch.autograd.grad(z, encoder, grad_outputs=direction, retain_graph=True)
    assert_stepped(module.encoder, before.encoder, list(expected))
    total = sum(losses)
    for task in ("cls", "reg", "bin"):  # neck and heads: the plain sum
        head = before.heads[task]
        assert_stepped(module.heads[task], head, list(grads(total, list(head.parameters()))))


def test_dbmtl_takes_the_gradients_of_the_log_losses():
    module = make(DBMTL(beta=0.0))  # beta = 0: no averaging, every row rescaled to the largest norm
    batch, before = one_step(module)
    step = before.task_losses(batch)
    shared = list(before.encoder.parameters())
    logs = [torch.log(step.losses[t] + 1e-8) for t in ("cls", "reg", "bin")]
    G = torch.stack([flat(grads(loss, shared)) for loss in logs])
    norms = G.norm(dim=1)
    direction = (norms.max() / norms) @ G / 3
    sizes = [p.numel() for p in shared]
    assert_stepped(
        module.encoder,
        before.encoder,
        [d.view_as(p) for d, p in zip(direction.split(sizes), shared, strict=True)],
    )


def test_fp16_loss_scaling_gives_the_unscaled_update_and_skips_non_finite_steps():
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    plugin = MixedPrecision("16-mixed", "cpu", scaler=scaler)
    module = make(UPGrad())
    reference = make(UPGrad())
    one_step(reference)
    one_step(module, plugins=[plugin])
    assert scaler.get_scale() == 1024.0  # finite gradients: the scale is kept (growth needs 2000 steps)
    for p, q in zip(module.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=5e-3, rtol=5e-2)  # fp16 autocast against fp32

    # A scale so large that the half-precision gradients overflow: the step is skipped, the scale halved.
    huge = torch.amp.GradScaler("cpu", init_scale=2.0**40)
    module = make(UPGrad())
    _, before = one_step(module, plugins=[MixedPrecision("16-mixed", "cpu", scaler=huge)])
    assert huge.get_scale() == 2.0**39
    for p, q in zip(module.parameters(), before.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_weighting_with_equal_weights_is_the_plain_sum():
    plain, weighted = make(None), make(EW())
    one_step(plain)
    one_step(weighted)
    for p, q in zip(plain.parameters(), weighted.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    assert weighted.automatic_optimization
    torch.testing.assert_close(weighted.weighting.weights, torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize(
    ("balancer", "balance_on", "match"),
    [
        (GradDrop(), "last_layer", "weighted sum of the task gradients"),
        (PCGrad(), "representation", "defined on representation gradients"),
        (EW(), "representation", "balance_on: shared` with the loss weighting"),
        (None, "last_layer", "gradient aggregator as `balancer`"),
        (MGDA(), "everything", "'shared', 'last_layer' or 'representation'"),
    ],
)
def test_combinations_that_make_no_sense_are_clear_errors(balancer, balance_on, match):
    with pytest.raises(ValueError, match=match):
        make(balancer, balance_on)


def test_a_balancer_of_another_kind_is_a_type_error():
    with pytest.raises(TypeError, match=r"loss weighting .* or a gradient aggregator"):
        make(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16-scaled"])
def test_clipping_bounds_the_true_gradient_norm(fp16):
    module = make(UPGrad())
    module.clip_grad_norm = 1e-3
    plugins = [MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=1024.0))]
    _, before = one_step(module, **({"plugins": plugins} if fp16 else {}))
    change = flat([p - q for p, q in zip(module.parameters(), before.parameters(), strict=True)])
    # The scaled gradients are unscaled before clipping, so the step is LR times the clipped norm.
    torch.testing.assert_close(change.norm(), torch.tensor(LR * 1e-3), rtol=1e-3, atol=1e-7)


class RecordingLogger(Logger):
    """Keeps every `log_metrics` call (the dashboard's view of a run)."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics: list[tuple[int, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        self.metrics.append((step, dict(metrics)))


def test_the_dashboard_gets_the_weights_and_the_pairwise_gradient_cosines():
    logger = RecordingLogger()
    module = make(MGDA())
    batch, before = one_step(module, logger=logger, log_every_n_steps=1)
    logged = {
        k: v for step, m in logger.metrics if step == 0 for k, v in m.items() if k.startswith("balancer/")
    }
    step = before.task_losses(batch)
    shared = before.shared_parameters()
    G = torch.stack([flat(grads(step.losses[t], shared)) for t in ("cls", "reg", "bin")])
    aggregator = MGDA()
    aggregator(G)
    for task, weight in zip(("cls", "reg", "bin"), aggregator.weights.tolist(), strict=True):
        assert logged[f"balancer/weight/{task}"] == pytest.approx(weight, abs=1e-5)
    for a, b in (("cls", "reg"), ("cls", "bin"), ("reg", "bin")):
        i, j = ("cls", "reg", "bin").index(a), ("cls", "reg", "bin").index(b)
        expected = float(torch.nn.functional.cosine_similarity(G[i], G[j], dim=0))
        assert logged[f"balancer/cos/{a}/{b}"] == pytest.approx(expected, abs=1e-5)
    assert not any(k.startswith("balancer/cos/reg/cls") for k in logged)  # each pair once
