"""Mixture-of-experts diagnostics: how the tasks use the experts, logged every validation epoch.

The necks report per batch (`mtl.necks.gates.MixtureNeck`): ``gate/{task}``, task ``t``'s mean gate
``[K]`` over its rows; ``gate_entropy/{task}``, the mean over its rows of each row's gate entropy
(and, on token inputs, ``gate_entropy_tokens/{task}`` over the ``token_count/{task}`` real tokens);
``zero_share/level{j}`` with ``expert_units/level{j}``, each expert's share of zero output
activations and the number of units behind it. `ExpertDiagnostics` averages them over the
validation set (each batch weighted by its rows, tokens or units, summed over the ranks) into the
utilisation matrix ``U`` ``[T, K]`` (row ``t``: task ``t``'s mean gate, summing to 1), the mean
per-example gate entropy of every task and the zero share of every expert, and logs the functions
of `mtl.necks.diagnostics` of them, plus a heatmap of ``U``.

Two entropies are logged and both matter: ``entropy`` is that of a task's *mean* gate (how spread
its use of the experts is over the data), ``gate_entropy`` the mean of its per-example gate
entropies (how soft each example's routing is). By concavity the first is at least the second;
their difference is the information the gate carries about the example (0 when every example is
routed alike, as with a static gate).
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
from mtl.necks.diagnostics import (
    collapsed_experts,
    dead_experts,
    effective_experts,
    expert_load,
    load_cv,
    task_expert_mutual_information,
    utilisation_entropy,
)
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

#: Per-expert values (utilisation, zero share) are logged as scalars only up to this many experts.
MAX_SCALAR_EXPERTS = 16


def _check_fraction(value: float, name: str, example: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(
            f"Expected `{name}` to be a number in [0, 1], but got {value!r}. Use e.g. {example}."
        )
    return float(value)


class ExpertDiagnostics(Callback):
    """Logs how the tasks use the experts of a mixture-of-experts neck, every validation epoch.

    Collects the neck's stats (returned by `MultiTaskModule.validation_step`) over the validation set
    and sums them over the ranks with one collective, so that every rank logs the values of the whole
    set. Logs, for the tasks seen:

    * ``experts/{task}/entropy`` and ``experts/{task}/effective``: `utilisation_entropy` (nats) and
      `effective_experts` of the task's mean gate;
    * ``experts/{task}/gate_entropy``: the mean per-example gate entropy (nats) over the task's rows,
      and ``experts/{task}/gate_entropy_tokens`` over its real tokens when the neck routes tokens;
    * ``experts/dead``: the number of `dead_experts`; ``experts/load_cv``: `load_cv`;
    * ``experts/mutual_information``: `task_expert_mutual_information`, with ``p(t)`` the task's
      share of the validation rows;
    * ``experts/{task}/u{k}``: ``U[t, k]``, when ``K <= 16``;
    * per level ``j`` of experts: ``experts/zero_share/level{j}/e{k}``, expert ``k``'s share of zero
      output activations (for Swish experts, of outputs ``<= 0``; see
      `mtl.necks.diagnostics.nonpositive_share`), when ``K <= 16``; ``.../mean``, their mean; and
      ``.../collapsed``, the number of `collapsed_experts` (share above ``zero_share_threshold``),
      also warned about (once per expert) and kept in `collapsed`.

    Only the last level's gates are reported; for necks whose task gates weigh a subset of the
    experts (CGC, PLE, HoME; `MixtureNeck.gate_index`), the gate weights are placed at the level's
    expert indices, so that a task's row reads 0 on the experts it cannot use.

    With ``save_images``, a heatmap of ``U`` is written to ``{trainer.log_dir}/experts/epoch{N}.png``
    on rank 0 and sent to the W&B (``experts/utilisation``) and TensorBoard loggers. Necks without
    these stats (shared-bottom) are skipped: nothing is logged. The sanity check is skipped too.

    Args:
        dead_threshold: an expert is dead when its load is below ``dead_threshold / K``.
        zero_share_threshold: an expert has collapsed when more than this share of its output
            activations are zero (HoME's "over 90% zero activations": 0.9).
        save_images: write and log the heatmap.
    """

    def __init__(
        self, dead_threshold: float = 0.1, save_images: bool = True, zero_share_threshold: float = 0.9
    ) -> None:
        self.dead_threshold = _check_fraction(dead_threshold, "dead_threshold", "0.1")
        self.zero_share_threshold = _check_fraction(zero_share_threshold, "zero_share_threshold", "0.9")
        self.save_images = bool(save_images)
        self._reset()
        #: The last epoch's utilisation (tasks seen, ``U``), for inspection.
        self.utilisation: tuple[list[str], Tensor] | None = None
        #: The last epoch's mean per-example gate entropy of each task (rows; ``{task}/tokens`` for tokens).
        self.gate_entropy: dict[str, float] = {}
        #: The last epoch's zero share ``[K]`` of each level's experts (NaN: the expert never ran).
        self.zero_shares: dict[str, Tensor] = {}
        #: Experts whose zero share exceeded the threshold, per level, at the last epoch.
        self.collapsed: dict[str, list[int]] = {}
        self._warned: set[tuple[str, int]] = set()

    # ------------------------------------------------------------------------------- collection
    def _reset(self) -> None:
        # Per task: Σ rows·gate [K], rows; Σ rows·gate_entropy, its rows; Σ tokens·gate_entropy_tokens,
        # tokens.
        self._gates: dict[str, Tensor] = {}
        self._rows: dict[str, int] = {}
        self._entropy_rows: dict[str, int] = {}
        self._entropy: dict[str, Tensor] = {}
        self._token_entropy: dict[str, Tensor] = {}
        self._tokens: dict[str, Tensor] = {}
        # Per level: Σ units·share [K], units [K].
        self._zeros: dict[str, Tensor] = {}
        self._units: dict[str, Tensor] = {}

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
        dtype = _accumulation_dtype(pl_module.device)
        for task, targets in batch["targets"].items():
            rows = len(targets)
            gate = stats.get(f"gate/{task}")
            if gate is None or rows == 0:
                continue
            gate = self._global_gate(pl_module, task, gate.detach().to(dtype))
            _add(self._gates, task, gate * rows)
            self._rows[task] = self._rows.get(task, 0) + rows
            if f"gate_entropy/{task}" in stats:
                _add(self._entropy, task, stats[f"gate_entropy/{task}"].detach().to(dtype) * rows)
                self._entropy_rows[task] = self._entropy_rows.get(task, 0) + rows
            if f"gate_entropy_tokens/{task}" in stats and f"token_count/{task}" in stats:
                tokens = stats[f"token_count/{task}"].detach().to(dtype)
                _add(
                    self._token_entropy,
                    task,
                    stats[f"gate_entropy_tokens/{task}"].detach().to(dtype) * tokens,
                )
                _add(self._tokens, task, tokens)
        for key, share in stats.items():
            level = key.removeprefix("zero_share/")
            if level == key or f"expert_units/{level}" not in stats:
                continue
            units = stats[f"expert_units/{level}"].detach().to(dtype)
            _add(self._zeros, level, share.detach().to(dtype) * units)
            _add(self._units, level, units)

    @staticmethod
    def _global_gate(pl_module: LightningModule, task: str, gate: Tensor) -> Tensor:
        """``gate`` at the neck's expert indices (CGC, PLE, HoME: a task's gate weighs a subset)."""
        neck = getattr(pl_module, "neck", None)
        if not hasattr(neck, "gate_index"):
            return gate
        index = neck.gate_index(task)
        if index is None:
            return gate
        out = gate.new_zeros(neck.expert_counts()[-1])
        return out.index_copy(0, index.to(gate.device), gate)

    def _num_experts(self, pl_module: LightningModule) -> int:
        """``K``, the same on every rank: from the neck when it says (`MixtureNeck.expert_counts`), else
        the width of the gates seen on any rank; 0 when no rank saw gates or when the tasks' gates
        differ in width (warned)."""
        neck = getattr(pl_module, "neck", None)
        if hasattr(neck, "expert_counts"):
            return int(neck.expert_counts()[-1])
        widths = {int(s.shape[-1]) for s in self._gates.values()}
        local = torch.tensor([max(widths, default=0), float(len(widths) > 1)], device=pl_module.device)
        width, mismatch = pl_module.trainer.strategy.reduce(local, reduce_op="max").tolist()
        if mismatch:
            rank_zero_warn(
                "ExpertDiagnostics expects every task's `gate/{task}` stat to weigh the same experts, but "
                f"got widths { {t: int(s.shape[-1]) for t, s in self._gates.items()} }; logging nothing.",
                category=UserWarning,
            )
            return 0
        return int(width)

    def _levels(self, pl_module: LightningModule) -> dict[str, int]:
        """Level name -> number of experts, the same on every rank (from the neck)."""
        neck = getattr(pl_module, "neck", None)
        if not hasattr(neck, "expert_counts"):
            return {}
        return {f"level{j}": int(k) for j, k in enumerate(neck.expert_counts())}

    def _reduced(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any] | None:
        """Every sum of the epoch, added over the ranks in one collective; ``None`` when there is nothing
        to reduce. Shapes depend only on the neck and the task names, so every rank agrees."""
        width, levels = self._num_experts(pl_module), self._levels(pl_module)
        if width == 0 and not levels:
            return None
        names = list(getattr(pl_module, "task_names", None) or sorted(self._gates))
        names += sorted(t for t in self._gates if t not in names)
        device = pl_module.device
        dtype = _accumulation_dtype(device)
        T = len(names)
        gates = torch.zeros(T, width, device=device, dtype=dtype)
        # Rows: gate rows, entropy rows, Σ rows·entropy, Σ tokens·token entropy, tokens.
        per_task = torch.zeros(5, T, device=device, dtype=dtype)
        for i, task in enumerate(names):
            if task in self._gates and self._gates[task].shape[-1] == width:
                gates[i] = self._gates[task].to(gates)
                per_task[0, i] = self._rows[task]
            per_task[1, i] = self._entropy_rows.get(task, 0)
            for row, store in ((2, self._entropy), (3, self._token_entropy), (4, self._tokens)):
                if task in store:
                    per_task[row, i] = store[task].to(per_task)
        zeros = [self._zeros.get(lv, torch.zeros(k)).to(device, dtype) for lv, k in levels.items()]
        units = [self._units.get(lv, torch.zeros(k)).to(device, dtype) for lv, k in levels.items()]
        packed = torch.cat([gates.flatten(), per_task.flatten(), *zeros, *units])
        packed = trainer.strategy.reduce(packed, reduce_op="sum").cpu().double()
        gates, packed = packed[: T * width].view(T, width), packed[T * width :]
        per_task, packed = packed[: 5 * T].view(5, T), packed[5 * T :]
        sizes = list(levels.values())
        zeros = packed[: sum(sizes)].split(sizes)
        units = packed[sum(sizes) :].split(sizes)
        return {
            "names": names,
            "gates": gates,
            "per_task": per_task,
            "zeros": zeros,
            "units": units,
            "levels": levels,
        }

    def _utilisation(self, reduced: Mapping[str, Any]) -> tuple[list[str], Tensor, Tensor] | None:
        """(tasks seen on any rank, ``U`` ``[T, K]``, their row counts ``[T]``), or ``None`` without gates."""
        gates, counts = reduced["gates"], reduced["per_task"][0]
        seen = counts > 0
        if gates.shape[-1] == 0 or not seen.any():
            return None
        U = gates[seen] / counts[seen].unsqueeze(-1)
        U = U / U.sum(dim=-1, keepdim=True)  # exact row sums despite the float32 accumulation on MPS
        return [t for t, s in zip(reduced["names"], seen.tolist(), strict=True) if s], U, counts[seen]

    # ------------------------------------------------------------------------------- epoch end
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            self._reset()
            return
        reduced = self._reduced(trainer, pl_module)
        self._reset()
        if reduced is None:
            return
        values: dict[str, float] = {}
        utilisation = self._utilisation(reduced)
        if utilisation is not None:
            tasks, U, counts = utilisation
            self.utilisation = (tasks, U)
            values.update(self.metrics(tasks, U, counts))
        values.update(self._entropy_metrics(reduced["names"], reduced["per_task"]))
        values.update(self._zero_share_metrics(reduced["levels"], reduced["zeros"], reduced["units"]))
        if values:
            pl_module.log_dict(values, sync_dist=True)
        if self.save_images and utilisation is not None:
            self._log_heatmap(trainer, utilisation[0], utilisation[1])

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

    def _entropy_metrics(self, names: Sequence[str], per_task: Tensor) -> dict[str, float]:
        """Mean per-example (and per-token) gate entropy of every task that reported one."""
        _, rows, entropy, token_entropy, tokens = per_task
        values: dict[str, float] = {}
        self.gate_entropy = {}
        for i, task in enumerate(names):
            if rows[i] > 0:
                self.gate_entropy[task] = float(entropy[i] / rows[i])
                values[f"experts/{task}/gate_entropy"] = self.gate_entropy[task]
            if tokens[i] > 0:
                self.gate_entropy[f"{task}/tokens"] = float(token_entropy[i] / tokens[i])
                values[f"experts/{task}/gate_entropy_tokens"] = self.gate_entropy[f"{task}/tokens"]
        return values

    def _zero_share_metrics(
        self, levels: Mapping[str, int], zeros: Sequence[Tensor], units: Sequence[Tensor]
    ) -> dict[str, float]:
        """Per level: each expert's zero share, their mean, and the collapsed experts (warned once)."""
        values: dict[str, float] = {}
        self.zero_shares, self.collapsed = {}, {}
        for level, zero, unit in zip(levels, zeros, units, strict=True):
            if not (unit > 0).any():
                continue
            share = torch.where(unit > 0, zero / unit.clamp_min(1e-12), torch.full_like(zero, float("nan")))
            flagged = collapsed_experts(share, self.zero_share_threshold).nonzero().flatten().tolist()
            self.zero_shares[level], self.collapsed[level] = share, flagged
            prefix = f"experts/zero_share/{level}"
            values[f"{prefix}/mean"] = float(share[unit > 0].mean())
            values[f"{prefix}/collapsed"] = float(len(flagged))
            if len(share) <= MAX_SCALAR_EXPERTS:
                values.update({f"{prefix}/e{k}": float(v) for k, v in enumerate(share.tolist()) if v == v})
            new = [k for k in flagged if (level, k) not in self._warned]
            if new:
                self._warned.update((level, k) for k in new)
                rank_zero_warn(
                    f"Expert(s) {new} of {level} output zero (Swish: <= 0) for more than "
                    f"{self.zero_share_threshold:.0%} of their inputs (shares "
                    f"{[round(float(share[k]), 3) for k in new]}): collapsed experts, as HoME reports. "
                    "Consider normalised Swish experts (HoME), a lower learning rate or fewer experts.",
                    category=UserWarning,
                )
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


def _accumulation_dtype(device: torch.device) -> torch.dtype:
    """float64 for the sums over the validation set, except on MPS, which has no float64."""
    return torch.float32 if device.type == "mps" else torch.float64


def _add(store: dict[str, Tensor], key: str, value: Tensor) -> None:
    store[key] = store[key] + value if key in store else value


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
