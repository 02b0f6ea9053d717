"""Finite differences: the one module that owns them.

Rule: second-order central differences in the interior, first-order one-sided differences on the
first and last sample of each axis (equivalently, a ghost value extrapolated linearly). Linear
functions are differentiated exactly everywhere, including the border, so the identity map has
Jacobian I on the whole grid. Spacings are the domain spacings ``h_k`` of the grid.
"""

from __future__ import annotations

import functools
from typing import Sequence

import torch
from torch import Tensor

from .linear import apply_linear

__all__ = [
    "partial",
    "partial_transpose",
    "difference",
    "difference_transpose",
    "gradient",
    "divergence",
    "jacobian",
    "jacobian_determinant",
]


def partial(f: Tensor, axis: int, h: float) -> Tensor:
    """Derivative of ``f`` along spatial ``axis``.

    Args:
        f: (B, C, *S) with d spatial axes.
        axis: spatial axis k in [0, d).
        h: grid spacing along that axis.

    Returns:
        (B, C, *S): (f[i+1] - f[i-1]) / 2h inside, (f[1] - f[0]) / h and (f[-1] - f[-2]) / h at the ends.
        An axis of length 1 has derivative 0.

    The operator D is linear; its gradient is the explicit transpose D^T (one pass over the
    field) rather than autograd's chain of slice and concatenate backwards, which allocate and
    zero a full-size buffer per slice (about a fifth of a shooting objective's time).
    """
    dim, h = axis + 2, float(h)
    return apply_linear(f, functools.partial(_difference, dim=dim, h=h),
                        functools.partial(_difference_transpose, dim=dim, h=h))


def partial_transpose(g: Tensor, axis: int, h: float) -> Tensor:
    """D^T g along spatial ``axis``, the adjoint of :func:`partial`: <D f, g> = <f, D^T g>.

    Args:
        g: (B, C, *S).

    Returns:
        (B, C, *S); differentiable (its backward is D).
    """
    dim, h = axis + 2, float(h)
    return apply_linear(g, functools.partial(_difference_transpose, dim=dim, h=h),
                        functools.partial(_difference, dim=dim, h=h))


def difference(f: Tensor, axis: int, h: float) -> Tensor:
    """D f of :func:`partial` without autograd bookkeeping (for the forward of autograd Functions
    that write their own backward); (B, C, *S) -> (B, C, *S)."""
    return _difference(f, axis + 2, float(h))


def difference_transpose(g: Tensor, axis: int, h: float) -> Tensor:
    """D^T g of :func:`partial_transpose` without autograd bookkeeping; (B, C, *S) -> (B, C, *S)."""
    return _difference_transpose(g, axis + 2, float(h))


def _difference(f: Tensor, dim: int, h: float) -> Tensor:
    """D f along tensor dimension ``dim`` (the rule of :func:`partial`), written into one buffer."""
    n = f.shape[dim]
    if n == 1:
        return torch.zeros_like(f)
    out = torch.empty_like(f, memory_format=torch.contiguous_format)
    for i, (a, b) in ((0, (1, 0)), (n - 1, (n - 1, n - 2))):
        torch.sub(f.narrow(dim, a, 1), f.narrow(dim, b, 1), out=out.narrow(dim, i, 1))
    out.narrow(dim, 0, 1).div_(h)
    out.narrow(dim, n - 1, 1).div_(h)
    if n > 2:
        inner = out.narrow(dim, 1, n - 2)
        torch.sub(f.narrow(dim, 2, n - 2), f.narrow(dim, 0, n - 2), out=inner)
        inner.mul_(0.5 / h)
    return out


def _difference_transpose(g: Tensor, dim: int, h: float) -> Tensor:
    """D^T g: <D f, g> = <f, D^T g> for the operator of :func:`_difference`.

    Interior rows i send g_i / 2h to i + 1 and -g_i / 2h to i - 1; the end rows send
    -g_0 / h, +g_0 / h to 0, 1 and -g_{n-1} / h, +g_{n-1} / h to n-2, n-1.
    """
    n = g.shape[dim]
    if n == 1:
        return torch.zeros_like(g)
    out = torch.zeros_like(g, memory_format=torch.contiguous_format)
    if n > 2:
        gi = g.narrow(dim, 1, n - 2) * (0.5 / h)
        out.narrow(dim, 2, n - 2).add_(gi)
        out.narrow(dim, 0, n - 2).sub_(gi)
    g0, g1 = g.narrow(dim, 0, 1) / h, g.narrow(dim, n - 1, 1) / h
    out.narrow(dim, 0, 1).sub_(g0)
    out.narrow(dim, 1, 1).add_(g0)
    out.narrow(dim, n - 2, 1).sub_(g1)
    out.narrow(dim, n - 1, 1).add_(g1)
    return out


def gradient(f: Tensor, spacing: Sequence[float]) -> Tensor:
    """Spatial gradient.

    Args:
        f: (B, C, *S), d = len(spacing).
        spacing: (h_0, ..., h_{d-1}).

    Returns:
        (B, C, d, *S) with [:, c, j] = d f_c / d x_j.
    """
    _check(f, spacing)
    return torch.stack([partial(f, j, h) for j, h in enumerate(spacing)], dim=2)


def jacobian(phi: Tensor, spacing: Sequence[float]) -> Tensor:
    """Jacobian matrix field of a vector field.

    Args:
        phi: (B, d, *S) vector field (a map or a velocity).

    Returns:
        (B, d, d, *S) with [:, i, j] = d phi_i / d x_j.
    """
    if phi.shape[1] != len(spacing):
        raise ValueError(f"vector field has {phi.shape[1]} components for {len(spacing)} axes")
    return gradient(phi, spacing)


def divergence(v: Tensor, spacing: Sequence[float]) -> Tensor:
    """Divergence of a vector field.

    Args:
        v: (B, d, *S).

    Returns:
        (B, 1, *S): sum_j d v_j / d x_j.
    """
    _check(v, spacing)
    if v.shape[1] != len(spacing):
        raise ValueError(f"vector field has {v.shape[1]} components for {len(spacing)} axes")
    return sum(partial(v[:, j : j + 1], j, h) for j, h in enumerate(spacing))


def jacobian_determinant(phi: Tensor, spacing: Sequence[float]) -> Tensor:
    """Full determinant of the Jacobian of a map (not the product of its diagonal).

    Args:
        phi: (B, d, *S) map; ``spacing`` the grid spacing in the same units as the map values,
            so the identity has determinant 1.

    Returns:
        (B, 1, *S) det(D phi).
    """
    J = jacobian(phi, spacing)
    d = J.shape[1]
    if d == 2:
        det = J[:, 0, 0] * J[:, 1, 1] - J[:, 0, 1] * J[:, 1, 0]
    elif d == 3:
        det = (
            J[:, 0, 0] * (J[:, 1, 1] * J[:, 2, 2] - J[:, 1, 2] * J[:, 2, 1])
            - J[:, 0, 1] * (J[:, 1, 0] * J[:, 2, 2] - J[:, 1, 2] * J[:, 2, 0])
            + J[:, 0, 2] * (J[:, 1, 0] * J[:, 2, 1] - J[:, 1, 1] * J[:, 2, 0])
        )
    else:
        raise ValueError(f"maps must be 2D or 3D, got {d} components")
    return det.unsqueeze(1)


def _check(f: Tensor, spacing: Sequence[float]) -> None:
    if f.dim() != len(spacing) + 2:
        raise ValueError(
            f"tensor of shape {tuple(f.shape)} is not (B, C, *S) with {len(spacing)} spatial axes"
        )
