"""The metric K: velocities from momenta (DESIGN.md 1.1).

* :class:`MultiGaussianMetric` (vSVF, LDDMM): spatially constant weights,
  ``v = K m = sum_i omega_i K_sigma_i * m`` with ``omega_i = w_i^2`` summing to 1.
* :class:`RegionalMetric` (RDMM): spatially varying weights ``w_i(x) = (G_sigma h_i)(x)``,
  ``v = sum_i w_i * nu_i`` with ``nu_i = K_sigma_i * (w_i m)``.

Both are symmetric positive semi-definite on the grid; energies are integrals in domain units
(sums times the voxel volume prod_k h_k). With ``border > 0`` both are wrapped as ``T K T`` by the
border taper T of :mod:`rdmm_pipelines.core.taper` (v = 0 on the image border; the discrete energy
is then conserved with momentum on the border).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from .core.gaussian import (
    gaussian_filter_each,
    gaussian_mixture,
    smooth_preserving,
    smooth_preserving_adjoint,
)
from .core.taper import border_taper

__all__ = ["MultiGaussianMetric", "RegionalMetric", "inner_product", "sigma_map"]


def inner_product(a: Tensor, b: Tensor, spacing: Sequence[float]) -> Tensor:
    """L2 inner product over the domain.

    Args:
        a, b: (B, C, *S).

    Returns:
        (B,): sum_x sum_c a_c(x) b_c(x) * prod_k h_k.
    """
    return (a * b).flatten(1).sum(1) * math.prod(spacing)


@dataclass(frozen=True)
class MultiGaussianMetric:
    """K = sum_i omega_i K_sigma_i with constant weights (vSVF and LDDMM).

    Attributes:
        sigmas: Gaussian standard deviations in domain units, increasing.
        weights: omega_i >= 0 summing to 1 (the squared weights w_i^2 of the paper).
        border: width in voxels of the border taper T (0: none; K is then used as is).
    """

    sigmas: tuple[float, ...]
    weights: tuple[float, ...]
    border: float = 0.0

    def __post_init__(self) -> None:
        _check_sigmas(self.sigmas)
        _check_border(self.border)
        if len(self.weights) != len(self.sigmas):
            raise ValueError(f"{len(self.weights)} weights for {len(self.sigmas)} sigmas")
        if min(self.weights) < 0 or abs(sum(self.weights) - 1.0) > 1e-6:
            raise ValueError(f"metric weights must be >= 0 and sum to 1, got {self.weights}")

    def velocity(self, m: Tensor, spacing: Sequence[float]) -> Tensor:
        """v = T K T m (v = K m without a border taper).

        Args:
            m: (B, d, *S) momentum.

        Returns:
            (B, d, *S) velocity.
        """
        if self.border <= 0:
            return gaussian_mixture(m, spacing, self.sigmas, self.weights)
        t = _taper_like(m, self.border)
        return t * gaussian_mixture(t * m, spacing, self.sigmas, self.weights)


@dataclass(frozen=True)
class RegionalMetric:
    """RDMM's spatially varying kernel v = sum_i w_i K_sigma_i (w_i m), w_i = G_sigma h_i.

    Attributes:
        sigmas: Gaussian standard deviations (domain units), increasing.
        smoothing_sigma: sigma of G, the pre-weight smoother (domain units).
        border: width in voxels of the border taper T (0: none).
    """

    sigmas: tuple[float, ...]
    smoothing_sigma: float
    border: float = 0.0

    def __post_init__(self) -> None:
        _check_sigmas(self.sigmas)
        _check_border(self.border)
        if self.smoothing_sigma <= 0:
            raise ValueError(f"smoothing_sigma must be > 0, got {self.smoothing_sigma}")

    def weights(self, h: Tensor, spacing: Sequence[float]) -> Tensor:
        """w = G_sigma h (constant-preserving smoothing).

        Args:
            h: (B, N, *S) pre-weights.

        Returns:
            (B, N, *S) weights.
        """
        self._check_n(h)
        return smooth_preserving(h, spacing, self.smoothing_sigma)

    def weights_adjoint(self, f: Tensor, spacing: Sequence[float]) -> Tensor:
        """G_sigma^T f, the adjoint of :meth:`weights`; (B, N, *S) -> (B, N, *S)."""
        return smooth_preserving_adjoint(f, spacing, self.smoothing_sigma)

    def tapered(self, m: Tensor) -> Tensor:
        """T m, (B, C, *S) (m itself without a border taper)."""
        return m if self.border <= 0 else _taper_like(m, self.border) * m

    def velocity(self, m: Tensor, w: Tensor, spacing: Sequence[float]) -> tuple[Tensor, Tensor]:
        """v = T sum_i w_i nu_i with nu_i = K_sigma_i (w_i T m).

        Args:
            m: (B, d, *S) momentum.
            w: (B, N, *S) weights.

        Returns:
            v: (B, d, *S) and nu: (B, N, d, *S). The weight force of RDMM is
            ``G^T ((T m) . nu_i)`` (see :meth:`tapered`).
        """
        self._check_n(w)
        wm = w.unsqueeze(2) * self.tapered(m).unsqueeze(1)
        nu = gaussian_filter_each(wm, spacing, self.sigmas)
        v = self.tapered((w.unsqueeze(2) * nu).sum(1))
        return v, nu

    def _check_n(self, h: Tensor) -> None:
        if h.shape[1] != len(self.sigmas):
            raise ValueError(f"pre-weights have {h.shape[1]} channels for {len(self.sigmas)} Gaussians")


def sigma_map(w: Tensor, sigmas: Sequence[float]) -> Tensor:
    """Local effective scale sigma(x) = sqrt(sum_i w_i(x)^2 sigma_i^2).

    Args:
        w: (B, N, *S) weights.

    Returns:
        (B, 1, *S).
    """
    s2 = torch.tensor([s * s for s in sigmas], dtype=w.dtype, device=w.device)
    return (w.pow(2) * s2.view(1, -1, *([1] * (w.dim() - 2)))).sum(1, keepdim=True).sqrt()


def _taper_like(f: Tensor, width: float) -> Tensor:
    return border_taper(f.shape[2:], width, f.dtype, f.device)


def _check_border(border: float) -> None:
    if not border >= 0:
        raise ValueError(f"border taper width must be >= 0 voxels, got {border}")


def _check_sigmas(sigmas: Sequence[float]) -> None:
    if len(sigmas) == 0 or min(sigmas) <= 0:
        raise ValueError(f"sigmas must be a non-empty sequence of positive numbers, got {sigmas}")
    if list(sigmas) != sorted(sigmas):
        raise ValueError(f"sigmas must be increasing, got {sigmas}")
