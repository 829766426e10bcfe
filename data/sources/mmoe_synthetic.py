"""The synthetic regression tasks of the MMoE paper, with a controllable task correlation."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mtl.data.sources.base import DataSource, TaskSplits
from mtl.data.task_dataset import TaskDataset

__all__ = [
    "MMoESynthetic",
    "check_generator_arguments",
    "correlated_weights",
    "equicorrelation",
    "mmoe_examples",
    "orthonormal_frame",
    "shared_input_splits",
]

logger = logging.getLogger(__name__)


def check_generator_arguments(
    num_train: int, num_val: int, num_test: int, num_sines: int, noise_std: float, scale: float
) -> None:
    """Raise ``ValueError`` for split sizes, sine counts, noise or scale the MMoE generator cannot use."""
    if num_train < 1 or num_val < 0 or num_test < 0:
        raise ValueError(
            f"Expected `num_train` >= 1 and `num_val`, `num_test` >= 0, but got {num_train}, {num_val}, "
            f"{num_test}."
        )
    if num_sines < 0:
        raise ValueError(f"Expected `num_sines` >= 0, but got {num_sines}.")
    if not noise_std >= 0:
        raise ValueError(f"Expected `noise_std` >= 0, but got {noise_std}.")
    if not scale > 0:
        raise ValueError(f"Expected `scale` > 0, but got {scale}.")


class MMoESynthetic(DataSource):
    """Regression tasks whose relatedness is set by one number (Ma et al., KDD 2018, section 3.2).

    Source: Ma, Zhao, Yi, Chen, Hong, Chi, "Modeling Task Relationships in Multi-task Learning with
    Multi-gate Mixture-of-Experts", KDD 2018, section 3.2 ("Synthetic Data Generation"). For two tasks
    the generator is the paper's:

    1. draw orthonormal ``u_1, u_2`` in ``R^d`` (``d = input_dim``);
    2. ``w_1 = c u_1``, ``w_2 = c (p u_1 + sqrt(1 - p^2) u_2)`` with ``c = scale``, ``p = correlation``;
    3. ``x ~ N(0, I_d)``;
    4. ``y_i = w_i^T x + sum_{k=1..m} sin(alpha_k w_i^T x + beta_k) + eps_i`` with ``m = num_sines``
       and ``eps_i ~ N(0, noise_std^2)`` independent per task and example.

    The paper's noise is ``N(0, 0.01)`` (variance), i.e. ``noise_std = 0.1``; its experiments use
    ``d = 100``. The paper calls ``alpha_k, beta_k`` "given parameters" without stating their values;
    here they are drawn once per ``seed`` from ``N(0, 1)`` and shared by all tasks (exposed as
    ``alphas``/``betas``). ``p`` is the cosine similarity of the weight vectors, hence the Pearson
    correlation of the linear parts ``w_i^T x`` (exactly, since ``x`` is standard normal); the labels'
    correlation is lower because of the sine terms and the noise, and falls as ``p`` falls.

    More than two tasks (``T = tasks``): the weight vectors are ``w = c L U``, where ``U`` holds ``T``
    orthonormal rows and ``L`` is the lower-triangular Cholesky factor of the equicorrelation matrix
    ``G = (1 - p) I + p 1 1^T``. Every ``w_i`` then has norm ``c`` and every pair has cosine ``p``
    (``w_i^T w_j = c^2 G_ij``), so the pairwise correlation of any two linear parts is ``p``. For
    ``T = 2`` this is exactly the paper's construction (``L = [[1, 0], [p, sqrt(1 - p^2)]]``). ``G`` is
    a correlation matrix only for ``-1/(T - 1) <= p <= 1``, hence that range (``[-1, 1]`` for two
    tasks). Tasks are named ``t0, t1, ...``.

    Inputs: ``x``, ``float32 [N, input_dim]``, one tensor shared by all tasks. Targets: raw (not
    standardised, as in the paper) ``float32 [N]`` per task; their scale is about ``c^2 + m/2``
    in variance, so compare losses across settings with care. Train, validation and test examples are
    i.i.d. draws of the same generator (the weights and sines are common to all splits).

    After `load`, ``weights`` (``float64 [T, input_dim]``), ``alphas`` and ``betas`` (``float64 [m]``)
    hold the generator's parameters.

    Args:
        tasks: number of tasks ``T`` (>= 1).
        correlation: ``p``, the pairwise cosine of the task weight vectors; in ``[-1/(T-1), 1]``.
        num_train: number of training examples (>= 1).
        num_val: number of validation examples (0: no validation split).
        num_test: number of test examples (0: no test split).
        input_dim: ``d``, the input dimension (>= ``T``).
        num_sines: ``m``, the number of sine terms (>= 0).
        noise_std: standard deviation of the label noise (>= 0).
        scale: ``c``, the norm of every weight vector (> 0).
        seed: seed of the weights, the sines, the inputs and the noise.
    """

    def __init__(
        self,
        tasks: int = 2,
        correlation: float = 0.5,
        num_train: int = 10000,
        num_val: int = 1000,
        num_test: int = 1000,
        input_dim: int = 100,
        num_sines: int = 10,
        noise_std: float = 0.1,
        scale: float = 1.0,
        seed: int = 0,
    ) -> None:
        if isinstance(tasks, bool) or not isinstance(tasks, int) or tasks < 1:
            raise ValueError(f"Expected `tasks` to be a number of tasks >= 1, but got {tasks!r}.")
        lowest = -1.0 if tasks <= 2 else -1.0 / (tasks - 1)
        if not lowest <= correlation <= 1.0:
            raise ValueError(
                f"Expected `correlation` in [{lowest:.4g}, 1] for {tasks} tasks (beneath it no {tasks} "
                f"vectors have that pairwise cosine), but got {correlation}."
            )
        if input_dim < tasks:
            raise ValueError(
                f"Expected `input_dim` >= tasks ({tasks}) orthonormal directions, but got {input_dim}."
            )
        check_generator_arguments(num_train, num_val, num_test, num_sines, noise_std, scale)
        self.num_tasks = tasks
        self.available_tasks = tuple(f"t{i}" for i in range(tasks))
        self.tasks = self.available_tasks
        self.correlation = float(correlation)
        self.num_train = num_train
        self.num_val = num_val
        self.num_test = num_test
        self.input_dim = input_dim
        self.num_sines = num_sines
        self.noise_std = float(noise_std)
        self.scale = float(scale)
        self.seed = seed
        self.weights: Tensor | None = None
        self.alphas: Tensor | None = None
        self.betas: Tensor | None = None

    def correlation_matrix(self) -> Tensor:
        """The closed-form Pearson correlation of the linear parts ``w_i^T x``: ``G`` (``[T, T]``)."""
        return equicorrelation(self.num_tasks, self.correlation)

    def load(self) -> dict[str, TaskSplits]:
        rng = np.random.default_rng(self.seed)
        frame = orthonormal_frame(rng, self.num_tasks, self.input_dim)
        weights = correlated_weights(frame, self.correlation, self.scale)
        alphas = rng.standard_normal(self.num_sines)
        betas = rng.standard_normal(self.num_sines)
        sizes = (self.num_train, self.num_val, self.num_test)
        x, y = mmoe_examples(rng, sum(sizes), weights, alphas, betas, self.noise_std)

        self.weights = torch.from_numpy(weights)
        self.alphas = torch.from_numpy(alphas)
        self.betas = torch.from_numpy(betas)
        logger.info(
            "MMoE synthetic: %d tasks, correlation %.3g, %s examples of dimension %d.",
            self.num_tasks,
            self.correlation,
            sizes,
            self.input_dim,
        )
        return shared_input_splits(self.tasks, x, y, sizes)

    def input_spec(self) -> dict[str, Any]:
        return {"num_numeric": self.input_dim, "cardinalities": []}


def equicorrelation(num_tasks: int, correlation: float) -> Tensor:
    """``G = (1 - p) I + p 1 1^T`` (``[T, T]``, float64): unit diagonal, every off-diagonal entry ``p``."""
    eye = torch.eye(num_tasks, dtype=torch.float64)
    return (1.0 - correlation) * eye + correlation * torch.ones(num_tasks, num_tasks, dtype=torch.float64)


def orthonormal_frame(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    """``rows`` orthonormal vectors in ``R^dim`` (``[rows, dim]``), uniformly random under ``rng``."""
    # QR of a Gaussian matrix gives a uniformly random orthonormal frame.
    q, r = np.linalg.qr(rng.standard_normal((dim, rows)))
    return (q * np.sign(np.diag(r))).T  # sign fix: makes the frame a function of the draw alone


def correlated_weights(frame: np.ndarray, correlation: float, scale: float) -> np.ndarray:
    """Task weight vectors ``w = c L U`` (``[T, d]``) of norm ``c`` and pairwise cosine ``p``.

    ``U`` = ``frame`` holds ``T`` orthonormal rows, ``L`` is the lower Cholesky factor of the
    equicorrelation matrix ``G`` (`equicorrelation`), ``c`` = ``scale``, ``p`` = ``correlation``; then
    ``w_i^T w_j = c^2 G_ij``. For two tasks, ``w_1 = c u_1``, ``w_2 = c (p u_1 + sqrt(1 - p^2) u_2)``.
    """
    return scale * _cholesky_psd(equicorrelation(len(frame), correlation).numpy()) @ frame


def mmoe_examples(
    rng: np.random.Generator,
    num_examples: int,
    weights: np.ndarray,
    alphas: np.ndarray,
    betas: np.ndarray,
    noise_std: float,
) -> tuple[Tensor, Tensor]:
    """Draw ``x ~ N(0, I_d)`` and ``y_i = w_i^T x + sum_k sin(alpha_k w_i^T x + beta_k) + eps_i``, with
    ``eps_i ~ N(0, noise_std^2)`` (Ma et al., KDD 2018, section 3.2).

    Returns ``x`` ``float32 [N, d]`` and ``y`` ``float32 [N, T]`` for weights ``[T, d]``.
    """
    x = rng.standard_normal((num_examples, weights.shape[1]))
    linear = x @ weights.T  # [N, T]
    phase = linear[:, :, None] * alphas + betas  # [N, T, m]
    y = linear + np.sin(phase).sum(axis=2) + noise_std * rng.standard_normal(linear.shape)
    return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.float32))


def shared_input_splits(
    tasks: Sequence[str], x: Tensor, y: Tensor, sizes: Sequence[int]
) -> dict[str, TaskSplits]:
    """Train / validation / test splits of consecutive ``sizes`` rows, one input tensor per split shared
    by every task (column ``i`` of ``y`` is task ``i``'s target); an empty split is absent."""
    datasets: dict[str, list[TaskDataset | None]] = {task: [] for task in tasks}
    for x_split, targets in zip(x.split(list(sizes)), y.split(list(sizes)), strict=True):
        # Inputs follow the tabular convention, so `TabularMLPEncoder` reads them as they are.
        inputs = {"numeric": x_split}
        for i, task in enumerate(tasks):
            dataset = TaskDataset(inputs, targets[:, i].contiguous()) if len(x_split) else None
            datasets[task].append(dataset)
    return {task: TaskSplits(*datasets[task]) for task in tasks}  # type: ignore[arg-type]


def _cholesky_psd(g: np.ndarray) -> np.ndarray:
    """Lower-triangular ``L`` with ``L L^T = g`` for a positive *semi*-definite ``g``.

    ``np.linalg.cholesky`` rejects singular matrices, which the valid end points ``p = 1`` (identical
    tasks) and ``p = -1/(T-1)`` produce; a zero pivot just leaves its column zero here.
    """
    n = len(g)
    low = np.zeros_like(g)
    for j in range(n):
        pivot = g[j, j] - low[j, :j] @ low[j, :j]
        low[j, j] = math.sqrt(max(pivot, 0.0))
        for i in range(j + 1, n):
            rest = g[i, j] - low[i, :j] @ low[j, :j]
            low[i, j] = rest / low[j, j] if low[j, j] > 1e-12 else 0.0
    return low
