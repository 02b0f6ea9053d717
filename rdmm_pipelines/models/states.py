"""ODE states of the shooting models: named tuples of tensors (torchdiffeq accepts tuples)."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

__all__ = ["FlowState", "GeodesicState", "RegionalState"]


class FlowState(NamedTuple):
    """vSVF: the map and the stationary velocity (constant along the flow).

    phi: (B, d, *S) pull-back map phi^-1(t) in domain coordinates.
    v: (B, d, *S) velocity K m0.
    """

    phi: Tensor
    v: Tensor


class GeodesicState(NamedTuple):
    """LDDMM: momentum and map.

    m: (B, d, *S) momentum m(t).
    phi: (B, d, *S) pull-back map phi^-1(t).
    """

    m: Tensor
    phi: Tensor


class RegionalState(NamedTuple):
    """RDMM: momentum, map and the initial pre-weights (constant; h(t) = h0 o phi^-1(t)).

    m: (B, d, *S).  phi: (B, d, *S).  h0: (B, N, *S), h0 >= 0, sum_i h0_i^2 = 1.
    """

    m: Tensor
    phi: Tensor
    h0: Tensor
