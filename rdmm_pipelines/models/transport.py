"""Transport terms shared by the shooting models (one implementation of each PDE term)."""

from __future__ import annotations

from typing import Sequence

from torch import Tensor

from ..core.differences import gradient, partial

__all__ = ["advect", "epdiff"]


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
    return (gradient(phi, spacing) * v.unsqueeze(1)).sum(2)


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
    transpose = (gradient(v, spacing) * m.unsqueeze(2)).sum(1)
    return flux + transpose
