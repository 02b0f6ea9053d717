"""ODE integration of a model's state from t = 0 to t = 1.

One call, :func:`integrate`, over a visible name -> solver table (:data:`SOLVERS`): our own
fixed-step Runge-Kutta schemes (``euler``, ``midpoint``, ``rk4``), optionally checkpointed per step
to bound memory, and torchdiffeq's adaptive solvers (``dopri5``, ``bosh3``, ``adaptive_heun``),
optionally with the adjoint method.

Shooting models (those with ``velocity_and_rates``) get two more things from the fixed-step
schemes (DESIGN.md 2, docs/numerics.md):

* **The map by composition** (``map_update="composition"``, the default): the momentum (and every
  other field) takes the Runge-Kutta step; the pull-back map is composed with the step's departure
  points, ``phi_{n+1} = phi_n o (id - dt v_mid(id - dt/2 v_mid))``, v_mid = sum_j b_j v_j the
  Runge-Kutta average of the stage velocities; stage maps (RDMM reads h0 o phi at every stage) are
  ``phi_n o (id - dt sum_j a_ij v_j)``. Each step composes two orientation-preserving maps, so the
  map stays a diffeomorphism step by step; the price is the interpolation of the map at every step
  (a small diffusion that grows with the step count).
* **The map along the characteristics** (``map_update="characteristics"``): the map at t = 1 is
  traced back from each grid point through the steps' mid-step velocities (second order, only the
  smooth velocities interpolated, no diffusion); more accurate, but a compression finer than the
  grid then shows as folded cells.
* **Advection** (``map_update="advection"``): central differences of the map, not monotone; folds
  where the flow compresses. Kept for comparison and for the adaptive solvers.
* **Steps from the flow** (``max_cfl``): each step's length aims at ``dt max_x sum_k |v_k| / h_k``
  (the Courant number of the central-difference transport of m) <= ``max_cfl``, with ``steps`` as
  the minimum; the speed is re-measured on every step's stages and used for the next step (a step
  can exceed the limit by a few per cent). ``max_steps`` bounds the count; past it, and on any
  non-finite state, :class:`ShootingError` is raised (never a NaN result).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, TypeVar

import math

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .models.transport import advect, compose_displaced, departure_displacement, trace_back

__all__ = ["integrate", "SOLVERS", "ButcherTableau", "ShootingError", "MAP_UPDATES", "ShotInfo"]

#: how a shooting model's map is advanced by the fixed-step schemes
MAP_UPDATES = ("composition", "characteristics", "advection")


class ShootingError(FloatingPointError):
    """The shooting ODE could not be integrated: a non-finite state, or more steps than allowed."""


@dataclass
class ShotInfo:
    """Filled by :func:`integrate` when passed: steps taken and the largest Courant number."""

    steps: int = 0
    max_cfl: float = 0.0

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
    """y + dt sum_j c_j k_j per field; a None rate is zero."""
    out = []
    for i, yi in enumerate(y):
        acc = yi
        for k, c in zip(ks, coeffs):
            if c != 0.0 and k[i] is not None:
                acc = torch.add(acc, k[i], alpha=dt * c)  # one fused pass instead of a scale and an add
        out.append(acc)
    return tuple(out)


def _weighted(vs: list[Tensor], coeffs: tuple[float, ...]) -> Tensor | None:
    """sum_j c_j v_j (None when every coefficient is 0)."""
    out = None
    for v, c in zip(vs, coeffs):
        if c != 0.0:
            out = v * c if out is None else torch.add(out, v, alpha=c)
    return out


def _speed(v: Tensor, spacing: tuple[float, ...]) -> Tensor:
    """max_x sum_k |v_k(x)| / h_k, the Courant number of a unit time step (0-dim tensor)."""
    inv_h = torch.tensor([1.0 / h for h in spacing], dtype=v.dtype, device=v.device)
    return (v.abs() * inv_h.view(1, -1, *([1] * len(spacing)))).sum(1).amax().detach()


def _shooting_step(model: nn.Module, tableau: ButcherTableau, cls: type, t: float, dt: float, update: str,
                   identity: Tensor, p: int, *y: Tensor) -> tuple:
    """One Runge-Kutta step of a shooting model; the map (field ``p``) advanced by ``update``.

    Returns the new fields, the step's mid-step velocity sum_j b_j v_j (B, d, *S) and the largest
    stage speed (a 0-dim tensor). "composition" composes the map with the step's departure points;
    "characteristics" does so only when the rates read the map (RDMM's h0 o phi), the map at t = 1
    being traced back through the mid-step velocities by :func:`_shoot_fixed`; "advection" takes
    the Runge-Kutta step of -(D phi) v.
    """
    spacing = model.spacing
    phi = y[p]
    ks: list[tuple] = []
    vs: list[Tensor] = []
    for ci, ai in zip(tableau.c, tableau.a):
        yi = list(_combine(y, ks, ai, dt)) if ks else list(y)
        if ks and update != "advection":
            u = _weighted(vs, ai) if model.map_in_rates else None
            yi[p] = phi if u is None else compose_displaced(phi, identity, u * (-dt), spacing)
        v, k = model.velocity_and_rates(torch.tensor(t + ci * dt), cls(*yi))
        k = list(k)
        if update == "advection":
            k[p] = -advect(yi[p], v, spacing)
        ks.append(tuple(k))
        vs.append(v)
    out = list(_combine(y, ks, tableau.b, dt))
    v_mid = _weighted(vs, tableau.b)
    if update == "composition" or (update == "characteristics" and model.map_in_rates):
        out[p] = compose_displaced(phi, identity, departure_displacement(v_mid, dt, identity, spacing), spacing)
    speed = torch.stack([_speed(v, spacing) for v in vs]).amax()
    return (*out, v_mid, speed)


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
    map_update: str = "composition",
    max_cfl: float | None = None,
    max_steps: int = 1000,
    info: ShotInfo | None = None,
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
        map_update: shooting models with fixed steps: "composition", "characteristics" or
            "advection" (module doc).
        max_cfl: shooting models with fixed steps: the Courant number a step aims at, ``steps``
            becoming the minimum (None: exactly ``steps`` equal steps). The speed is measured on
            the previous step's stages, so a step can exceed it by a few per cent. One step count
            serves the whole batch (the fastest sample's).
        max_steps: shooting models with fixed steps: more steps than this raise :class:`ShootingError`.
        info: filled with the steps taken and the largest Courant number seen.

    Returns:
        The state at t = 1, same type as ``state``.

    Raises:
        ShootingError: (shooting models, fixed steps) a non-finite state, or more than
            ``max_steps`` steps needed.
    """
    if method not in SOLVERS:
        raise ValueError(f"unknown integrator {method!r}; choose one of {sorted(SOLVERS)}")
    if map_update not in MAP_UPDATES:
        raise ValueError(f"unknown map update {map_update!r}; choose one of {MAP_UPDATES}")
    solver = SOLVERS[method]
    if isinstance(solver, ButcherTableau):
        if adjoint:
            raise ValueError(f"the adjoint method needs an adaptive solver (dopri5, ...), not {method!r}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if max_cfl is not None and not max_cfl > 0:
            raise ValueError(f"max_cfl must be > 0 or None, got {max_cfl}")
        if hasattr(model, "velocity_and_rates") and "phi" in getattr(state, "_fields", ()):
            return _shoot_fixed(model, solver, state, steps, checkpointed, map_update, max_cfl, max_steps, info)
        return _fixed_step(model, solver, state, steps, checkpointed)
    return _torchdiffeq(model, solver, state, rtol, atol, adjoint)


def _shoot_fixed(model: nn.Module, tableau: ButcherTableau, state: S, steps: int, checkpointed: bool,
                 update: str, max_cfl: float | None, max_steps: int, info: ShotInfo | None) -> S:
    """Fixed-step shooting: steps of at most 1 / ``steps``, shortened so that the Courant number
    aims at ``max_cfl`` or less (the speed measured on the previous step's stages; before the
    first step on v0)."""
    cls = type(state)
    p = cls._fields.index("phi")
    phi0 = state.phi
    identity = model.identity(phi0)[:1]
    y = tuple(state)
    speed = 0.0
    if max_cfl is not None:
        with torch.no_grad():
            speed = float(_speed(model.velocity_and_rates(torch.tensor(0.0), state)[0], model.spacing))
    t, n, worst = 0.0, 0, 0.0
    v_mids: list[Tensor] = []
    dts: list[float] = []
    while 1.0 - t > 1e-9:
        remaining = 1.0 - t
        n_left = math.ceil(remaining * steps - 1e-6)
        if max_cfl is not None:
            if not math.isfinite(speed):
                raise ShootingError(f"non-finite velocity at t = {t:.3g} after {n} steps")
            n_left = max(n_left, math.ceil(remaining * speed / max_cfl - 1e-6))
        if n + n_left > max_steps:
            raise ShootingError(
                f"the flow needs {n + n_left} time steps (speed {speed:.3g} voxels per unit time at t = {t:.3g}, "
                f"Courant limit {max_cfl}), more than integrator.max_steps = {max_steps}")
        dt = remaining / n_left
        step = functools.partial(_shooting_step, model, tableau, cls, t, dt, update, identity, p)
        if checkpointed and any(x.requires_grad for x in y):
            out = checkpoint(step, *y, use_reentrant=False)
        else:
            out = step(*y)
        y, s = tuple(out[:-2]), float(out[-1])
        if update == "characteristics":  # kept only where the final map is traced through them
            v_mids.append(out[-2])
            dts.append(dt)
        worst = max(worst, s * dt) if math.isfinite(s) else math.inf
        speed = s
        t += dt
        n += 1
    bad = [name for name, x in zip(cls._fields, y) if not bool(torch.isfinite(x).all())]
    if bad or not math.isfinite(speed):
        advice = ("lower integrator.max_cfl" if max_cfl is not None else
                  "let the steps follow the flow (integrator.max_cfl > 0) or raise integrator.steps")
        raise ShootingError(f"non-finite {', '.join(bad) or 'velocity'} after shooting ({n} steps): "
                            f"the time step is too long for this velocity ({advice})")
    if update == "characteristics":  # phi0 o (the departure points of the whole flow)
        y = list(y)
        y[p] = compose_displaced(phi0, identity, trace_back(v_mids, dts, identity, model.spacing) - identity,
                                 model.spacing)
    if info is not None:
        info.steps, info.max_cfl = n, worst
    return cls(*y)


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
