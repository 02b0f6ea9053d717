"""ODE integration of a model's state from t = 0 to t = 1.

One call, :func:`integrate`, over a visible name -> solver table (:data:`SOLVERS`): our own
fixed-step Runge-Kutta schemes (``euler``, ``midpoint``, ``rk4``), optionally checkpointed per step
to bound memory, and torchdiffeq's adaptive solvers (``dopri5``, ``bosh3``, ``adaptive_heun``),
optionally with the adjoint method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, TypeVar

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

__all__ = ["integrate", "SOLVERS", "ButcherTableau"]

S = TypeVar("S", bound=tuple)


@dataclass(frozen=True)
class ButcherTableau:
    """An explicit Runge-Kutta scheme: stages c, coupling a (lower triangular) and weights b."""

    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    order: int


EULER = ButcherTableau(c=(0.0,), a=((),), b=(1.0,), order=1)
MIDPOINT = ButcherTableau(c=(0.0, 0.5), a=((), (0.5,)), b=(0.0, 1.0), order=2)
RK4 = ButcherTableau(
    c=(0.0, 0.5, 0.5, 1.0),
    a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
    b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
    order=4,
)

#: solver name -> ButcherTableau (ours, fixed step) or the torchdiffeq method name (adaptive).
SOLVERS: dict[str, ButcherTableau | str] = {
    "euler": EULER,
    "midpoint": MIDPOINT,
    "rk4": RK4,
    "dopri5": "dopri5",
    "bosh3": "bosh3",
    "adaptive_heun": "adaptive_heun",
}


def _combine(y: tuple, ks: list[tuple], coeffs: tuple[float, ...], dt: float) -> tuple:
    out = []
    for i, yi in enumerate(y):
        acc = yi
        for k, c in zip(ks, coeffs):
            if c != 0.0:
                acc = torch.add(acc, k[i], alpha=dt * c)  # one fused pass instead of a scale and an add
        out.append(acc)
    return tuple(out)


def _rk_step(func: Callable, tableau: ButcherTableau, t: float, y: tuple, dt: float) -> tuple:
    ks: list[tuple] = []
    for ci, ai in zip(tableau.c, tableau.a):
        yi = _combine(y, ks, ai, dt) if ks else y
        ks.append(tuple(func(torch.tensor(t + ci * dt), type(y)(*yi) if hasattr(y, "_fields") else yi)))
    return _combine(y, ks, tableau.b, dt)


def integrate(
    model: nn.Module,
    state: S,
    method: str = "rk4",
    steps: int = 10,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    adjoint: bool = False,
    checkpointed: bool = False,
) -> S:
    """Integrate d/dt state = model(t, state) from t = 0 to t = 1.

    Args:
        model: a shooting model; ``model(t, state)`` returns the derivative as the same named tuple.
        state: initial state (a named tuple of tensors).
        method: a key of :data:`SOLVERS`.
        steps: number of equal steps for the fixed-step solvers (dt = 1 / steps).
        rtol, atol: tolerances of the adaptive solvers.
        adjoint: use torchdiffeq's adjoint method for the gradient (adaptive solvers only).
        checkpointed: recompute each fixed step in the backward pass instead of storing its stages
            (memory O(steps * |state|) instead of O(steps * stages * |state|)).

    Returns:
        The state at t = 1, same type as ``state``.
    """
    if method not in SOLVERS:
        raise ValueError(f"unknown integrator {method!r}; choose one of {sorted(SOLVERS)}")
    solver = SOLVERS[method]
    if isinstance(solver, ButcherTableau):
        if adjoint:
            raise ValueError(f"the adjoint method needs an adaptive solver (dopri5, ...), not {method!r}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        return _fixed_step(model, solver, state, steps, checkpointed)
    return _torchdiffeq(model, solver, state, rtol, atol, adjoint)


def _fixed_step(model: nn.Module, tableau: ButcherTableau, state: S, steps: int, checkpointed: bool) -> S:
    dt = 1.0 / steps
    y = tuple(state)
    cls = type(state)

    def func(t, s):
        return model(t, cls(*s))

    for n in range(steps):
        t = n * dt
        if checkpointed and any(x.requires_grad for x in y):
            y = checkpoint(lambda *ys, _t=t: _rk_step(func, tableau, _t, ys, dt), *y, use_reentrant=False)
        else:
            y = _rk_step(func, tableau, t, y, dt)
    return cls(*y)


class _TupleFunc(nn.Module):
    """Adapts a named-tuple model to torchdiffeq's plain-tuple interface."""

    def __init__(self, model: nn.Module, cls: type) -> None:
        super().__init__()
        self.model = model
        self.cls = cls

    def forward(self, t: Tensor, y: tuple) -> tuple:
        return tuple(self.model(t, self.cls(*y)))


def _torchdiffeq(model: nn.Module, method: str, state: S, rtol: float, atol: float, adjoint: bool) -> S:
    import torchdiffeq

    y0 = tuple(state)
    ref = y0[0]
    t = torch.tensor([0.0, 1.0], dtype=ref.dtype, device=ref.device)
    func = _TupleFunc(model, type(state))
    if adjoint:
        out = torchdiffeq.odeint_adjoint(func, y0, t, rtol=rtol, atol=atol, method=method,
                                         adjoint_params=())
    else:
        out = torchdiffeq.odeint(func, y0, t, rtol=rtol, atol=atol, method=method)
    return type(state)(*(x[-1] for x in out))
