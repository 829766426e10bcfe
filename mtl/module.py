"""`MultiTaskModule`: one shared encoder, an optional neck, one head per task.

The training step is a single forward through the encoder for the whole batch, the neck's per-task
routing, each present task's head on its rows, and a weighted sum of per-task losses. Batches come
from `mtl.data.collate` (``inputs``, ``targets``, ``routes``); a homogeneous batch (one task) and a
mixed batch (several tasks routed by row) go through the same code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.strategies import DDPStrategy
from torch import Tensor, nn

from mtl.balancing.aggregator import GradientAggregator, gram_matrix, nonfinite_rows
from mtl.balancing.engine import (
    Engine,
    flat_gradients,
    representation_gradients,
    resolve_engine,
    task_gradients,
    write_gradients,
)
from mtl.encoders.base import Encoder
from mtl.features import Features
from mtl.heads.base import Head
from mtl.necks.base import Neck
from mtl.necks.shared_bottom import SharedBottom
from mtl.running_losses import RunningLosses
from mtl.weighting.base import LossWeighting

__all__ = ["MultiTaskModule", "StepOutput"]


Stage = Literal["train", "val", "test"]
BalanceOn = Literal["shared", "last_layer", "representation"]
_TASK_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class StepOutput:
    """One forward pass: weighted ``total`` loss, per-task ``losses`` and raw ``predictions``, the
    neck's ``aux_loss`` (``None`` for necks without one) and its ``stats`` (e.g. gate weights)."""

    total: Tensor
    losses: dict[str, Tensor]
    predictions: dict[str, Tensor]
    aux_loss: Tensor | None = None
    stats: dict[str, Tensor] = field(default_factory=dict)
    shared: Features | None = None  #: the encoder's output (the shared representation)


