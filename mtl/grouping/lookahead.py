"""The parameter update an optimizer would take for a given gradient, computed without taking it.

TAG (`mtl.grouping.tag`) asks how a task's loss would change if the shared parameters took the step
that the *real* optimizer would take on another task's gradient alone. For plain SGD that step is
``-lr * g``; for optimizers with state (momentum, Adam's moments) it depends on that state. The
functions here compute the step from a read-only view of the optimizer's current state and
hyper-parameters (each parameter's own parameter group), for many candidate gradients at once (a
leading batch dimension), and never write to the optimizer, its state or the parameters.

Supported, exactly as PyTorch implements them (``maximize`` and weight decay included):

* `torch.optim.SGD` (Robbins & Monro, 1951) with momentum, dampening and Nesterov momentum
  (Sutskever et al., ICML 2013): ``d = g + λθ``; ``b = μ b_prev + (1 - τ) d`` (``b = d`` on the first
  step); ``d = d + μ b`` (Nesterov) or ``d = b``; ``Δ = -lr d``.
* `torch.optim.Adam` (Kingma & Ba, ICLR 2015), with AMSGrad (Reddi et al., ICLR 2018) and L2 weight
  decay ``g + λθ``: ``m = β1 m + (1 - β1) g``, ``v = β2 v + (1 - β2) g²`` (``v̂max = max(v̂max, v)``
  with AMSGrad), ``Δ = -lr (m / (1 - β1^t)) / (sqrt(v / (1 - β2^t)) + ε)`` with ``t`` the step count
  after this step.
* `torch.optim.AdamW` (Loshchilov & Hutter, ICLR 2019): Adam with decoupled weight decay,
  ``Δ = -lr λ θ - lr (m / (1 - β1^t)) / (sqrt(v / (1 - β2^t)) + ε)``.

Any other optimizer (or a subclass, whose ``step`` may differ) is refused with an error, unless the
plain gradient step ``-lr g`` is asked for (``step="sgd"``: the literal form of TAG's Eq. 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

__all__ = ["SUPPORTED_OPTIMIZERS", "Step", "lookahead_deltas"]

Step = Literal["optimizer", "sgd"]

#: The optimizer classes whose update `lookahead_deltas` reproduces.
SUPPORTED_OPTIMIZERS: tuple[type[torch.optim.Optimizer], ...] = (
    torch.optim.SGD,
    torch.optim.Adam,
    torch.optim.AdamW,
)


def _scalar(value: float | Tensor) -> float:
    return float(value.item()) if isinstance(value, Tensor) else float(value)


def _sgd_delta(param: Tensor, grad: Tensor, state: Mapping[str, Any], group: Mapping[str, Any]) -> Tensor:
    grad = -grad if group.get("maximize", False) else grad
    decay, momentum = _scalar(group["weight_decay"]), _scalar(group["momentum"])
    if decay != 0:
        grad = grad + decay * param
    if momentum != 0:
        previous = state.get("momentum_buffer")
        buffer = grad if previous is None else momentum * previous + (1 - _scalar(group["dampening"])) * grad
        grad = grad + momentum * buffer if group["nesterov"] else buffer
    return -_scalar(group["lr"]) * grad


def _adam_delta(param: Tensor, grad: Tensor, state: Mapping[str, Any], group: Mapping[str, Any]) -> Tensor:
    grad = -grad if group.get("maximize", False) else grad
    lr, decay, eps = _scalar(group["lr"]), _scalar(group["weight_decay"]), _scalar(group["eps"])
    beta1, beta2 = (_scalar(b) for b in group["betas"])
    decoupled = bool(group.get("decoupled_weight_decay", False))
    step = _scalar(state["step"]) + 1 if "step" in state else 1.0
    zeros = torch.zeros_like(param)
    m = beta1 * state.get("exp_avg", zeros)
    v = beta2 * state.get("exp_avg_sq", zeros)
    if decay != 0 and not decoupled:
        grad = grad + decay * param
    m = m + (1 - beta1) * grad
    v = v + (1 - beta2) * grad * grad
    if group.get("amsgrad", False):
        v = torch.maximum(state.get("max_exp_avg_sq", zeros), v)
    m_hat = m / (1 - beta1**step)
    v_hat = v / (1 - beta2**step)
    delta = -lr * m_hat / (v_hat.sqrt() + eps)
    if decay != 0 and decoupled:
        delta = delta - lr * decay * param
    return delta


def _check_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    optimizer = getattr(optimizer, "optimizer", optimizer)  # Lightning's LightningOptimizer wraps it
    if type(optimizer) not in SUPPORTED_OPTIMIZERS:
        names = ", ".join(f"torch.optim.{c.__name__}" for c in SUPPORTED_OPTIMIZERS)
        raise ValueError(
            f"Expected `optimizer` to be one of {names} (the optimizers whose step the lookahead "
            f"reproduces exactly), but got {type(optimizer).__module__}.{type(optimizer).__qualname__}. "
            "Train the affinity run with SGD, Adam or AdamW (`model.optimizer.class_path`)."
        )
    return optimizer


def _plain_sgd_delta(
    param: Tensor, grad: Tensor, state: Mapping[str, Any], group: Mapping[str, Any]
) -> Tensor:
    return -_scalar(group["lr"]) * grad


def lookahead_deltas(
    optimizer: Any, params: Sequence[nn.Parameter], grads: Sequence[Tensor], step: Step = "optimizer"
) -> list[Tensor]:
    """The update ``Δ`` (new value minus old) that one ``optimizer.step()`` would apply to each of
    ``params``, for each of ``B`` candidate gradients.

    Args:
        optimizer: a `torch.optim.SGD`, `~torch.optim.Adam` or `~torch.optim.AdamW` (or Lightning's
            wrapper of one) that holds ``params``; read only.
        params: the parameters to step.
        grads: one tensor ``[B, *p.shape]`` per parameter: ``B`` candidate gradients.
        step: ``"optimizer"``: the optimizer's own update (above); ``"sgd"``: the plain gradient step
            ``-lr g`` with each parameter's group learning rate, whatever the optimizer (its state,
            momentum and weight decay play no part; any optimizer with an ``lr`` is accepted).

    Returns:
        One tensor ``[B, *p.shape]`` per parameter, in the parameter's dtype.
    """
    if step not in ("optimizer", "sgd"):
        raise ValueError(f"Expected `step` to be 'optimizer' or 'sgd', but got {step!r}.")
    if step == "optimizer":
        optimizer = _check_optimizer(optimizer)
    else:
        optimizer = getattr(optimizer, "optimizer", optimizer)
    if len(grads) != len(params):
        raise ValueError(f"Expected one gradient per parameter ({len(params)}), but got {len(grads)}.")
    groups = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    if step == "sgd":
        rule = _plain_sgd_delta
    else:
        rule = _sgd_delta if isinstance(optimizer, torch.optim.SGD) else _adam_delta
    deltas: list[Tensor] = []
    for param, grad in zip(params, grads, strict=True):
        group = groups.get(id(param))
        if group is None:
            raise ValueError(
                f"Expected every parameter to step to be held by the optimizer, but one of shape "
                f"{tuple(param.shape)} is in none of its parameter groups. Pass the optimizer that trains it."
            )
        if grad.shape[1:] != param.shape:
            raise ValueError(
                f"Expected gradients of shape [B, {', '.join(map(str, param.shape))}], but got {tuple(grad.shape)}."
            )
        with torch.no_grad():
            value = param.detach()
            delta = rule(value, grad.to(value.dtype), optimizer.state.get(param, {}), group)
        deltas.append(delta.to(value.dtype))
    return deltas
