"""TAG: lookahead inter-task affinity, measured during one joint training run."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor, nn

from mtl.balancing.engine import task_gradients
from mtl.grouping.affinity import StepAffinityCallback, shared_parameters
from mtl.grouping.lookahead import Step, lookahead_deltas

__all__ = ["TAGAffinity", "lookahead_affinity"]


def lookahead_affinity(before: Tensor, after: Tensor) -> Tensor:
    """``Z[i, j] = 1 - after[i, j] / before[j]``: the relative drop of task ``j``'s loss when the shared
    parameters step on task ``i`` alone (positive: task ``i``'s step helps task ``j``).

    Args:
        before: ``[T]`` the losses ``L_j(θ_s)`` at the current parameters (positive).
        after: ``[T, T]`` row ``i``: the losses ``L_j(θ_{s|i})`` after the lookahead step on task ``i``.
    """
    t = before.shape[0]
    if before.shape != (t,) or after.shape != (t, t):
        raise ValueError(
            f"Expected `before` of shape [T] and `after` of shape [T, T], but got {tuple(before.shape)} "
            f"and {tuple(after.shape)}."
        )
    if not bool((before > 0).all()):
        raise ValueError(
            f"Expected positive losses before the lookahead (the affinity divides by them), but got "
            f"{before.tolist()}. TAG needs losses that are positive, such as cross-entropy or MSE."
        )
    return 1.0 - after / before.unsqueeze(0)


def _rng_replay(device: torch.device) -> Callable[[], None]:
    """A function that puts the random generators back to their state now: each lookahead forward
    then draws the same dropout masks as the forward before the step, so only the step differs."""
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def replay() -> None:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)

    return replay


class TAGAffinity(StepAffinityCallback):
    """Lookahead inter-task affinity (TAG) of the tasks of a `MultiTaskModule`.

    Source: Fifty, Amid, Zhao, Yu, Anil, Finn, "Efficiently Identifying Task Groupings for Multi-Task
    Learning", NeurIPS 2021 (Eq. 1-2). At a measured step ``t`` with shared parameters ``θ_s`` and
    batch ``X``, for every pair of tasks::

        θ_{s|i} = θ_s + Δ(g_i),   g_i = ∇_{θ_s} w_i L_i(X, θ_s, θ_i)
        Z_{i→j} = 1 - L_j(X, θ_{s|i}, θ_j) / L_j(X, θ_s, θ_j)

    where ``Δ(g)`` is the update the training optimizer would really take with gradient ``g`` (for
    SGD ``-lr g``; for Adam and AdamW the update from a read-only copy of its current moments, see
    `mtl.grouping.lookahead`), or with ``step="sgd"`` the plain step ``-lr g`` of the paper's Eq. 1
    whatever the optimizer, and ``w_i`` the task's loss weight (it scales the step as it does in
    training; ``L_j``'s own weight would cancel in the ratio, so it is left out). Only the shared parameters (encoder and neck) take the step;
    every task keeps its own head ``θ_j``. ``A[i, j]`` is ``Z_{i→j}`` averaged over the measured steps
    (the paper's "averaged over training").

    Implementation: the ``T`` per-task gradients come from `mtl.balancing.engine.task_gradients`
    (one batched backward pass on GPUs, one pass per task through its own head on the CPU); each lookahead costs one forward pass without graph. The
    parameters are restored exactly afterwards; the optimizer, its state, ``.grad``, buffers and the
    random stream are left as they were, so training is undisturbed (the measurement forwards replay
    the same dropout masks, so only the step differs between them).

    Under DDP the per-task gradients are averaged across ranks before the lookahead (every rank
    takes the same lookahead step), and the losses before and after it are averaged across ranks
    before ``Z`` is formed, so every rank computes the same matrix.

    Which step: with momentum or Adam, the optimizer's update is dominated by the moments it has
    accumulated from *all* tasks (Adam's new first moment is ``β1 m + (1 - β1) g_i``, so ``g_i`` makes
    a tenth of it at ``β1 = 0.9``), so every source task ``i`` moves ``θ_s`` much the same way and the
    rows of ``A`` differ by little. ``step="sgd"`` isolates the task's own gradient instead.

    Hyper-parameters:
        every_n_steps: measure every this many optimizer steps (the paper measures at every step;
            a larger value trades resolution for speed: each measurement costs ``T + 1`` forwards and
            the per-task backward passes).
        step: ``"optimizer"`` (the update the optimizer would take; SGD, Adam and AdamW) or
            ``"sgd"`` (``-lr g_i`` with the parameter group's learning rate; any optimizer).

    Args:
        every_n_steps, step: see above.
        directory: where the matrix is written at the end of fitting (see `AffinityCallback`).
    """

    method: ClassVar[str] = "tag"

    def __init__(
        self, every_n_steps: int = 1, step: Step = "optimizer", directory: str | Path | None = None
    ) -> None:
        if step not in ("optimizer", "sgd"):
            raise ValueError(
                f"Expected `step` to be 'optimizer' (the optimizer's own update) or 'sgd' (-lr g), but got {step!r}."
            )
        super().__init__(every_n_steps, directory)
        self.step = step

    def measure(self, trainer: Trainer, pl_module: LightningModule, batch: Mapping[str, Any]) -> Tensor:
        optimizers = trainer.optimizers
        if len(optimizers) != 1:
            raise ValueError(
                f"Expected exactly one optimizer for the TAG lookahead, but got {len(optimizers)}. Train "
                "the affinity run with a single optimizer."
            )
        shared = shared_parameters(pl_module)
        replay = _rng_replay(pl_module.device)
        losses = pl_module.task_losses(batch).losses
        before = torch.stack([losses[t].detach() for t in self.task_names])
        grads = trainer.strategy.reduce(
            task_gradients(self.weighted(pl_module, losses), shared), reduce_op="mean"
        )
        per_param = _unflatten(grads, shared)
        deltas = lookahead_deltas(optimizers[0], shared, per_param, self.step)
        after = self._lookahead_losses(pl_module, batch, shared, deltas, replay)
        both = trainer.strategy.reduce(torch.cat([before.unsqueeze(0), after]), reduce_op="mean")
        return lookahead_affinity(both[0].double(), both[1:].double())

    def _lookahead_losses(
        self,
        pl_module: LightningModule,
        batch: Mapping[str, Any],
        shared: list[nn.Parameter],
        deltas: list[Tensor],
        replay: Callable[[], None],
    ) -> Tensor:
        """``[T, T]``: row ``i`` holds every task's loss after the shared parameters step on task ``i``."""
        saved = [p.detach().clone() for p in shared]
        rows: list[Tensor] = []
        try:
            with torch.no_grad():
                for i in range(len(self.task_names)):
                    for param, value, delta in zip(shared, saved, deltas, strict=True):
                        param.copy_(value + delta[i])
                    replay()
                    rows.append(self.task_losses(pl_module, batch))
        finally:
            with torch.no_grad():
                for param, value in zip(shared, saved, strict=True):
                    param.copy_(value)
        return torch.stack(rows)


def _unflatten(flat: Tensor, params: list[nn.Parameter]) -> list[Tensor]:
    """Split ``[T, D]`` into one ``[T, *p.shape]`` per parameter (the layout of `task_gradients`)."""
    sizes = [p.numel() for p in params]
    return [
        part.reshape(flat.shape[0], *p.shape)
        for part, p in zip(flat.split(sizes, dim=1), params, strict=True)
    ]
