"""Transport terms shared by the shooting models (one implementation of each PDE term)."""

from __future__ import annotations

from typing import Sequence

from torch import Tensor

import torch

from ..core.differences import partial
from ..core.interpolation import sample

__all__ = ["advect", "epdiff", "contracted_gradient", "compose_displaced", "departure_displacement", "trace_back"]


def advect(phi: Tensor, v: Tensor, spacing: Sequence[float]) -> Tensor:
    """Directional derivative (D phi) v.

    The pull-back map obeys d/dt phi^-1 = -(D phi^-1) v; a scalar field h advected by v obeys
    d/dt h = -(D h) v.

    Args:
        phi: (B, C, *S) transported field (a map when C = d).
        v: (B, d, *S) velocity.

    Returns:
        (B, C, *S): [:, c] = sum_j d phi_c / d x_j * v_j.
    """
    out = partial(phi, 0, spacing[0]) * v[:, 0:1]
    for j in range(1, len(spacing)):
        out = out + partial(phi, j, spacing[j]) * v[:, j : j + 1]
    return out


def contracted_gradient(f: Tensor, c: Tensor, spacing: Sequence[float]) -> Tensor:
    """The gradient of a field contracted with a co-field: sum_n c_n grad f_n.

    Args:
        f: (B, C, *S).
        c: (B, C, *S) (or broadcastable).

    Returns:
        (B, d, *S): [:, j] = sum_n c_n d f_n / d x_j. EPDiff's (D v)^T m is
        ``contracted_gradient(v, m)``; RDMM's weight force sum_i F_i grad h_i is
        ``contracted_gradient(h, F)``.
    """
    return torch.cat([(partial(f, j, h) * c).sum(1, keepdim=True) for j, h in enumerate(spacing)], dim=1)


def epdiff(m: Tensor, v: Tensor, spacing: Sequence[float]) -> Tensor:
    """The EPDiff operator ad*_v m = div(m (x) v) + (D v)^T m.

    Equal, for smooth fields, to div(v) m + (D m) v + (D v)^T m; the flux form is used.

    Args:
        m: (B, d, *S) momentum.
        v: (B, d, *S) velocity.

    Returns:
        (B, d, *S): [:, i] = sum_j d_j (m_i v_j) + sum_j (d_i v_j) m_j. LDDMM's momentum equation
        is dm/dt = -epdiff(m, v).
    """
    flux = sum(partial(m * v[:, j : j + 1], j, h) for j, h in enumerate(spacing))
    return flux + contracted_gradient(v, m, spacing)


def compose_displaced(phi: Tensor, identity: Tensor, u: Tensor, spacing: Sequence[float]) -> Tensor:
    """The map sampled at displaced points: ``phi(x + u(x))``.

    The semi-Lagrangian update of a pull-back map, ``phi^-1(t + dt) = phi^-1(t) o (id + u)`` with
    ``id + u`` the departure points of the flow over the step. Sampled as a displacement
    (``phi - id``, bi/trilinear, border values outside), so the identity stays exact and points
    leaving the grid keep the border's displacement.

    Args:
        phi: (B, d, *S) map in domain coordinates.
        identity: (1, d, *S) the identity map of the grid.
        u: (B, d, *S) displacement in domain units.

    Returns:
        (B, d, *S).
    """
    x = identity + u
    return x + sample(phi - identity, x, spacing, mode="linear", padding="border")


def departure_displacement(v: Tensor, dt: float, identity: Tensor, spacing: Sequence[float]) -> Tensor:
    """Displacement to the departure points of a step of length dt: ``y(x) - x``.

    Second order (midpoint) back-tracing of the characteristics, ``y = x - dt v(x - dt/2 v(x))``,
    with ``v`` the velocity at the middle of the step (the Runge-Kutta average of its stages).

    Args:
        v: (B, d, *S) velocity (domain units per unit time).
        identity: (1, d, *S).

    Returns:
        (B, d, *S) the displacement ``-dt v_mid``.
    """
    return _midpoint_back(v, dt, identity, v, spacing) - identity


def _midpoint_back(v: Tensor, dt: float, y: Tensor, v_at_y: Tensor, spacing: Sequence[float]) -> Tensor:
    """One midpoint step backwards along the characteristics: ``y - dt v(y - dt/2 v(y))``, with
    ``v_at_y`` = v(y) given (on the grid it is v itself, no interpolation)."""
    return y - dt * sample(v, y - (0.5 * dt) * v_at_y, spacing, mode="linear", padding="border")


def trace_back(velocities: list[Tensor], dts: list[float], identity: Tensor, spacing: Sequence[float]) -> Tensor:
    """Departure points at t = 0 of the particles at the grid points at t = 1.

    The characteristics are traced backwards through each step's mid-step velocity v_n (sampled,
    never the map), ``y_n = y_{n+1} - dt_n v_n(y_{n+1} - dt_n/2 v_n(y_{n+1}))``, from ``y_N = x``.
    Only the smooth velocities are interpolated, so the map does not diffuse with the number of
    steps as a map composed with itself at every step does (measured in docs/numerics.md).

    Args:
        velocities: per step n, (B, d, *S) velocity at the middle of the step.
        dts: the step lengths.
        identity: (1, d, *S).

    Returns:
        (B, d, *S) the pull-back map phi^-1(1) of an identity start.
    """
    y = identity.expand(velocities[0].shape[0], *identity.shape[1:]) if velocities else identity
    for v, dt in zip(reversed(velocities), reversed(dts)):
        y = _midpoint_back(v, dt, y, sample(v, y, spacing, mode="linear", padding="border"), spacing)
    return y