class MultiTaskModule(LightningModule):
    """A shared-encoder multi-task model.

    Total loss = ``Σ_t w_t · L_t + aux_loss_weight · L_aux`` over the tasks present in a batch, where
    ``L_t`` is task ``t``'s head loss (a mean over its labelled examples) and ``L_aux`` the neck's
    auxiliary loss (zero for shared-bottom).

    Logged: ``train/{task}/loss``, ``train/loss``; per epoch ``{stage}/{task}/{metric}`` for every
    metric of every head, and ``{stage}/mean``, the mean over tasks (``mean_over``) of each head's
    primary metric with lower-is-better metrics negated (the target of checkpointing and early
    stopping).

    Args:
        encoder: the shared encoder.
        heads: one head per task, keyed by task name (the names the data source uses).
        neck: maps shared features to per-task features (default: shared-bottom, the identity).
        loss_weights: fixed weight per task (default 1 for every task).
        aux_loss_weight: weight of the neck's auxiliary loss.
        optimizer: builds the optimizer from parameter groups (LightningCLI ``class_path`` of a
            ``torch.optim.Optimizer``; default AdamW with its default learning rate).
        lr_scheduler: builds a scheduler from the optimizer, or ``None``.
        scheduler_interval: step the scheduler every ``"step"`` or every ``"epoch"``.
        encoder_lr: learning rate of the encoder's parameters (default: the optimizer's).
        head_lr: learning rate of the neck's and heads' parameters (default: the optimizer's).
        train_metrics: also compute the heads' metrics on training batches (costs time).
        check_finite: raise as soon as a loss is NaN or infinite, naming the task and step (one
            device synchronisation per step).
        balancer: how the tasks' losses are balanced: a loss weighting (`mtl.weighting`, e.g. ``UW``,
            ``FAMO``: the objective is the method's function of the losses, one backward pass), or a
            gradient aggregator (`mtl.balancing`, e.g. ``PCGrad``: the shared parameters step along
            the aggregate of the per-task gradients, the heads along their own task's gradient; needs
            every task at every step, ``data.layout: all_tasks``, and runs under manual
            optimization). ``None``: the fixed-weight sum.
        balance_on: what a gradient aggregator's per-task gradients are taken with respect to:
            ``"shared"``, every shared parameter (encoder and neck; exact, ``T`` gradients of the
            whole shared part); ``"last_layer"``, the encoder's last layer only, whose aggregation
            weights then weigh the losses of one ordinary backward pass (for methods whose direction
            is a weighted sum of the rows, ``weighted``); ``"representation"``, the encoder's output
            (the cheap variant of MGDA-UB, IMTL-G, Aligned-MTL-UB and GradDrop, the methods defined
            on it, ``representation``): the aggregate at the representation is back-propagated
            through the encoder, and the neck and heads take the gradient of the weighted sum.
        gradient_engine: how the per-task gradients are computed (`mtl.balancing.engine`):
            ``"batched"``, one vectorised backward pass; ``"loop"``, one backward pass per task;
            ``"auto"``, batched on accelerators and the loop on CPU (where it measures faster). Same
            gradients either way.
        clip_grad_norm: with a gradient aggregator, clip the total gradient norm to this (Lightning's
            ``trainer.gradient_clip_val`` does not apply to manual optimization).
        mean_over: the tasks whose primary metrics ``{stage}/mean`` averages (default: every task),
            e.g. the main tasks when the others are auxiliary, so that checkpointing and early
            stopping follow them.
    """

    def __init__(
        self,
        encoder: Encoder,
        heads: dict[str, Head],
        neck: Neck | None = None,
        loss_weights: dict[str, float] | None = None,
        aux_loss_weight: float = 1.0,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["step", "epoch"] = "step",
        encoder_lr: float | None = None,
        head_lr: float | None = None,
        train_metrics: bool = False,
        check_finite: bool = True,
        balancer: GradientAggregator | LossWeighting | None = None,
        balance_on: BalanceOn = "shared",
        clip_grad_norm: float | None = None,
        gradient_engine: Engine = "auto",
        mean_over: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            ignore=["encoder", "heads", "neck", "optimizer", "lr_scheduler", "balancer"]
        )
        if not heads:
            raise ValueError("Expected `heads` to name at least one task, but got none.")
        bad = [t for t in heads if not _TASK_NAME.match(t)]
        if bad:
            raise ValueError(
                f"Expected task names to be Python identifiers (letters, digits, underscores), but got {bad}."
            )
        for task, head in heads.items():
            if not isinstance(head, Head):
                raise TypeError(
                    f"Expected the head of task `{task}` to be an mtl Head, but got {type(head).__name__}."
                )
            if head.reads not in encoder.provides:
                raise ValueError(
                    f"Expected the encoder to provide `{head.reads}` features for the head of task `{task}` "
                    f"({type(head).__name__}), but {type(encoder).__name__} provides {sorted(encoder.provides)}. "
                    "Choose a head that reads what the encoder provides, or another encoder."
                )
        unknown = sorted(set(loss_weights or {}) - set(heads))
        if unknown:
            raise ValueError(f"Expected `loss_weights` to name tasks in {sorted(heads)}, but got {unknown}.")
        if mean_over is not None and (not mean_over or set(mean_over) - set(heads)):
            raise ValueError(
                f"Expected `mean_over` to name at least one of the tasks {sorted(heads)}, but got {mean_over}. "
                "List the tasks whose primary metrics `val/mean` should average, or leave it out for all."
            )
        self.mean_over = set(heads) if mean_over is None else set(mean_over)

        self.encoder = encoder
        self.neck = neck or SharedBottom()
        passed = self.neck.provides(encoder.provides)
        for task, head in heads.items():
            if head.reads not in passed:
                raise ValueError(
                    f"Expected the neck {type(self.neck).__name__} to pass `{head.reads}` features to the head "
                    f"of task `{task}` ({type(head).__name__}), but it passes {sorted(passed)}. Use a neck that "
                    "routes them (e.g. `route_tokens: true` for token heads) or shared-bottom."
                )
        self.neck.bind(encoder.out_features, list(heads))
        width = self.neck.out_features(encoder.out_features)
        for head in heads.values():
            head.bind(width, encoder)
        self.heads = nn.ModuleDict(heads)
        self.loss_weights = {t: float((loss_weights or {}).get(t, 1.0)) for t in heads}
        self.aux_loss_weight = aux_loss_weight
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.scheduler_interval = scheduler_interval
        self.encoder_lr = encoder_lr
        self.head_lr = head_lr
        self.train_metrics = train_metrics
        self.check_finite = check_finite
        # Per-task training losses bypass `self.log`, which costs ~0.5 ms a call on every step; they
        # accumulate on the device and reach the loggers at Lightning's logging interval.
        self._train_losses = RunningLosses()
        self.balancer, self.weighting = self._check_balancer_choice(balancer, balance_on)
        self._task_gradient_buffer: Tensor | None = None  # G of the last balancer step, refilled
        if self.weighting is not None:
            self.weighting.bind(self.task_names)
        self.balance_on = balance_on
        resolve_engine(gradient_engine, torch.device("cpu"))  # rejects an unknown engine now
        self.gradient_engine = gradient_engine
        self.clip_grad_norm = clip_grad_norm
        self.automatic_optimization = self.balancer is None
        stages: tuple[Stage, ...] = ("train", "val", "test") if train_metrics else ("val", "test")
        self.metrics = nn.ModuleDict(
            {
                stage: nn.ModuleDict(
                    {task: head.metrics().clone(prefix=f"{stage}/{task}/") for task, head in heads.items()}
                )
                for stage in stages
            }
        )

    @property
    def task_names(self) -> list[str]:
        return list(self.heads)

    def shared_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters every task shares: the encoder's and the neck's (not the heads')."""
        return [p for p in [*self.encoder.parameters(), *self.neck.parameters()] if p.requires_grad]

    @staticmethod
    def _check_balancer_choice(
        balancer: GradientAggregator | LossWeighting | None, balance_on: str
    ) -> tuple[GradientAggregator | None, LossWeighting | None]:
        """Split ``balancer`` into (aggregator, weighting) and check ``balance_on`` fits it."""
        if balance_on not in ("shared", "last_layer", "representation"):
            raise ValueError(
                f"Expected `balance_on` to be 'shared', 'last_layer' or 'representation', but got {balance_on!r}."
            )
        if isinstance(balancer, LossWeighting):
            if balance_on != "shared":
                raise ValueError(
                    f"Expected `balance_on: shared` with the loss weighting {type(balancer).__name__}, but got "
                    f"{balance_on!r}: the option chooses where gradient aggregators take per-task gradients."
                )
            return None, balancer
        if balancer is not None and not isinstance(balancer, GradientAggregator):
            raise TypeError(
                "Expected `balancer` to be a loss weighting (mtl.weighting) or a gradient aggregator "
                f"(mtl.balancing), but got {type(balancer).__name__}."
            )
        name = type(balancer).__name__
        if balance_on == "last_layer" and balancer is not None and not balancer.weighted:
            raise ValueError(
                f"Expected a method whose direction is a weighted sum of the task gradients with "
                f"`balance_on: last_layer`, but {name} is not (its weights cannot be transferred from the last "
                "layer to the other parameters). Use `balance_on: shared`."
            )
        if balance_on == "representation" and balancer is not None and not balancer.representation:
            raise ValueError(
                f"Expected a method defined on representation gradients with `balance_on: representation` "
                f"(MGDA, IMTLG, AlignedMTL, GradDrop), but got {name}, whose guarantees concern the parameters' "
                "gradients. Use `balance_on: shared` or `last_layer`."
            )
        if balance_on != "shared" and balancer is None:
            raise ValueError(f"Expected a gradient aggregator as `balancer` with `balance_on: {balance_on}`.")
        return balancer, None

    def metric_directions(self) -> dict[str, bool]:
        """Whether higher is better, for every logged metric name: ``{stage}/{task}/{metric}``, the losses,
        and ``{stage}/mean`` (sign-corrected, so always higher-is-better)."""
        directions: dict[str, bool] = {}
        for stage, collections in self.metrics.items():
            for task, collection in collections.items():
                for name, metric in collection.items(keep_base=False):
                    directions[name] = bool(metric.higher_is_better)
                directions[f"{stage}/{task}/loss"] = False
            directions.update({f"{stage}/mean": True, f"{stage}/loss": False, f"{stage}/aux_loss": False})
        return directions

    # ----------------------------------------------------------------------------------- checks
    def setup(self, stage: str) -> None:
        """Check the data against the model before the first step (tasks, inputs, label ranges)."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is None or not hasattr(datamodule, "datasets"):
            return
        data_tasks = datamodule.task_names
        no_data = [t for t in self.heads if t not in data_tasks]
        if no_data:
            raise ValueError(
                f"Expected every task with a head to have data, but {no_data} are not in the data source, "
                f"whose tasks are {data_tasks}. Add them to the source's `tasks` or remove their heads."
            )
        no_head = [t for t in data_tasks if t not in self.heads]
        if no_head:
            raise ValueError(
                f"Expected a head for every task of the data source, but {no_head} have none "
                f"(heads: {self.task_names}). Add heads for them or drop them from the source's `tasks`."
            )
        self.encoder.check_input_spec(datamodule.source.input_spec())
        for split in ("train", "val", "test"):
            for task, dataset in datamodule.datasets(split).items():
                self.heads[task].check_targets(dataset.stacked_targets(), task)
        layout = getattr(datamodule, "layout", "homogeneous")
        self._configure_unused_parameters(layout)
        self._check_balancer(layout)

    def _check_balancer(self, layout: str) -> None:
        if self.weighting is not None:
            self.weighting.reduce = self._mean_over_ranks
        method = self.balancer if self.balancer is not None else self.weighting
        name = type(method).__name__
        needs_all = self.balancer is not None or (
            self.weighting is not None and self.weighting.requires_all_tasks
        )
        if needs_all and layout != "all_tasks":
            raise ValueError(
                f"Expected `data.layout: all_tasks` with the balancer {name}, but got `{layout}`: the method needs "
                "every task's loss at every step."
            )
        after_step = self.weighting is not None and self.weighting.needs_losses_after_step
        if after_step and self.trainer.accumulate_grad_batches != 1:
            raise ValueError(
                f"Expected `trainer.accumulate_grad_batches: 1` with {name}, but got "
                f"{self.trainer.accumulate_grad_batches}: it updates its weights from the losses after every step."
            )

    def _mean_over_ranks(self, x: Tensor) -> Tensor:
        return self.trainer.strategy.reduce(x, reduce_op="mean") if self._trainer is not None else x

    def _configure_unused_parameters(self, layout: str) -> None:
        """DDP must look for parameters without gradient exactly when a step can skip a head."""
        strategy = self.trainer.strategy
        if not isinstance(strategy, DDPStrategy):
            return
        every_head_every_step = layout == "all_tasks"
        strategy._ddp_kwargs["find_unused_parameters"] = not every_head_every_step

    def _check_batch(self, batch: Mapping[str, Any]) -> None:
        missing = [k for k in ("inputs", "targets", "routes") if k not in batch]
        if missing:
            raise KeyError(
                f"Expected a batch with keys `inputs`, `targets` and `routes` (see mtl.data.collate), but it "
                f"lacks {missing}. Use MultiTaskDataModule or `mtl.data.collate` as the loader's collate_fn."
            )
        unknown = [t for t in batch["targets"] if t not in self.heads]
        if unknown:
            raise KeyError(
                f"Expected batch tasks to have heads {self.task_names}, but got unknown task(s) {unknown}."
            )
        unrouted = [t for t in batch["targets"] if t not in batch["routes"]]
        if unrouted:
            raise KeyError(f"Expected a route for every task's targets, but {unrouted} have none.")

    # ----------------------------------------------------------------------------------- forward
    def forward(self, inputs: Any, routes: Mapping[str, Tensor | None] | None = None) -> dict[str, Tensor]:
        """Raw predictions per task (every task on every row when ``routes`` is ``None``)."""
        routes = routes if routes is not None else dict.fromkeys(self.heads)
        out = self.neck(self.encoder(inputs), routes)
        return {task: self.heads[task](features) for task, features in out.features.items()}

    def task_losses(self, batch: Mapping[str, Any]) -> StepOutput:
        """Forward a `mtl.data.collate` batch: per-task losses, their weighted total, predictions."""
        self._check_batch(batch)
        targets: Mapping[str, Tensor] = batch["targets"]
        shared = self.encoder(batch["inputs"])
        out = self.neck(shared, {t: batch["routes"][t] for t in targets})
        predictions = {task: self.heads[task](features) for task, features in out.features.items()}
        losses = {task: self.heads[task].loss(p, targets[task]) for task, p in predictions.items()}
        total = sum(self.loss_weights[t] * loss for t, loss in losses.items())
        if out.aux_loss is not None:
            total = total + self.aux_loss_weight * out.aux_loss
        return StepOutput(total, losses, predictions, aux_loss=out.aux_loss, stats=out.stats, shared=shared)

    def _weighted_losses(self, step: StepOutput) -> tuple[Tensor, list[str]]:
        """``[n]`` fixed-weight losses of the tasks present in ``step``, in task order, and their names."""
        present = [t for t in self.heads if t in step.losses]
        return torch.stack(self._task_objectives(step, present)), present

    def _task_objectives(self, step: StepOutput, tasks: Sequence[str]) -> list[Tensor]:
        """The fixed-weight loss of each of ``tasks``, as separate scalars: the per-task gradient of
        one then differentiates only that task's graph (a slice of a stacked tensor would carry zero
        gradients through every other task's head)."""
        return [self.loss_weights[t] * step.losses[t] for t in tasks]

    def _shared_step(self, batch: Mapping[str, Any], stage: Stage) -> Tensor:
        return self._record(self.task_losses(batch), batch, stage)

    def _record(self, step: StepOutput, batch: Mapping[str, Any], stage: Stage) -> Tensor:
        """Check, meter and log one step's losses; returns the total loss."""
        targets: Mapping[str, Tensor] = batch["targets"]
        if self.check_finite and not torch.isfinite(step.total):
            bad = {t: float(v.detach()) for t, v in step.losses.items() if not torch.isfinite(v)}
            if not bad and step.aux_loss is not None:
                bad = {"aux_loss": float(step.aux_loss.detach())}
            raise FloatingPointError(
                f"Expected finite losses, but at {stage} step {self.global_step} (batch of {sorted(targets)}) "
                f"got {bad}. Lower the learning rate, enable gradient clipping (trainer.gradient_clip_val), "
                "or check the inputs for NaN/inf."
            )
        for task, loss in step.losses.items():
            if stage in self.metrics:
                head = self.heads[task]
                self.metrics[stage][task].update(
                    *head.metric_inputs(step.predictions[task].detach(), targets[task])
                )
            if stage == "train":
                self._train_losses.add(task, loss, len(targets[task]))
            else:
                self.log(f"{stage}/{task}/loss", loss, batch_size=len(targets[task]), on_epoch=True)
        if stage == "train" and self.loggers and (self.global_step + 1) % self._log_interval() == 0:
            means = self._train_losses.interval_means("train/{}/loss_step")
            for logger in self.loggers:
                logger.log_metrics(means, step=self.global_step)
        if step.aux_loss is not None:
            self.log(f"{stage}/aux_loss", step.aux_loss, on_epoch=True)
        batch_size = sum(len(y) for y in targets.values())
        self.log(f"{stage}/loss", step.total, batch_size=batch_size, prog_bar=stage == "train", on_epoch=True)
        return step.total

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        if self.balancer is not None:
            return self._balanced_step(batch)
        if self.weighting is not None:
            return self._weighted_step(batch)
        return self._shared_step(batch, "train")

    def _weighted_step(self, batch: Mapping[str, Any]) -> Tensor:
        """The loss weighting's objective of the present tasks' losses (one backward, by Lightning)."""
        step = self.task_losses(batch)
        losses, present = self._weighted_losses(step)
        tasks = None
        if len(present) != len(self.heads):
            tasks = torch.tensor([self.task_names.index(t) for t in present], device=losses.device)
        grad_norms = None
        if self.weighting.needs_grad_norms:
            last = self.encoder.last_layer_parameters()
            grad_norms = task_gradients(self._task_objectives(step, present), last, self.gradient_engine)
            grad_norms = grad_norms.norm(dim=1).detach()
        total = self.weighting(losses, self.global_step, tasks, grad_norms)
        if step.aux_loss is not None:
            total = total + self.aux_loss_weight * step.aux_loss
        step.total = total
        self._record(step, batch, "train")
        self._log_balancer(self.weighting.weights, None)
        return total

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.weighting is None or not self.weighting.needs_losses_after_step:
            return
        # The same batch under the updated parameters (FAMO's loss decrease), in the training precision.
        with torch.no_grad(), self.trainer.precision_plugin.forward_context():
            losses, _ = self._weighted_losses(self.task_losses(batch))
        self.weighting.after_step(losses)

    def _balanced_step(self, batch: Mapping[str, Any]) -> Tensor:
        """One optimizer step along the gradient aggregator's combination of the per-task gradients.

        Under DDP, the per-task gradient matrix ``G`` is averaged across ranks (one collective for the
        whole matrix; gathered instead for representation gradients, which differ in their rows) before
        the aggregation, so every rank computes and applies the same update; the other gradients are
        averaged the same way. Autograd is asked for the gradients directly, so DDP's own reducer
        (which hooks ``.backward``) stays idle. Under fp16 mixed precision the losses are multiplied
        by the gradient scaler's scale before differentiation (so that small gradients survive in
        half precision) and ``G`` is divided by it before the aggregation; a non-finite ``G`` then
        makes the scaler skip the step and lower its scale, as in ordinary fp16 training.
        """
        step = self.task_losses(batch)
        total = self._record(step, batch, "train")
        missing = [t for t in self.heads if t not in step.losses]
        if missing:
            raise ValueError(
                f"Expected every task to have a loss at every step with the gradient balancer "
                f"{type(self.balancer).__name__}, but tasks {missing} have none in this batch (all their labels "
                "are missing, or the layout is not `all_tasks`)."
            )
        optimizer = self.optimizers()
        optimizer.zero_grad()
        parts = self._task_objectives(step, list(self.heads))
        losses = torch.stack(parts)
        # Each task's objective stays its own graph root (`_task_objectives`); the transform is elementwise.
        parts = [self.balancer.transform_losses(x.reshape(1)).reshape(()) for x in parts]
        aux = None if step.aux_loss is None else self.aux_loss_weight * step.aux_loss
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        scale = 1.0
        if scaler is not None and scaler.is_enabled():
            parts, aux = [scaler.scale(x) for x in parts], None if aux is None else scaler.scale(aux)
            scale = float(scaler.get_scale())
        encoder = [p for p in self.encoder.parameters() if p.requires_grad]
        rest = [p for p in [*self.neck.parameters(), *self.heads.parameters()] if p.requires_grad]
        if self.balance_on == "representation":
            G = self._representation_step(step, parts, losses, aux, encoder, rest, scale)
        else:
            G = self._parameter_step(parts, losses, aux, scale)
        self._log_balancer(self.balancer.weights, G)
        optimizer.step()
        scheduler = self.lr_schedulers()
        if scheduler is not None and self.scheduler_interval == "step":
            scheduler.step()
        return total.detach()

    def _parameter_step(
        self, parts: list[Tensor], losses: Tensor, aux: Tensor | None, scale: float
    ) -> Tensor | None:
        """Gradients for ``balance_on`` ``shared`` or ``last_layer``; returns the aggregated ``G``."""
        heads = [p for p in self.heads.parameters() if p.requires_grad]
        shared = self.shared_parameters()
        on = shared if self.balance_on == "shared" else self.encoder.last_layer_parameters()
        # The previous step's G is filled again rather than a new one allocated (see `task_gradients`).
        self._task_gradient_buffer = task_gradients(
            parts, on, self.gradient_engine, self._task_gradient_buffer
        )
        G = self._reduce(self._task_gradient_buffer)
        G = _rescale(G, 1.0 / scale)
        objective = torch.stack(parts)
        if scale != 1.0 and nonfinite_rows(G):
            self._skip_step(shared + heads)
            return None
        direction = self.balancer(G, losses.detach())
        direction = _rescale(direction, scale)
        if self.balance_on == "last_layer":  # the weights found on the last layer weigh one backward pass
            weighted = (self.balancer.weights.to(objective) * objective).sum()
            direction = self._reduce(flat_gradients(weighted, shared))
        if aux is not None:
            direction = direction + self._reduce(flat_gradients(aux, shared))
        write_gradients(shared, direction)
        write_gradients(heads, self._reduce(flat_gradients(objective.sum(), heads)))
        return G

    def _representation_step(
        self,
        step: StepOutput,
        parts: list[Tensor],
        losses: Tensor,
        aux: Tensor | None,
        encoder: list[nn.Parameter],
        rest: list[nn.Parameter],
        scale: float,
    ) -> Tensor | None:
        """Gradients for ``balance_on: representation``; returns the aggregated ``G``."""
        assert step.shared is not None
        reps = [x for x in (step.shared.pooled, step.shared.tokens, step.shared.spatial) if x is not None]
        reps = [x for x in reps if x.requires_grad]
        if not reps or not encoder:
            raise ValueError(
                f"Expected a trainable encoder with `balance_on: representation` and {type(self.balancer).__name__}, "
                "but the encoder's output does not depend on trainable parameters (is it frozen?)."
            )
        G, own = representation_gradients(
            task_gradients(parts, reps, self.gradient_engine), self.trainer.strategy
        )
        G = _rescale(G, 1.0 / scale)
        if scale != 1.0 and nonfinite_rows(G):
            self._skip_step(encoder + rest)
            return None
        direction = self.balancer(G, losses.detach())[own]
        direction = _rescale(direction, scale)
        sizes = [x.numel() for x in reps]
        grads = torch.autograd.grad(
            reps,
            encoder,
            grad_outputs=[d.view_as(x) for d, x in zip(direction.split(sizes), reps, strict=True)],
            retain_graph=True,
            allow_unused=True,
        )
        flat = torch.cat(
            [
                (g if g is not None else torch.zeros_like(p)).flatten()
                for g, p in zip(grads, encoder, strict=True)
            ]
        )
        flat = self.trainer.strategy.reduce(flat, reduce_op="sum")  # ranks hold disjoint rows of G's columns
        if aux is not None:
            flat = flat + self._reduce(flat_gradients(aux, encoder))
        write_gradients(encoder, flat)
        plain = torch.stack(parts).sum() + (0.0 if aux is None else aux)
        write_gradients(rest, self._reduce(flat_gradients(plain, rest)))
        return G

    def _reduce(self, x: Tensor) -> Tensor:
        return self.trainer.strategy.reduce(x, reduce_op="mean")

    @staticmethod
    def _skip_step(params: list[nn.Parameter]) -> None:
        """Non-finite gradients under fp16: the scaler sees them, skips the step and lowers its scale."""
        for p in params:
            p.grad = torch.full_like(p, float("inf"))

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Under fp16 this runs after the scaler has unscaled the gradients, so the norm is the true one.
        if self.balancer is not None and self.clip_grad_norm is not None:
            self.clip_gradients(
                optimizer, gradient_clip_val=self.clip_grad_norm, gradient_clip_algorithm="norm"
            )

    def _log_balancer(self, weights: Tensor | None, G: Tensor | None) -> None:
        """Per-task weights and pairwise gradient cosines, at the loggers' interval."""
        if not self.loggers or (self.global_step + 1) % self._log_interval():
            return
        tasks = self.task_names
        metrics: dict[str, float] = {}
        if weights is not None and len(weights) == len(tasks):
            metrics.update({f"balancer/weight/{t}": float(w) for t, w in zip(tasks, weights, strict=True)})
        if G is not None:
            # From the [T, T] Gram matrix: normalising G itself would copy the whole [T, D] matrix.
            gram = gram_matrix(G)
            norms = np.sqrt(np.clip(np.diag(gram), np.finfo(np.float64).tiny, None))
            cosines = (gram / np.outer(norms, norms)).tolist()
            for i, a in enumerate(tasks):
                for j in range(i + 1, len(tasks)):
                    metrics[f"balancer/cos/{a}/{tasks[j]}"] = cosines[i][j]
        for logger in self.loggers:
            logger.log_metrics(metrics, step=self.global_step)

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict[str, Any]:
        """Returns the neck's statistics (e.g. gate weights) for callbacks such as ExpertDiagnostics."""
        step = self.task_losses(batch)
        self._record(step, batch, "val")
        return {"stats": step.stats}

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict[str, Any]:
        step = self.task_losses(batch)
        self._record(step, batch, "test")
        return {"stats": step.stats}

    def predict_step(
        self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Tensor]:
        """Every task's user-facing predictions (probabilities, classes or values) for every row.

        Labels play no part: rows without labels (all ``-100`` / NaN) are predicted too.
        """
        raw = self(batch["inputs"])
        return {task: self.heads[task].predict(p) for task, p in raw.items()}

    # ----------------------------------------------------------------------------------- metrics
    def _epoch_end(self, stage: Stage) -> None:
        if stage not in self.metrics:
            return
        primaries: list[Tensor] = []
        collections = self.metrics[stage]
        # Computing a metric all-gathers its state, so every rank must compute the same tasks: those
        # that any rank saw (a rank's shard of a small set, or a short sanity check, may miss a task).
        seen = torch.tensor(
            [any(m.update_called for m in c.values()) for c in collections.values()], device=self.device
        )
        seen = self.trainer.strategy.reduce(seen.float(), reduce_op="sum") > 0 if self._trainer else seen
        for (task, collection), was_seen in zip(collections.items(), seen.tolist(), strict=True):
            if not was_seen:
                continue
            values = collection.compute()
            collection.reset()
            self.log_dict(values)
            head = self.heads[task]
            primary = values[f"{stage}/{task}/{head.primary_metric}"]
            if task in self.mean_over:
                primaries.append(primary if head.higher_is_better else -primary)
        if primaries and stage != "train":
            self.log(f"{stage}/mean", torch.stack([p.float() for p in primaries]).mean(), prog_bar=True)

    def on_train_epoch_end(self) -> None:
        for key, value in self._train_losses.epoch_means("train/{}/loss_epoch").items():
            self.log(key, value)
        if self.weighting is not None:
            self.weighting.epoch_end()
        scheduler = self.lr_schedulers() if self.balancer is not None else None
        if scheduler is not None and self.scheduler_interval == "epoch":
            scheduler.step()  # manual optimization steps its scheduler itself
        self._epoch_end("train")

    def _log_interval(self) -> int:
        return self.trainer.log_every_n_steps if self._trainer is not None else 1

    def on_validation_epoch_end(self) -> None:
        self._epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._epoch_end("test")

    # ----------------------------------------------------------------------------------- optimizer
    def configure_optimizers(self) -> Any:
        groups: list[dict[str, Any]] = []
        for params, lr in (
            (list(self.encoder.parameters()), self.encoder_lr),
            (list(self.neck.parameters()) + list(self.heads.parameters()), self.head_lr),
        ):
            params = [p for p in params if p.requires_grad]
            if params:
                groups.append({"params": params} if lr is None else {"params": params, "lr": lr})
        own = (
            [p for p in self.weighting.parameters() if p.requires_grad] if self.weighting is not None else []
        )
        if own:  # learnt loss weights: no weight decay, which would pull them towards 0 for no reason
            lr = self.weighting.lr if self.weighting.lr is not None else self.head_lr
            groups.append({"params": own, "weight_decay": 0.0, **({} if lr is None else {"lr": lr})})
        optimizer = self.optimizer(groups)
        if self.lr_scheduler is None:
            return optimizer
        scheduler = self.lr_scheduler(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval},
        }


def _rescale(x: Tensor, factor: float) -> Tensor:
    """``x * factor`` for the fp16 loss scale; ``x`` itself without a scale (no copy of a large ``G``)."""
    return x if factor == 1.0 else x * factor
