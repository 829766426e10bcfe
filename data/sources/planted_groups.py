"""Planted task groups: related tasks within a group, unrelated tasks across groups (MMoE generator)."""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from mtl.data.sources.base import DataSource, TaskSplits
from mtl.data.sources.mmoe_synthetic import (
    check_generator_arguments,
    correlated_weights,
    equicorrelation,
    mmoe_examples,
    orthonormal_frame,
    shared_input_splits,
)

__all__ = ["PlantedGroups"]

logger = logging.getLogger(__name__)


class PlantedGroups(DataSource):
    """``K`` groups of related tasks, independent across groups: a ground truth for task grouping.

    An extension of the synthetic generator of Ma et al., "Modeling Task Relationships in Multi-task
    Learning with Multi-gate Mixture-of-Experts", KDD 2018, section 3.2 (see `MMoESynthetic`):

    1. draw ``K m`` orthonormal vectors in ``R^d`` (``m`` = ``tasks_per_group``, ``d`` = ``input_dim``)
       and split them into ``K`` frames ``U_g`` of ``m`` rows;
    2. within group ``g``, the weights are the MMoE construction on its own frame, ``W_g = c L U_g``
       (``L L^T`` the equicorrelation matrix of ``p`` = ``correlation``): every weight has norm ``c``,
       two tasks of a group have cosine ``p``, and two tasks of different groups are orthogonal
       (their frames are), so their linear parts ``w_i^T x`` are uncorrelated;
    3. ``x ~ N(0, I_d)`` shared by all tasks, ``y_i = w_i^T x + sum_k sin(alpha_k w_i^T x + beta_k) + eps_i`` as in
       the MMoE paper (``alpha, beta ~ N(0, 1)`` drawn once, shared by all tasks).

    Two options, off by default, go beyond the MMoE construction. ``sines_per_group``: every group draws
    its own ``alpha, beta``, so tasks of different groups differ in their nonlinearity as well as their
    direction (with shared sines every task's label is the same function of its own projection, which
    a shared network can partly reuse across groups). ``shared_inputs=False``: every task draws its own
    inputs (and the labels on them), as when each task comes from its own data set; a related task then
    brings examples the task has not seen, not only a second noisy label on the same inputs.

    The Pearson correlation of the linear parts is therefore block-diagonal, `correlation_matrix`:
    ``p`` within a group, 0 across groups, 1 on the diagonal. Since ``x`` is Gaussian and the groups'
    linear parts are orthogonal projections, tasks of different groups are *independent*, not merely
    uncorrelated. With ``task_type="classification"`` each task's label is ``1[y_i > median]`` (the
    median of its training labels), a balanced binary task with the same group structure.

    Tasks are named ``g{group}_t{index}``; `group_labels` gives each task's group index (in the order
    of ``tasks``) and `groups` the task names of every group, both available before `load`. Inputs:
    ``{"numeric": float32 [N, d]}``, one tensor shared by every task unless ``shared_inputs=False`` (as
    `TabularMLPEncoder` reads it); targets ``float32 [N]`` (regression) or ``int64 [N]`` (classification).

    After `load`, ``weights`` (``float64 [T, d]``), ``alphas``, ``betas`` (``float64 [num_sines]``, or
    ``[T, num_sines]``, one row per task, with ``sines_per_group``) and, for classification,
    ``thresholds`` (``float64 [T]``) hold the generator's parameters.

    Args:
        groups: ``K``, the number of groups (>= 1).
        tasks_per_group: ``m``, tasks in each group (>= 1).
        correlation: ``p``, the cosine of two task weights within a group, in ``[-1/(m-1), 1]``.
        task_type: ``"regression"`` (raw labels, as in the MMoE paper) or ``"classification"``.
        num_train: training examples (>= 1); ``num_val`` / ``num_test``: 0 for no such split.
        input_dim: ``d`` (>= ``K m``).
        num_sines: number of sine terms (>= 0).
        noise_std: standard deviation of the label noise (>= 0).
        scale: ``c``, the norm of every weight vector (> 0).
        sines_per_group: every group draws its own ``alpha, beta`` (default: one draw for all tasks).
        shared_inputs: one input tensor for all tasks (default); ``False``: each task its own inputs.
        seed: seed of the weights, the sines, the inputs and the noise.
    """

    def __init__(
        self,
        groups: int = 3,
        tasks_per_group: int = 3,
        correlation: float = 0.9,
        task_type: Literal["regression", "classification"] = "regression",
        num_train: int = 4000,
        num_val: int = 1000,
        num_test: int = 1000,
        input_dim: int = 32,
        num_sines: int = 10,
        noise_std: float = 0.1,
        scale: float = 1.0,
        sines_per_group: bool = False,
        shared_inputs: bool = True,
        seed: int = 0,
    ) -> None:
        for name, value in (("groups", groups), ("tasks_per_group", tasks_per_group)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Expected `{name}` to be an integer >= 1, but got {value!r}.")
        lowest = -1.0 if tasks_per_group <= 2 else -1.0 / (tasks_per_group - 1)
        if not lowest <= correlation <= 1.0:
            raise ValueError(
                f"Expected `correlation` in [{lowest:.4g}, 1] for {tasks_per_group} tasks per group (beneath "
                f"it no {tasks_per_group} vectors have that pairwise cosine), but got {correlation}."
            )
        if task_type not in ("regression", "classification"):
            raise ValueError(
                f"Expected `task_type` to be 'regression' or 'classification', but got {task_type!r}."
            )
        if input_dim < groups * tasks_per_group:
            raise ValueError(
                f"Expected `input_dim` >= groups x tasks_per_group ({groups * tasks_per_group}) orthonormal "
                f"directions, but got {input_dim}. Raise `input_dim` or use fewer tasks."
            )
        check_generator_arguments(num_train, num_val, num_test, num_sines, noise_std, scale)
        self.num_groups = groups
        self.tasks_per_group = tasks_per_group
        self.correlation = float(correlation)
        self.task_type = task_type
        self.num_train, self.num_val, self.num_test = num_train, num_val, num_test
        self.input_dim = input_dim
        self.num_sines = num_sines
        self.noise_std = float(noise_std)
        self.scale = float(scale)
        self.sines_per_group = sines_per_group
        self.shared_inputs = shared_inputs
        self.seed = seed
        self.available_tasks = tuple(f"g{g}_t{i}" for g in range(groups) for i in range(tasks_per_group))
        self.tasks = self.available_tasks
        #: Each task's true group index, in the order of ``tasks``.
        self.group_labels: tuple[int, ...] = tuple(g for g in range(groups) for _ in range(tasks_per_group))
        self.weights: Tensor | None = None
        self.alphas: Tensor | None = None
        self.betas: Tensor | None = None
        self.thresholds: Tensor | None = None

    @property
    def groups(self) -> list[list[str]]:
        """The true groups: the task names of every group."""
        return [
            [t for t, g in zip(self.tasks, self.group_labels, strict=True) if g == k]
            for k in range(self.num_groups)
        ]

    def correlation_matrix(self) -> Tensor:
        """The closed-form Pearson correlation of the linear parts ``w_i^T x`` (``[T, T]``): block-diagonal,
        ``p`` within a group and 0 across groups."""
        return torch.block_diag(
            *[equicorrelation(self.tasks_per_group, self.correlation) for _ in range(self.num_groups)]
        )

    def load(self) -> dict[str, TaskSplits]:
        rng = np.random.default_rng(self.seed)
        m = self.tasks_per_group
        frame = orthonormal_frame(rng, self.num_groups * m, self.input_dim)
        weights = np.concatenate(
            [
                correlated_weights(frame[g * m : (g + 1) * m], self.correlation, self.scale)
                for g in range(self.num_groups)
            ]
        )
        sine_shape = (self.num_groups, self.num_sines) if self.sines_per_group else (self.num_sines,)
        alphas, betas = rng.standard_normal(sine_shape), rng.standard_normal(sine_shape)
        if self.sines_per_group:
            alphas, betas = np.repeat(alphas, m, axis=0), np.repeat(betas, m, axis=0)  # one row per task
        sizes = (self.num_train, self.num_val, self.num_test)
        if self.shared_inputs:
            x, y = mmoe_examples(rng, sum(sizes), weights, alphas, betas, self.noise_std)
        else:
            # One row of sines per task in either case (a view when all tasks share one draw).
            rows = (len(weights), self.num_sines)
            task_alphas, task_betas = np.broadcast_to(alphas, rows), np.broadcast_to(betas, rows)
            draws = [
                mmoe_examples(
                    rng,
                    sum(sizes),
                    weights[i : i + 1],
                    task_alphas[i : i + 1],
                    task_betas[i : i + 1],
                    self.noise_std,
                )
                for i in range(len(weights))
            ]
            y = torch.cat([targets for _, targets in draws], dim=1)
        self.weights = torch.from_numpy(weights)
        self.alphas = torch.from_numpy(alphas)
        self.betas = torch.from_numpy(betas)
        if self.task_type == "classification":
            self.thresholds = y[: self.num_train].double().median(dim=0).values
            y = (y.double() > self.thresholds).long()
        logger.info(
            "Planted groups: %d groups of %d %s tasks, within-group correlation %.3g, %s examples.",
            self.num_groups,
            m,
            self.task_type,
            self.correlation,
            sizes,
        )
        if self.shared_inputs:
            return shared_input_splits(self.tasks, x, y, sizes)
        return {
            task: shared_input_splits((task,), inputs, y[:, i : i + 1], sizes)[task]
            for i, (task, (inputs, _)) in enumerate(zip(self.tasks, draws, strict=True))
        }

    def input_spec(self) -> dict[str, Any]:
        return {"num_numeric": self.input_dim, "cardinalities": []}
