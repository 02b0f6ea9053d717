"""Finite differences: the one module that owns them.

Rule: second-order central differences in the interior, first-order one-sided differences on the
first and last sample of each axis (equivalently, a ghost value extrapolated linearly). Linear
functions are differentiated exactly everywhere, including the border, so the identity map has
Jacobian I on the whole grid. Spacings are the domain spacings ``h_k`` of the grid.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

__all__ = [
    "partial",
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
    """
    dim = axis + 2
    n = f.shape[dim]
    if n == 1:
        return torch.zeros_like(f)
    first = (f.narrow(dim, 1, 1) - f.narrow(dim, 0, 1)) / h
    last = (f.narrow(dim, n - 1, 1) - f.narrow(dim, n - 2, 1)) / h
    if n == 2:
        return torch.cat([first, last], dim=dim)
    inner = (f.narrow(dim, 2, n - 2) - f.narrow(dim, 0, n - 2)) / (2.0 * h)
    return torch.cat([first, inner, last], dim=dim)


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
