"""Customized gate control (CGC): task-specific and shared experts, a gate per task over its own and
the shared experts. `ExtractionLevel` is one such level; PLE (`mtl.necks.ple`) stacks them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from mtl.features import Features
from mtl.necks.base import NeckOutput
from mtl.necks.experts import StackedExperts, check_count
from mtl.necks.gates import MixtureNeck, SoftmaxGate, mix, take

__all__ = ["CGC", "ExtractionLevel"]


class ExtractionLevel(nn.Module):
    """One extraction level of PLE (a CGC layer), for ``T`` tasks.

    All ``T · num_task_experts + num_shared_experts`` experts live in one `StackedExperts`, laid out
    as ``[task 0's experts, ..., task T-1's experts, shared experts]``, so a level is one batched
    expert pass. Task ``t``'s gate weighs ``[t's own experts, shared experts]`` (``selection[t]``); the
    optional shared gate weighs all experts.

    Branches are numbered ``0 .. T-1`` (tasks) and ``T`` (shared). On the first level every expert and
    gate reads the input ``[..., H]``; on upper levels the input is ``[..., T + 1, H]``, one vector per
    branch of the level below, and each expert and gate reads its own branch's (``source``).
    """

    def __init__(
        self,
        tasks: Sequence[str],
        in_features: int,
        num_shared_experts: int,
        num_task_experts: int,
        expert_hidden: Sequence[int],
        dropout: float = 0.0,
        first: bool = True,
        shared_gate: bool = False,
    ) -> None:
        super().__init__()
        self.tasks, self.first = list(tasks), first
        n_tasks, n_task, n_shared = len(self.tasks), num_task_experts, num_shared_experts
        total = n_tasks * n_task + n_shared
        self.experts = StackedExperts(total, in_features, expert_hidden, dropout)
        self.gates = nn.ModuleDict({t: SoftmaxGate(in_features, n_task + n_shared) for t in self.tasks})
        self.shared_gate = SoftmaxGate(in_features, total) if shared_gate else None
        shared = torch.arange(n_tasks * n_task, total)
        own = [torch.arange(i * n_task, (i + 1) * n_task) for i in range(n_tasks)]
        # Buffers (not saved): derived from the hyper-parameters, and they follow the module's device.
        self.register_buffer(
            "selection", torch.stack([torch.cat([o, shared]) for o in own]), persistent=False
        )
        source = torch.cat(
            [torch.arange(n_tasks).repeat_interleave(n_task), torch.full((n_shared,), n_tasks)]
        )
        self.register_buffer("source", source, persistent=False)

    def branch_input(self, x: Tensor, branch: int) -> Tensor:
        return x if self.first else x[..., branch, :]

    def run_experts(self, x: Tensor, index: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Outputs ``[..., K', O]`` of the experts ``index`` (all when ``None``), each on its branch,
        and their `nonpositive_share` ``[..., K']``."""
        if self.first:
            return self.experts(x, index, activity=True)
        source = self.source if index is None else self.source[index]
        return self.experts(x.index_select(-2, source), index, per_expert=True, activity=True)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Every branch on every row, ``[..., T (+ 1), O]`` (the input of the next level), and the
        experts' `nonpositive_share` ``[..., K]``.

        All rows and all tasks are needed: the shared gate of the next level mixes every task's
        experts, so a row's output must not depend on which tasks share its batch.
        """
        experts, nonpositive = self.run_experts(x)
        branches = [
            mix(self.gates[task](self.branch_input(x, i)), experts.index_select(-2, self.selection[i]))
            for i, task in enumerate(self.tasks)
        ]
        if self.shared_gate is not None:
            branches.append(mix(self.shared_gate(self.branch_input(x, len(self.tasks))), experts))
        return torch.stack(branches, dim=-2), nonpositive

    def task_mixtures(
        self, x: Tensor, routes: Mapping[str, Tensor | None]
    ) -> tuple[dict[str, tuple[Tensor, Tensor]], Tensor, Tensor | None]:
        """Per routed task, ``(mixture, gate weights)`` on its rows; and the evaluated experts'
        `nonpositive_share` ``[..., K']`` with their ids (``None``: all experts ran).

        Only the experts of the tasks present (and the shared ones) are evaluated, on every row; each
        task's gate runs on its routed rows only.
        """
        present = [self.tasks.index(task) for task in routes]
        index = None if len(set(present)) == len(self.tasks) else torch.unique(self.selection[present])
        experts, nonpositive = self.run_experts(x, index)
        out: dict[str, tuple[Tensor, Tensor]] = {}
        for task, i in zip(routes, present, strict=True):
            rows = routes[task]
            # Position of t's experts among those evaluated (``index`` is sorted).
            chosen = self.selection[i] if index is None else torch.searchsorted(index, self.selection[i])
            weights = self.gates[task](take(self.branch_input(x, i), rows))
            out[task] = (mix(weights, take(experts, rows).index_select(-2, chosen)), weights)
        return out, nonpositive, index


class CGC(MixtureNeck):
    """Customized gate control: per task, a gate over the task's own experts and the shared experts.

    Tang et al., "Progressive Layered Extraction (PLE): A Novel Multi-Task Learning (MTL) Model for
    Personalized Recommendations", RecSys 2020 (section 4.1). Task ``t`` reads
    ``g_t(x) = w_t(x) S_t(x)``, ``w_t(x) = softmax(W_t x)``, ``S_t(x) = [E_{t,1}(x) .. E_{t,m_t}(x),
    E_{s,1}(x) .. E_{s,m_s}(x)]``: separating task-specific from shared experts avoids the "seesaw"
    of MMoE, where every expert is pulled by every task.

    Stats: the gate stats of `MixtureNeck.task_features`, ``gate/{task}`` the task's mean gate weights
    over its rows, ``[num_task_experts + num_shared_experts]`` in the order (own experts, shared
    experts) (`gate_index` maps them to the level's experts), ``gate_entropy/{task}`` and the
    per-token versions on token inputs; ``zero_share/level{j}`` over all of level ``j``'s experts, in
    the layout of `ExtractionLevel` (experts of the last level that did not run, those of tasks absent
    from the batch, get weight 0). No auxiliary loss.

    Hyper-parameters:
        num_shared_experts: ``m_s``, experts every task may use (``>= 0``).
        num_task_experts: ``m_t``, experts of each task, used by that task only (``>= 0``; with 0 CGC is
            MMoE with ``m_s`` experts).
        expert_hidden: widths of each expert MLP's layers; the last is the output width.
        dropout: dropout after each expert layer.
        route_tokens: also mix ``tokens`` per token when the encoder provides them.
    """

    def __init__(
        self,
        num_shared_experts: int,
        num_task_experts: int,
        expert_hidden: Sequence[int],
        dropout: float = 0.0,
        route_tokens: bool = True,
    ) -> None:
        super().__init__(expert_hidden, dropout, route_tokens)
        name = type(self).__name__
        self.num_shared_experts = check_count(num_shared_experts, "num_shared_experts", name, minimum=0)
        self.num_task_experts = check_count(num_task_experts, "num_task_experts", name, minimum=0)
        if num_shared_experts + num_task_experts == 0:
            raise ValueError(
                f"Expected `num_shared_experts` + `num_task_experts` of {name} to be at least 1, but got 0."
            )
        self.num_levels = 1

    def build(self, in_features: int, tasks: list[str]) -> None:
        levels, width = [], in_features
        for level in range(self.num_levels):
            last = level == self.num_levels - 1
            levels.append(
                ExtractionLevel(
                    tasks,
                    width,
                    self.num_shared_experts,
                    self.num_task_experts,
                    self.expert_hidden,
                    self.dropout,
                    first=level == 0,
                    # The shared branch feeds the shared experts of the level above: none above the last.
                    shared_gate=not last and self.num_shared_experts > 0,
                )
            )
            width = self.expert_hidden[-1]
        self.levels = nn.ModuleList(levels)

    def expert_counts(self) -> list[int]:
        return [level.experts.num_experts for level in self.levels]

    def gate_index(self, task: str) -> Tensor:
        return self.levels[-1].selection[self.tasks.index(task)]

    def forward(self, features: Features, routes: Mapping[str, Tensor | None]) -> NeckOutput:
        x = self.expert_inputs(features)
        self.check_routes(routes)
        valid = self.real_units(features, x)
        stats: dict[str, Tensor] = {}
        for j, level in enumerate(self.levels[:-1]):
            x, nonpositive = level(x)
            self.record_zero_share(stats, j, nonpositive, valid)
        mixtures, nonpositive, index = self.levels[-1].task_mixtures(x, routes)
        self.record_zero_share(stats, len(self.levels) - 1, nonpositive, valid, index)
        out: dict[str, Features] = {}
        for task, (mixed, weights) in mixtures.items():
            out[task] = self.task_features(features, routes[task], mixed, weights, task, stats)
        return NeckOutput(features=out, stats=stats)
