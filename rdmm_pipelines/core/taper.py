"""The border taper of the velocity field: the boundary closure that keeps EPDiff's energy.

Discrete EPDiff, ``dm/dt = -(div(m (x) v) + (D v)^T m)``, conserves ``E = 1/2 <m, v>`` when the
difference operator ``D`` is skew-adjoint, ``<f, D g> = -<D f, g>``. Central differences are
skew-adjoint on fields that vanish on the outermost sample of every axis; the one-sided end rows
of :mod:`.differences` (needed so that maps have an exact Jacobian at the border) are not. Momentum
on the border then creates energy (measured: E(1)/E(0) = 2.06 on a registration result whose m0
had 0.7 % of its mass on the outermost voxels).

The closure: the metric is ``K' = T K T`` with a taper ``T(x)`` that is 0 on the outermost voxel of
every axis and rises smoothly to 1 over ``width`` voxels. ``K'`` stays symmetric positive
semi-definite, ``v = K' m`` vanishes on the border, so every boundary term of the summation by
parts vanishes and the discrete energy is conserved up to the time discretisation, whatever the
momentum on the border. The deformation is the identity on the image border (ANTs' SyN does the
same by default, and the RDMM authors' code masks the velocity over 3-4 border voxels).
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["border_taper", "taper_profile"]


def taper_profile(n: int, width: float) -> list[float]:
    """The 1D taper along an axis of ``n`` samples.

    ``T(i) = sin^2(pi/2 * min(1, dist(i) / w))`` with ``dist(i) = min(i, n - 1 - i)`` (0 on the two
    outermost samples) and ``w = max(1, min(width, (n - 1) / 8))``, so a short axis (a coarse
    scale, a small image) keeps three quarters of its length free (measured on a 16-voxel map: a
    4-voxel rise kept a small network's training loss from falling 15 % in 12 epochs,
    ``tests/test_learning.py``, where a 2-voxel rise or none let it). Axes with fewer than 3
    samples, and ``width <= 0``, are not tapered (T = 1).
    """
    if n < 3 or width <= 0:
        return [1.0] * n
    w = max(1.0, min(float(width), (n - 1) / 8.0))
    return [math.sin(0.5 * math.pi * min(1.0, min(i, n - 1 - i) / w)) ** 2 for i in range(n)]


@functools.lru_cache(maxsize=64)
def _taper(shape: tuple[int, ...], width: float, dtype: torch.dtype, device: str) -> Tensor:
    out = torch.ones((1, 1) + shape, dtype=torch.float64)
    for k, n in enumerate(shape):
        view = [1] * (len(shape) + 2)
        view[k + 2] = n
        out = out * torch.tensor(taper_profile(n, width), dtype=torch.float64).view(view)
    return out.to(dtype=dtype, device=device)


def border_taper(shape: Sequence[int], width: float, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> Tensor:
    """The separable border taper ``T(x) = prod_k T_k(x_k)`` (see :func:`taper_profile`).

    Args:
        shape: spatial shape (n_0, ..., n_{d-1}).
        width: rise width in voxels of this grid.

    Returns:
        (1, 1, *shape), cached per shape, width, dtype and device (do not modify in place).
    """
    dev = str(torch.device(device) if device is not None else torch.device("cpu"))
    return _taper(tuple(int(n) for n in shape), float(width), dtype, dev)
