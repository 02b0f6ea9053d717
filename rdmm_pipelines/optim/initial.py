"""Where an optimisation starts: a given initial momentum (and RDMM pre-weights) instead of zero.

Instance optimisation (issue 16) starts :func:`~rdmm_pipelines.register` from a network's
prediction: the network's m0 (and h0) are resampled onto the first scale's map grid and the same
L-BFGS objective is minimised from there. A momentum is a density in domain units over the fixed
image's domain, so linear resampling keeps its meaning (as between scales of the optimisation).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["InitialConditions"]


@dataclass(frozen=True)
class InitialConditions:
    """A starting point for the deformable optimisation.

    Attributes:
        m0: (1, d, *S) initial momentum, domain units, on any grid spanning the fixed image's
            domain (resampled linearly to each scale's map grid, values unchanged).
        h0: (1, N, *S) RDMM pre-weights (sum_i h_i^2 = 1 at every voxel, N = the kernel's
            Gaussians) for an optimised regulariser; None starts from the kernel's constant weights.
        iteration: the penalty schedule's iteration T at the start (lambda_Range, lambda_OMT of
            RDMM decay with T): a refinement that runs only the finest scale starts where the full
            schedule would reach that scale.
        source: a short description of where the start came from, for the record.
    """

    m0: Tensor
    h0: Tensor | None = None
    iteration: int = 0
    source: str = ""

    def check(self, ndim: int, n_gaussians: int, uses_preweights: bool) -> None:
        """Raise a ValueError naming the problem unless this start fits a ``ndim``-D registration
        whose kernel has ``n_gaussians`` Gaussians (``uses_preweights``: RDMM, optimised)."""
        m0 = self.m0
        if not isinstance(m0, Tensor) or m0.dim() != ndim + 2 or m0.shape[0] != 1 or m0.shape[1] != ndim:
            shape = tuple(m0.shape) if isinstance(m0, Tensor) else type(m0).__name__
            raise ValueError(f"initial momentum must be (1, {ndim}, *S) for a {ndim}D registration; got {shape}")
        if min(m0.shape[2:]) < 2:
            raise ValueError(f"initial momentum grid {tuple(m0.shape[2:])} is too small to resample")
        if not bool(torch.isfinite(m0).all()):
            raise ValueError("initial momentum contains NaN or infinite values")
        if not isinstance(self.iteration, int) or isinstance(self.iteration, bool) or self.iteration < 0:
            raise ValueError(f"initial iteration must be a non-negative integer; got {self.iteration!r}")
        if self.h0 is None:
            return
        if not uses_preweights:
            raise ValueError("initial pre-weights are given but the registration does not optimise RDMM pre-weights "
                             "(model rdmm with regional.source 'optimized')")
        h0 = self.h0
        if h0.dim() != ndim + 2 or h0.shape[0] != 1 or h0.shape[1] != n_gaussians:
            raise ValueError(f"initial pre-weights must be (1, {n_gaussians}, *S) for a kernel of {n_gaussians} "
                             f"Gaussians; got {tuple(h0.shape)}")
        if not bool(torch.isfinite(h0).all()) or bool((h0 < 0).any()):
            raise ValueError("initial pre-weights must be finite and non-negative")
