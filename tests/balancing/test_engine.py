"""The gradient-balancing engine: per-task Jacobian rows, and one training step checked by hand."""

import copy

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from torch import nn

from mtl.balancing import MGDA, CAGrad, PCGrad
from mtl.balancing.engine import resolve_engine, task_gradients, write_gradients
from mtl.data import MultiTaskDataModule, collate
from mtl.heads import BinaryHead, ClassificationHead, RegressionHead
from mtl.module import MultiTaskModule
from tests.toy import TinyEncoder, ToySource


def test_batched_rows_equal_the_per_task_loop_and_autograd():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
    x = torch.randn(6, 4)
    losses = (net(x) ** 2).mean(0)  # three "tasks"
    params = list(net.parameters())
    batched = task_gradients(losses, params, engine="batched")
    looped = task_gradients(losses, params, engine="loop")
    assert batched.shape == (3, sum(p.numel() for p in params))
    torch.testing.assert_close(batched, looped)
    for t in range(3):
        expected = torch.cat([g.flatten() for g in torch.autograd.grad(losses[t], params, retain_graph=True)])
        torch.testing.assert_close(batched[t], expected)
    # Separate scalar losses (what the module passes) give the same rows under both engines.
    scalars = list(losses.unbind())
    for engine in ("batched", "loop", "auto"):
        torch.testing.assert_close(task_gradients(scalars, params, engine=engine), looped)


def test_engine_choice():
    assert resolve_engine("auto", torch.device("cpu")) == "loop"
    assert resolve_engine("auto", torch.device("cuda")) == "batched"
    assert resolve_engine("batched", torch.device("cpu")) == "batched"
    with pytest.raises(ValueError, match="gradient engine to be one of"):
        resolve_engine("vmap", torch.device("cpu"))
    with pytest.raises(ValueError, match="gradient engine to be one of"):
        MultiTaskModule(encoder=TinyEncoder(), heads={"reg": RegressionHead()}, gradient_engine="fast")


def test_write_gradients_round_trip():
    params = [nn.Parameter(torch.zeros(2, 3)), nn.Parameter(torch.zeros(4))]
    write_gradients(params, torch.arange(10.0))
    assert params[0].grad.tolist() == [[0, 1, 2], [3, 4, 5]] and params[1].grad.tolist() == [6, 7, 8, 9]
    with pytest.raises(ValueError, match="10 entries"):
        write_gradients(params, torch.zeros(11))


def make(balancer, lr=0.1, **kwargs):
    seed_everything(0)
    heads = {"cls": ClassificationHead(num_classes=3), "reg": RegressionHead(), "bin": BinaryHead()}
    return MultiTaskModule(
        encoder=TinyEncoder(),
        heads=heads,
        balancer=balancer,
        optimizer=lambda p: torch.optim.SGD(p, lr=lr),
        **kwargs,
    )


def fit(module, steps: int, layout="all_tasks"):
    data = MultiTaskDataModule(ToySource(n=64), batch_size=16, layout=layout, seed=3)
    trainer = Trainer(
        accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(module, datamodule=data)
    return data


def test_one_step_moves_shared_weights_along_the_aggregate_and_heads_along_their_task():
    module = make(CAGrad(c=0.0))  # c = 0: the mean of the task gradients
    before = copy.deepcopy(module)
    data = fit(module, steps=1)
    first = next(iter(data.train_dataloader()))
    step = before.task_losses(first)
    shared = list(before.encoder.parameters())
    mean_grad = [
        sum(torch.autograd.grad(step.losses[t], shared, retain_graph=True)[i] for t in step.losses) / 3
        for i in range(len(shared))
    ]
    for p_after, p_before, g in zip(module.encoder.parameters(), shared, mean_grad, strict=True):
        torch.testing.assert_close(p_after, p_before - 0.1 * g)
    for task in ("cls", "reg", "bin"):
        head_before = list(before.heads[task].parameters())
        grads = torch.autograd.grad(step.losses[task], head_before, retain_graph=True)  # unweighted, own task
        for p_after, p_before, g in zip(module.heads[task].parameters(), head_before, grads, strict=True):
            torch.testing.assert_close(p_after, p_before - 0.1 * g)


@pytest.mark.parametrize("balance_on", ["shared", "representation"])
def test_batched_and_loop_engines_train_identically(balance_on):
    trained = {}
    for engine in ("batched", "loop"):
        module = make(MGDA(), balance_on=balance_on, gradient_engine=engine)
        fit(module, steps=3)
        trained[engine] = torch.cat([p.detach().flatten() for p in module.parameters()])
    torch.testing.assert_close(trained["batched"], trained["loop"])


@pytest.mark.parametrize("balancer", [PCGrad(), MGDA()], ids=["PCGrad", "MGDA"])
def test_balanced_training_lowers_every_task_loss(balancer):
    module = make(balancer, lr=0.05)
    batch = collate(
        [(t, *ToySource(n=64).load()[t].val[i]) for t in ("cls", "reg", "bin") for i in range(32)]
    )
    with torch.no_grad():
        before = {t: float(v) for t, v in module.task_losses(batch).losses.items()}
    fit(module, steps=60)
    with torch.no_grad():
        after = {t: float(v) for t, v in module.task_losses(batch).losses.items()}
    assert all(after[t] < before[t] for t in before), (before, after)


def test_a_balancer_needs_every_task_at_every_step():
    with pytest.raises(ValueError, match="layout: all_tasks"):
        fit(make(PCGrad()), steps=1, layout="homogeneous")


def test_the_loop_refills_a_given_matrix_when_it_fits():
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2)
    x = torch.randn(4, 3)
    losses = [layer(x).pow(2).mean(), layer(x).sum()]
    params = list(layer.parameters())
    fresh = task_gradients(losses, params, engine="loop")
    buffer = torch.full((2, 8), float("nan"))
    refilled = task_gradients(losses, params, engine="loop", out=buffer)
    assert refilled.data_ptr() == buffer.data_ptr() and torch.equal(refilled, fresh)
    for misfit in (torch.zeros(3, 8), torch.zeros(2, 8, dtype=torch.float64)):  # other shape, dtype
        other = task_gradients(losses, params, engine="loop", out=misfit)
        assert other.data_ptr() != misfit.data_ptr() and torch.equal(other, fresh)
