"""Pre-weights h0 (B, N, *S): h0 >= 0 and sum_i h0_i^2 = 1 pointwise.

Optimised pre-weights are parametrised by logits z: h0 = sqrt(softmax(z)), so the constraint holds
by construction and z is unconstrained. Pre-defined ones come from a region label map with one
h0^2 row per region.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ..core.gaussian import smooth_preserving
from ..core.interpolation import resize_field

__all__ = [
    "preweights_from_logits",
    "logits_from_preweights",
    "preweights_from_regions",
    "constant_preweights",
    "resize_preweights",
    "smooth_region_preweights",
]

_EPS = 1e-12


def preweights_from_logits(z: Tensor) -> Tensor:
    """h0 = sqrt(softmax(z)) over the Gaussian axis; (B, N, *S) -> (B, N, *S)."""
    return torch.softmax(z, dim=1).clamp_min(_EPS).sqrt()


def logits_from_preweights(h: Tensor) -> Tensor:
    """Inverse of :func:`preweights_from_logits` (up to a constant): z = log(h^2)."""
    return torch.log(h.pow(2).clamp_min(1e-8))


def constant_preweights(omega: Sequence[float], shape: Sequence[int], dtype=torch.float32, device=None) -> Tensor:
    """h0 = sqrt(omega) everywhere; returns (1, N, *shape)."""
    h = torch.tensor([float(o) for o in omega], dtype=torch.float64).clamp_min(0)
    h = (h / h.sum()).sqrt().to(dtype=dtype, device=device)
    return h.view(1, -1, *([1] * len(shape))).expand(1, h.numel(), *shape).contiguous()


def preweights_from_regions(regions: Tensor, region_weights: Sequence[Sequence[float]]) -> Tensor:
    """Pre-defined pre-weights from a region label map.

    Args:
        regions: (*S) integer labels r = 0, 1, ...; region r gets h0^2 = region_weights[r].
        region_weights: R rows of N non-negative numbers summing to 1.

    Returns:
        (1, N, *S) float32 pre-weights.
    """
    table = torch.tensor([[float(x) for x in row] for row in region_weights], dtype=torch.float64)
    table = (table / table.sum(1, keepdim=True)).sqrt().to(torch.float32)
    labels = regions.long()
    if labels.numel() and (labels.min() < 0 or labels.max() >= table.shape[0]):
        found = sorted(int(v) for v in torch.unique(labels).tolist())
        raise ValueError(
            f"region map has labels {found} but region weights are given for labels 0..{table.shape[0] - 1}"
        )
    h = table.to(labels.device)[labels]  # (*S, N)
    return h.movedim(-1, 0).unsqueeze(0).contiguous()


def smooth_region_preweights(h: Tensor, spacing: Sequence[float], sigma: float) -> Tensor:
    """Gaussian-smooth pre-weights made from a region map and renormalise sum_i h_i^2 = 1.

    Args:
        h: (B, N, *S) pre-weights; sigma: domain units (0 returns ``h`` unchanged).
    """
    if sigma <= 0:
        return h
    out = smooth_preserving(h, spacing, sigma)
    return out / out.norm(dim=1, keepdim=True).clamp_min(_EPS)


def resize_preweights(h: Tensor, shape: Sequence[int]) -> Tensor:
    """Linear resampling to ``shape`` followed by renormalisation to sum_i h_i^2 = 1."""
    out = resize_field(h, shape)
    return out / out.norm(dim=1, keepdim=True).clamp_min(_EPS)
