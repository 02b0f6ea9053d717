"""Transport terms shared by the shooting models (one implementation of each PDE term)."""

from __future__ import annotations

from typing import Sequence

from torch import Tensor

import torch

from ..core.differences import partial

__all__ = ["advect", "epdiff", "contracted_gradient"]


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
