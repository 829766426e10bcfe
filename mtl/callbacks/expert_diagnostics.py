"""Mixture-of-experts diagnostics: how the tasks use the experts, logged every validation epoch.

The necks report ``gate/{task}``, task ``t``'s mean gate weights ``[K]`` over its rows in a batch
(`mtl.necks.gates.MixtureNeck.task_features`). `ExpertDiagnostics` averages them over the validation
set into the utilisation matrix ``U`` ``[T, K]`` (row ``t``: task ``t``'s mean gate, summing to 1)
and logs the pure functions of ``U`` defined here, plus a heatmap of ``U``.

Limits of what the stats carry (both would need the necks to report more):

* Only batch means of the gates reach the callback, not per-example gates, so the entropies here are
  those of a task's *mean* gate (how spread its use of experts is over the data), not the mean of
  the per-example gate entropies (how soft each example's routing is). By concavity of the entropy
  the former is an upper bound on the latter.
* Expert activations are not reported, so the per-expert share of zero activations (the collapse
  HoME reports) is not computed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from mtl import plots
from mtl.plots import log_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "ExpertDiagnostics",
    "dead_experts",
    "effective_experts",
    "expert_load",
    "load_cv",
    "task_expert_mutual_information",
    "utilisation_entropy",
]

#: Per task x expert utilisation is logged as scalars only up to this many experts.
MAX_SCALAR_EXPERTS = 16


# ----------------------------------------------------------------------------------- pure functions
def _check_utilisation(U: Tensor) -> Tensor:
    if U.dim() != 2 or U.shape[0] < 1 or U.shape[1] < 1:
        raise ValueError(
            f"Expected a utilisation matrix of shape [T, K] with T, K >= 1, but got {tuple(U.shape)}."
        )
    return U.double()


def utilisation_entropy(U: Tensor) -> Tensor:
    """Entropy in nats of each task's utilisation: ``H_t = -Σ_e U[t, e] log U[t, e]`` (``0 log 0 = 0``).

    ``U`` ``[T, K]`` has rows summing to 1. Returns ``[T]``, between 0 (one expert) and ``log K``
    (uniform). With ``U`` the task's mean gate, this is the entropy of the mean gate, not the mean
    per-example gate entropy (the necks' stats carry no per-example gates); it bounds the latter
    from above.
    """
    U = _check_utilisation(U)
    return -torch.xlogy(U, U).sum(dim=-1)


def effective_experts(U: Tensor) -> Tensor:
    """Effective number of experts of each task: ``exp(H_t)`` (the perplexity of its utilisation).

    Returns ``[T]``, between 1 (a single expert) and ``K`` (uniform use of the ``K`` experts).
    """
    return utilisation_entropy(U).exp()


def expert_load(U: Tensor) -> Tensor:
    """Per-expert load ``L_e = (1/T) Σ_t U[t, e]``, the unweighted mean over tasks (``[K]``, sums to 1)."""
    return _check_utilisation(U).mean(dim=0)


def dead_experts(U: Tensor, threshold: float = 0.1) -> Tensor:
    """Experts that (almost) no task uses: ``L_e < threshold / K``, with ``L_e = (1/T) Σ_t U[t, e]``.

    The total utilisation of an expert across tasks is taken as its load ``L_e`` (mean over tasks,
    so that the fair share is ``1/K`` whatever ``T``): with ``threshold = 0.1`` an expert is dead when
    it gets less than a tenth of its fair share. Returns a boolean mask ``[K]``.
    """
    load = expert_load(U)
    return load < threshold / load.shape[0]


def load_cv(U: Tensor) -> Tensor:
    """Coefficient of variation of the per-expert load: ``CV = std(L) / mean(L)``.

    ``L_e = (1/T) Σ_t U[t, e]``; ``std`` is the population standard deviation over the ``K`` experts
    and ``mean(L) = 1/K``. 0 for perfectly balanced experts, ``sqrt(K - 1)`` when one expert takes
    all the load. Returns a scalar tensor.
    """
    load = expert_load(U)
    return load.std(correction=0) / load.mean()


def task_expert_mutual_information(U: Tensor, task_weights: Tensor | Sequence[float] | None = None) -> Tensor:
    """Mutual information in nats between task and expert under ``P(t, e) = p(t) U[t, e]``.

    ``MI = Σ_{t,e} P(t, e) log(P(t, e) / (p(t) P(e)))`` with ``P(e) = Σ_t p(t) U[t, e]``, i.e.
    ``H(P(e)) - Σ_t p(t) H_t``. ``p(t)`` is ``task_weights`` normalised to sum to 1 (``None``:
    uniform). 0 when every task uses the experts alike; ``H(p)`` (``log T`` for uniform ``p``) when
    the tasks use disjoint experts. Returns a scalar tensor.
    """
    U = _check_utilisation(U)
    if task_weights is None:
        p = torch.full((U.shape[0],), 1.0 / U.shape[0], dtype=U.dtype)
    else:
        p = torch.as_tensor(task_weights, dtype=U.dtype, device=U.device)
        if p.shape != (U.shape[0],) or (p < 0).any() or p.sum() <= 0:
            raise ValueError(
                f"Expected `task_weights` to be {U.shape[0]} non-negative numbers with a positive sum, but got {p}."
            )
        p = p / p.sum()
    p = p.to(U.device)
    marginal = (p.unsqueeze(-1) * U).sum(dim=0)
    return -torch.xlogy(marginal, marginal).sum() - (p * utilisation_entropy(U)).sum()


# ----------------------------------------------------------------------------------- callback
class ExpertDiagnostics(Callback):
    """Logs how the tasks use the experts of a mixture-of-experts neck, every validation epoch.

    Collects the neck's ``gate/{task}`` stats (returned by `MultiTaskModule.validation_step`) over
    the validation set, each batch weighted by the task's number of rows in it, into the utilisation
    matrix ``U`` ``[T, K]`` (task ``t``'s mean gate, rows summing to 1; under DDP the sums and counts
    are all-reduced, so every rank gets the same ``U``). Logs, for the tasks seen:

    * ``experts/{task}/entropy`` and ``experts/{task}/effective``: `utilisation_entropy` (nats) and
      `effective_experts` of the task's mean gate (not a per-example entropy: see the module
      docstring);
    * ``experts/dead``: the number of `dead_experts`; ``experts/load_cv``: `load_cv`;
    * ``experts/mutual_information``: `task_expert_mutual_information`, with ``p(t)`` the task's
      share of the validation rows;
    * ``experts/{task}/u{k}``: ``U[t, k]``, when ``K <= 16``.

    Only the last level's gates are reported; for CGC and PLE, whose task gates weigh the task's own
    and the shared experts, the gate weights are placed at the global expert indices (``K`` =
    every task's experts and the shared ones), so that a task's own experts read 0 for the others.

    With ``save_images``, a heatmap of ``U`` is written to ``{trainer.log_dir}/experts/epoch{N}.png``
    on rank 0 and sent to the W&B (``experts/utilisation``) and TensorBoard loggers. Necks without
    gate stats (shared-bottom) are skipped: nothing is logged. The sanity check is skipped too.

    Args:
        dead_threshold: an expert is dead when its load is below ``dead_threshold / K``.
        save_images: write and log the heatmap.
    """

    def __init__(self, dead_threshold: float = 0.1, save_images: bool = True) -> None:
        if isinstance(dead_threshold, bool) or not isinstance(dead_threshold, (int, float)):
            raise ValueError(f"Expected `dead_threshold` to be a number, but got {dead_threshold!r}.")
        if not 0 <= dead_threshold <= 1:
            raise ValueError(f"Expected `dead_threshold` to be in [0, 1], but got {dead_threshold}.")
        self.dead_threshold = float(dead_threshold)
        self.save_images = bool(save_images)
        self._sums: dict[str, Tensor] = {}
        self._counts: dict[str, int] = {}
        #: The last epoch's utilisation (tasks seen, ``U``), for inspection.
        self.utilisation: tuple[list[str], Tensor] | None = None

    # ------------------------------------------------------------------------------- collection
    def _reset(self) -> None:
        self._sums, self._counts = {}, {}

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._reset()

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if trainer.sanity_checking or not isinstance(outputs, Mapping):
            return
        stats = outputs.get("stats")
        if not isinstance(stats, Mapping):
            return
        targets: Mapping[str, Any] = batch["targets"]
        for task, rows in targets.items():
            gate = stats.get(f"gate/{task}")
            if gate is None or len(rows) == 0:
                continue
            gate = self._global_gate(pl_module, task, gate.detach().float())
            weighted = gate * len(rows)
            if task in self._sums:
                self._sums[task] = self._sums[task] + weighted
            else:
                self._sums[task] = weighted
            self._counts[task] = self._counts.get(task, 0) + len(rows)

    @staticmethod
    def _global_gate(pl_module: LightningModule, task: str, gate: Tensor) -> Tensor:
        """``gate`` at the neck's global expert indices (CGC / PLE: the task's own and shared experts)."""
        neck = getattr(pl_module, "neck", None)
        levels = getattr(neck, "levels", None)
        if levels is None or len(levels) == 0:
            return gate
        level = levels[-1]
        selection, tasks = getattr(level, "selection", None), getattr(level, "tasks", None)
        if selection is None or tasks is None or task not in tasks:
            return gate
        index = selection[tasks.index(task)].to(gate.device)
        if index.numel() != gate.shape[-1]:
            return gate
        out = gate.new_zeros(int(selection.max()) + 1)
        return out.index_copy(0, index, gate)

    def _num_experts(self, pl_module: LightningModule) -> int:
        """``K``, the same on every rank: from the neck for CGC / PLE, else the width of the gates seen
        on any rank; 0 when no rank saw gates or when the tasks' gates differ in width (warned)."""
        neck = getattr(pl_module, "neck", None)
        levels = getattr(neck, "levels", None)
        if levels is not None and len(levels) and getattr(levels[-1], "selection", None) is not None:
            return int(levels[-1].selection.max()) + 1
        widths = {int(s.shape[-1]) for s in self._sums.values()}
        local = torch.tensor([max(widths, default=0), float(len(widths) > 1)], device=pl_module.device)
        width, mismatch = pl_module.trainer.strategy.reduce(local, reduce_op="max").tolist()
        if mismatch:
            rank_zero_warn(
                "ExpertDiagnostics expects every task's `gate/{task}` stat to weigh the same experts, but "
                f"got widths { {t: int(s.shape[-1]) for t, s in self._sums.items()} }; logging nothing.",
                category=UserWarning,
            )
            return 0
        return int(width)

    def _utilisation(
        self, trainer: Trainer, pl_module: LightningModule
    ) -> tuple[list[str], Tensor, Tensor] | None:
        """(tasks seen on any rank, ``U`` ``[T, K]``, their row counts ``[T]``), or ``None`` without gates."""
        width = self._num_experts(pl_module)
        if width == 0:
            return None
        names = list(getattr(pl_module, "task_names", None) or sorted(self._sums))
        names += sorted(t for t in self._sums if t not in names)
        device = pl_module.device
        dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
        sums = torch.zeros(len(names), width, device=device, dtype=dtype)
        counts = torch.zeros(len(names), device=device, dtype=dtype)
        for i, task in enumerate(names):
            if task in self._sums:
                sums[i] = self._sums[task].to(sums)
                counts[i] = self._counts[task]
        # One collective for both: every rank sums the same [T, K + 1], zeros for tasks it did not see.
        reduced = trainer.strategy.reduce(torch.cat([sums, counts.unsqueeze(-1)], dim=-1), reduce_op="sum")
        sums, counts = reduced[:, :-1].cpu(), reduced[:, -1].cpu()
        seen = counts > 0
        if not seen.any():
            return None
        sums, counts = sums.double(), counts.double()
        U = sums[seen] / counts[seen].unsqueeze(-1)
        U = U / U.sum(dim=-1, keepdim=True)  # exact row sums despite the float32 accumulation
        return [t for t, s in zip(names, seen.tolist(), strict=True) if s], U, counts[seen]

    # ------------------------------------------------------------------------------- epoch end
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            self._reset()
            return
        result = self._utilisation(trainer, pl_module)
        self._reset()
        if result is None:
            return
        tasks, U, counts = result
        self.utilisation = (tasks, U)
        pl_module.log_dict(self.metrics(tasks, U, counts), sync_dist=True)
        if self.save_images:
            self._log_heatmap(trainer, tasks, U)

    def metrics(
        self, tasks: Sequence[str], U: Tensor, task_weights: Tensor | None = None
    ) -> dict[str, float]:
        """The scalars logged for utilisation ``U`` ``[T, K]`` of ``tasks`` (``task_weights``: ``p(t)``)."""
        entropy, effective = utilisation_entropy(U), effective_experts(U)
        values: dict[str, float] = {}
        for i, task in enumerate(tasks):
            values[f"experts/{task}/entropy"] = float(entropy[i])
            values[f"experts/{task}/effective"] = float(effective[i])
        values["experts/dead"] = float(dead_experts(U, self.dead_threshold).sum())
        values["experts/load_cv"] = float(load_cv(U))
        values["experts/mutual_information"] = float(task_expert_mutual_information(U, task_weights))
        if U.shape[1] <= MAX_SCALAR_EXPERTS:
            for i, task in enumerate(tasks):
                for k in range(U.shape[1]):
                    values[f"experts/{task}/u{k}"] = float(U[i, k])
        return values

    def _log_heatmap(self, trainer: Trainer, tasks: Sequence[str], U: Tensor) -> None:
        directory = trainer.log_dir or trainer.default_root_dir  # collective: call it on every rank
        if not trainer.is_global_zero:
            return
        epoch = trainer.current_epoch
        figure = heatmap(tasks, U, title=f"Expert utilisation, epoch {epoch}")
        path = Path(directory) / "experts" / f"epoch{epoch}.png"
        log_figure(figure, path, "experts/utilisation", trainer.loggers, step=trainer.global_step)
        figure.clear()


def heatmap(tasks: Sequence[str], U: Tensor, title: str = "Expert utilisation") -> Figure:
    """A tasks x experts heatmap of ``U`` with a colorbar (values annotated up to 400 cells)."""
    return plots.heatmap(
        U,
        list(tasks),
        [str(k) for k in range(U.shape[1])],
        title=title,
        xlabel="expert",
        ylabel="task",
        colorbar_label="mean gate weight",
        vmin=0.0,
    )
