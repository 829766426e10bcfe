"""Data-map task affinity and clustering (STG-MTL), measured at the end of every training epoch.

Where the examples come from: training batches carry no example ids (`mtl.data.collate` keeps rows,
targets and routes only), so the data map is measured on a fixed probe set drawn once, with a seeded
generator, from each task's labelled training examples, and evaluated (in eval mode, without
gradients) at the end of every training epoch. When the tasks share their training inputs (the
setting of the paper: every task labels the same examples, as in `MMoESynthetic`, `PlantedGroups` or
Census-Income), the probe rows are the same for every task, so the tasks' data maps line up example by
example. When they do not (tasks with their own data sets, such as the text tasks), a task's feature
vector summarises its data map by quantiles instead, which needs no alignment.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import move_data_to_device
from torch import Tensor

from mtl.data.collate import collate
from mtl.data.tagged_concat import TaggedConcat
from mtl.data.task_dataset import TaskDataset
from mtl.grouping.affinity import AffinityCallback
from mtl.grouping.confidence import check_head, target_scale, true_label_probability
from mtl.grouping.fuzzy_memberships import fuzzy_memberships, kmeans
from mtl.heads import RegressionHead
from mtl.labels import is_labelled

__all__ = ["DataMapAffinity", "data_map", "feature_similarity"]

log = logging.getLogger(__name__)

Features = Literal["auto", "examples", "quantiles"]


def data_map(probabilities: Tensor) -> tuple[Tensor, Tensor]:
    """Confidence and variability of each example from its true-label probabilities ``[E, ...]``.

    Swayamdipta et al. (EMNLP 2020, Eq. 1-2) over ``E`` epochs: confidence ``μ = (1/E) Σ_e p_e``,
    variability ``sqrt((1/E) Σ_e (p_e - μ)²)`` (the population standard deviation). Returns two
    tensors of the trailing shape, float64.
    """
    if probabilities.dim() < 1 or probabilities.shape[0] < 1:
        raise ValueError(
            f"Expected probabilities of shape [E, ...] with at least one epoch, but got {tuple(probabilities.shape)}."
        )
    p = probabilities.double()
    return p.mean(dim=0), p.std(dim=0, correction=0)


def feature_similarity(features: Tensor) -> Tensor:
    """``A[i, j] = exp(-||f_i - f_j||² / median_{k<l} ||f_k - f_l||²)`` for task features ``[T, F]``.

    The Gaussian kernel of the Euclidean distance that k-means and the fuzzy memberships cluster on,
    with the median heuristic for its width, so the scale of the features does not matter: 1 on the
    diagonal and for identical tasks, ``1/e`` at the median distance, towards 0 for far-apart tasks.
    """
    features = features.double()
    squared = torch.cdist(features, features) ** 2
    t = features.shape[0]
    off = squared[~torch.eye(t, dtype=torch.bool)]
    width = off.median() if off.numel() else torch.tensor(0.0, dtype=torch.float64)
    if width <= 0:
        width = off.max() if off.numel() and off.max() > 0 else torch.tensor(1.0, dtype=torch.float64)
    return torch.exp(-squared / width)


def _same_inputs(datasets: Sequence[TaskDataset]) -> bool:
    """Whether every dataset holds the very same training inputs, row for row."""
    first = datasets[0]

    def same(a: Any, b: Any) -> bool:
        if a is b:
            return True
        return isinstance(a, Tensor) and isinstance(b, Tensor) and a.shape == b.shape and torch.equal(a, b)

    for other in datasets[1:]:
        if len(other) != len(first):
            return False
        a, b = first.inputs, other.inputs
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            if a.keys() != b.keys() or not all(same(a[k], b[k]) for k in a):
                return False
        elif not same(a, b):
            return False
    return True


class DataMapAffinity(AffinityCallback):
    """Data-map task affinity and task clustering (STG-MTL) of a `MultiTaskModule`'s tasks.

    Source: Sherif, Abid, Elattar, ElHelw, "STG-MTL: Scalable Task Grouping for Multi-Task Learning
    Using Data Maps", DMLR workshop at ICML 2023 (arXiv:2307.03374); data maps from Swayamdipta,
    Schwartz, Lourie, Wang, Hajishirzi, Smith, Smith, Choi, "Dataset Cartography", EMNLP 2020.

    At the end of every training epoch the model's probability of each probe example's true label is
    recorded per task (`mtl.grouping.confidence`: softmax / sigmoid for classification; for regression
    the Gaussian likelihood ``exp(-(ŷ - y)² / (2 s²))`` with ``s`` the standard deviation of the task's
    probe targets). Over the epochs so far each example gets a confidence (mean) and a variability
    (standard deviation), `data_map`. A task's feature vector is its data map:

    * ``features="examples"`` (the paper's): the confidences and variabilities of the probe examples,
      concatenated, ``[2N]``; needs the tasks to share their training inputs (same probe rows).
    * ``features="quantiles"``: the ``num_quantiles`` quantiles (at ``(q + 0.5) / Q``) of the task's
      confidences and of its variabilities, ``[2Q]``; an order-free summary for tasks with their own
      examples (an extension: the paper's tasks always share examples).
    * ``features="auto"``: ``examples`` when the tasks share inputs, else ``quantiles``.

    Clustering (`memberships`, `clusters`): k-means on the task vectors, then the fuzzy c-means
    memberships of every task in the k-means clusters, with fuzziness ``m`` (the paper's default
    pipeline, `mtl.grouping.fuzzy_memberships`). STG-MTL then trains one model per cluster with the
    memberships as per-task loss weights (``mtl group --method datamap --membership-weights``). `affinity` (k-free, for the generic group selection) is
    the Gaussian-kernel similarity of the task vectors, `feature_similarity`: the same Euclidean
    geometry the clustering uses, scale-free, in ``(0, 1]``, higher for tasks with similar data maps.

    Under DDP every rank evaluates the whole probe set and the probabilities are averaged across
    ranks, so every rank holds the same data map. Needs ``data.layout: all_tasks`` (joint training of
    every task at every step, as the paper trains) and a `MultiTaskDataModule`.

    Hyper-parameters:
        probe_size: probe examples per task (all of a task's labelled examples if fewer).
        fuzziness: ``m`` of the fuzzy memberships (> 1; the authors' implementation uses 1.07).
        features: ``"auto"``, ``"examples"`` or ``"quantiles"`` (above).
        num_quantiles: ``Q`` of the quantile features.
        seed: seed of the probe draw and of k-means.

    Args:
        probe_size, fuzziness, features, num_quantiles, seed: see above.
        batch_size: probe examples per forward pass.
        directory: where the matrix is written at the end of fitting (see `AffinityCallback`).
    """

    method: ClassVar[str] = "datamap"

    def __init__(
        self,
        probe_size: int = 512,
        fuzziness: float = 1.07,
        features: Features = "auto",
        num_quantiles: int = 16,
        seed: int = 0,
        batch_size: int = 256,
        directory: str | Path | None = None,
    ) -> None:
        for name, value in (
            ("probe_size", probe_size),
            ("num_quantiles", num_quantiles),
            ("batch_size", batch_size),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Expected `{name}` to be an integer >= 1, but got {value!r}.")
        if features not in ("auto", "examples", "quantiles"):
            raise ValueError(
                f"Expected `features` to be one of 'auto', 'examples', 'quantiles', but got {features!r}."
            )
        if not fuzziness > 1:
            raise ValueError(
                f"Expected `fuzziness` (m) to be > 1, but got {fuzziness!r}. The paper uses 1.07."
            )
        super().__init__(directory)
        self.probe_size = probe_size
        self.fuzziness = float(fuzziness)
        self.features_kind: Features = features
        self.num_quantiles = num_quantiles
        self.seed = seed
        self.batch_size = batch_size
        #: Whether the probe rows are the same for every task (``examples`` features).
        self.aligned = False
        self._probes: dict[str, Tensor] = {}
        self._scales: dict[str, Tensor] = {}
        self._epochs: list[dict[str, Tensor]] = []

    # ------------------------------------------------------------------------------- probe set
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "fit":
            return
        datamodule = trainer.datamodule
        if not hasattr(datamodule, "datasets"):
            raise TypeError(
                f"Expected a MultiTaskDataModule (with `datasets(split)`), but got {type(datamodule).__name__}. "
                "The data-map affinity draws its probe examples from the training datasets."
            )
        for task in self.task_names:
            check_head(pl_module.heads[task], task)
        datasets = datamodule.datasets("train")
        self._choose_probes([datasets[t] for t in self.task_names])
        for task in self.task_names:
            if isinstance(pl_module.heads[task], RegressionHead):
                self._scales[task] = target_scale(self._targets(datasets[task], self._probes[task]))

    def _choose_probes(self, datasets: list[TaskDataset]) -> None:
        labelled = [is_labelled(ds.stacked_targets()) for ds in datasets]
        shared = _same_inputs(datasets)
        if shared:
            everywhere = torch.stack(labelled).all(dim=0)
            shared = bool(everywhere.any())
        if self.features_kind == "examples" and not shared:
            raise ValueError(
                "Expected tasks that share their training inputs with rows labelled for every task for "
                "`features='examples'`, but the tasks' training sets differ (or no row carries every "
                "task's label). Use `features='quantiles'` (or 'auto')."
            )
        self.aligned = shared and self.features_kind != "quantiles"
        generator = torch.Generator().manual_seed(self.seed)
        if self.aligned:
            rows = everywhere.nonzero().squeeze(1)
            chosen = rows[torch.randperm(len(rows), generator=generator)[: self.probe_size]].sort().values
            self._probes = dict.fromkeys(self.task_names, chosen)
            return
        self._probes = {}
        for task, mask in zip(self.task_names, labelled, strict=True):
            rows = mask.nonzero().squeeze(1)
            self._probes[task] = (
                rows[torch.randperm(len(rows), generator=generator)[: self.probe_size]].sort().values
            )

    @staticmethod
    def _targets(dataset: TaskDataset, rows: Tensor) -> Tensor:
        return dataset.stacked_targets()[rows]

    # ------------------------------------------------------------------------------- recording
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        datasets = trainer.datamodule.datasets("train")
        collate_fn = getattr(trainer.datamodule, "collate_fn", None)
        was_training = pl_module.training
        pl_module.eval()
        probabilities: dict[str, Tensor] = {}
        try:
            with torch.no_grad():
                for task in self.task_names:
                    probabilities[task] = self._probe(pl_module, task, datasets[task], collate_fn)
        finally:
            pl_module.train(was_training)
        sizes = [len(probabilities[t]) for t in self.task_names]
        # float32 for the collective: some devices (MPS) have no float64.
        flat = torch.cat([probabilities[t] for t in self.task_names]).float().to(pl_module.device)
        flat = trainer.strategy.reduce(flat, reduce_op="mean").detach().cpu().double()
        self._epochs.append(dict(zip(self.task_names, flat.split(sizes), strict=True)))

    def _probe(self, pl_module: LightningModule, task: str, dataset: TaskDataset, collate_fn: Any) -> Tensor:
        """``[N]`` the true-label probability of every probe example of ``task``."""
        concat = TaggedConcat({task: dataset})
        collate_batch = collate_fn({task: dataset}) if collate_fn is not None else collate
        head = pl_module.heads[task]
        out: list[Tensor] = []
        for rows in self._probes[task].split(self.batch_size):
            batch = move_data_to_device(collate_batch(concat.__getitems__(rows.tolist())), pl_module.device)
            predictions = pl_module(batch["inputs"], {task: None})[task]
            targets = self._targets(dataset, rows).to(pl_module.device)
            out.append(true_label_probability(head, predictions, targets, self._scales.get(task)).cpu())
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)

    # ------------------------------------------------------------------------------- results
    @property
    def measurements(self) -> int:
        """The number of epochs recorded."""
        return len(self._epochs)

    def probabilities(self) -> dict[str, Tensor]:
        """Per task, the true-label probability of its probe examples at every recorded epoch ``[E, N]``."""
        if not self._epochs:
            raise RuntimeError(
                "Expected at least one recorded epoch for the data map, but got none. Train for at least "
                "one epoch (two or more for a meaningful variability) with the callback attached."
            )
        return {t: torch.stack([epoch[t] for epoch in self._epochs]) for t in self.task_names}

    def probe_rows(self, task: str) -> Tensor:
        """The training-set rows of ``task`` that form its probe set (sorted)."""
        return self._probes[task]

    def data_map(self) -> dict[str, tuple[Tensor, Tensor]]:
        """Per task, the (confidence ``[N]``, variability ``[N]``) of its probe examples so far."""
        return {t: data_map(p) for t, p in self.probabilities().items()}

    def features(self) -> Tensor:
        """``[T, F]``: each task's data-map feature vector (see the class docstring)."""
        maps = self.data_map()
        if self.aligned:
            return torch.stack([torch.cat(maps[t]) for t in self.task_names])
        levels = (torch.arange(self.num_quantiles, dtype=torch.float64) + 0.5) / self.num_quantiles
        rows = []
        for task in self.task_names:
            confidence, variability = maps[task]
            if confidence.numel() == 0:
                raise RuntimeError(f"Expected labelled training examples of task `{task}`, but it has none.")
            rows.append(torch.cat([confidence.quantile(levels), variability.quantile(levels)]))
        return torch.stack(rows)

    def affinity(self) -> Tensor:
        """``A`` ``[T, T]``: the Gaussian-kernel similarity of the tasks' data-map vectors (`feature_similarity`)."""
        return feature_similarity(self.features())

    def clusters(self, k: int) -> Tensor:
        """``[T]`` the k-means cluster of each task (hard)."""
        return kmeans(self.features(), k, seed=self.seed)[1]

    def memberships(self, k: int) -> Tensor:
        """``[T, k]`` fuzzy memberships of the tasks in the ``k`` k-means clusters (rows sum to 1)."""
        features = self.features()
        centroids, _ = kmeans(features, k, seed=self.seed)
        return fuzzy_memberships(features, centroids, self.fuzziness)

    # ------------------------------------------------------------------------------- files
    def save(self, directory: str | Path, loggers: Iterable[Any] = ()) -> dict[str, Path]:
        """`AffinityCallback.save`, plus ``datamap.pt``: the recorded data map and this callback's
        settings, so that `from_directory` can cluster the tasks after training (e.g. in another process)."""
        paths = super().save(directory, loggers)
        config = {
            "probe_size": self.probe_size,
            "fuzziness": self.fuzziness,
            "features": self.features_kind,
            "num_quantiles": self.num_quantiles,
            "seed": self.seed,
            "batch_size": self.batch_size,
        }
        paths["datamap"] = Path(directory) / "datamap.pt"
        torch.save({"config": config, "state": self.state_dict()}, paths["datamap"])
        return paths

    @classmethod
    def from_directory(cls, directory: str | Path) -> DataMapAffinity:
        """The callback as `save` left it in ``directory``: `affinity`, `features`, `clusters` and
        `memberships` work as at the end of training."""
        path = Path(directory) / "datamap.pt"
        if not path.is_file():
            raise FileNotFoundError(
                f"Expected `directory` to hold the datamap.pt that DataMapAffinity.save writes, but {path} "
                "does not exist. Pass the callback's output directory."
            )
        saved = torch.load(path, weights_only=True)
        callback = cls(**saved["config"])
        callback.load_state_dict(saved["state"])
        return callback

    # ------------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "task_names": list(self.task_names),
            "aligned": self.aligned,
            "probes": dict(self._probes),
            "scales": dict(self._scales),
            "epochs": list(self._epochs),
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.task_names = list(state_dict["task_names"])
        self.aligned = bool(state_dict["aligned"])
        self._probes = dict(state_dict["probes"])
        self._scales = dict(state_dict["scales"])
        self._epochs = list(state_dict["epochs"])
