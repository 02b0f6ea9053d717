"""Transport terms shared by the shooting models (one implementation of each PDE term)."""

from __future__ import annotations

from typing import Sequence

from torch import Tensor

import torch

from ..core.differences import difference, difference_transpose, partial, partial_transpose
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
    return _contract([partial(f, j, h) for j, h in enumerate(spacing)], c)


def epdiff(m: Tensor, v: Tensor, spacing: Sequence[float]) -> Tensor:
    """The EPDiff operator ad*_v m = div(m (x) v) + (D v)^T m.

    Equal, for smooth fields, to div(v) m + (D m) v + (D v)^T m; the flux form is used.

    Args:
        m: (B, d, *S) momentum.
        v: (B, d, *S) velocity.

    Returns:
        (B, d, *S): [:, i] = sum_j d_j (m_i v_j) + sum_j (d_i v_j) m_j. LDDMM's momentum equation
        is dm/dt = -epdiff(m, v).

    One autograd node with the adjoint written out (:class:`_EPDiff`) instead of a graph of
    products, sums and differences; differentiable twice.
    """
    return _EPDiff.apply(m, v, tuple(float(h) for h in spacing))


class _EPDiff(torch.autograd.Function):
    """ad*_v m with its adjoint. With P_j = D_j^T g (g = dL/d ad*_v m, D_j the difference along j):

        dL/dm_i = sum_j v_j P_j,i + sum_k g_k (D_k v)_i,
        dL/dv_j = sum_i m_i P_j,i + sum_k D_k^T (g_k m_j).

    Forward: the flux sum_j D_j (m v_j) and the contraction (D v)^T m from the d differences D_j v
    (saved for the backward, as the recorded graph saved them). Backward in place with plain
    operators, or, when a graph is being built (double backward), :func:`_epdiff_adjoint`.
    """

    @staticmethod
    def forward(ctx, m: Tensor, v: Tensor, spacing: tuple[float, ...]) -> Tensor:  # type: ignore[override]
        out = None
        dv = []
        for j, h in enumerate(spacing):
            flux = difference(m * v[:, j : j + 1], j, h)
            out = flux if out is None else out.add_(flux)
            dv.append(difference(v, j, h))
        out.add_(_contract(dv, m))
        ctx.save_for_backward(m, v, *dv)
        ctx.spacing = spacing
        return out

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        m, v, *dv = ctx.saved_tensors
        spacing = ctx.spacing
        if torch.is_grad_enabled():  # double backward: differentiable operators, D_k v recomputed from v
            return (*_epdiff_adjoint(g, m, v, spacing), None)
        d = len(spacing)
        grad_m = g[:, 0:1] * dv[0]
        for k in range(1, d):
            grad_m.addcmul_(g[:, k : k + 1], dv[k])
        grad_v = torch.empty_like(v)
        for j, h in enumerate(spacing):
            p = difference_transpose(g, j, h)
            grad_m.addcmul_(v[:, j : j + 1], p)
            torch.sum(p.mul_(m), 1, keepdim=True, out=grad_v[:, j : j + 1])
        for k, h in enumerate(spacing):
            grad_v.add_(difference_transpose(g[:, k : k + 1] * m, k, h))
        return grad_m, grad_v, None


def _epdiff_adjoint(g: Tensor, m: Tensor, v: Tensor, spacing: tuple[float, ...]) -> tuple[Tensor, Tensor]:
    """The adjoint of :class:`_EPDiff` with differentiable operators (for double backward)."""
    grad_m = sum(g[:, k : k + 1] * partial(v, k, h) for k, h in enumerate(spacing))
    grad_v = []
    for j, h in enumerate(spacing):
        p = partial_transpose(g, j, h)
        grad_m = grad_m + v[:, j : j + 1] * p
        grad_v.append((m * p).sum(1, keepdim=True))
    grad_v = torch.cat(grad_v, dim=1)
    for k, h in enumerate(spacing):
        grad_v = grad_v + partial_transpose(g[:, k : k + 1] * m, k, h)
    return grad_m, grad_v


def _contract(df: list[Tensor], c: Tensor) -> Tensor:
    """sum_n c_n grad f_n from the differences df[j] = D_j f: [:, j] = sum_n c_n df[j]_n, (B, d, *S)
    (EPDiff's (D v)^T m with f = v, c = m)."""
    return torch.cat([(dfj * c).sum(1, keepdim=True) for dfj in df], dim=1)


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
