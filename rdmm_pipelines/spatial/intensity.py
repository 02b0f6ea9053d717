"""Intensity normalisation as in the RDMM paper: percentiles ``lower``/``upper`` -> 0/1, clamped."""

from __future__ import annotations

import logging
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

from ..core.shapes import broadcast_or_raise
from .image import Image

__all__ = ["normalize_intensity", "percentiles"]

logger = logging.getLogger(__name__)

# torch.quantile refuses inputs with more than 2**24 elements
_TORCH_QUANTILE_MAX = 2**24

ImageOrTensor = TypeVar("ImageOrTensor", Image, Tensor)


def percentiles(values: Tensor, qs: tuple[float, ...]) -> tuple[float, ...]:
    """Percentiles (in %, linear interpolation between order statistics) of a 1D tensor.

    Uses ``torch.quantile`` up to 2**24 elements and ``numpy.percentile`` (same definition, exact)
    above; no subsampling.
    """
    if values.numel() == 0:
        raise ValueError("cannot take percentiles of an empty set of voxels")
    for q in qs:
        if not 0.0 <= q <= 100.0:
            raise ValueError(f"percentile {q} outside [0, 100]")
    flat = values.detach().reshape(-1)
    if flat.numel() <= _TORCH_QUANTILE_MAX:
        q = torch.tensor([x / 100.0 for x in qs], dtype=torch.float64, device=flat.device)
        return tuple(float(v) for v in torch.quantile(flat.to(torch.float64), q))
    arr = flat.cpu().numpy().astype(np.float64, copy=False)
    return tuple(float(v) for v in np.percentile(arr, list(qs)))


def _mask_values(data: Tensor, mask: Tensor | Image | None) -> Tensor:
    if mask is None:
        return data.reshape(-1)
    m = mask.data if isinstance(mask, Image) else mask
    m = m.to(device=data.device) != 0
    m = broadcast_or_raise(m, data.shape, "mask", "image")
    if not m.any():
        raise ValueError("mask is empty: no voxels to compute the percentiles over")
    return data[m]


def normalize_intensity(
    image: ImageOrTensor,
    lower: float = 0.1,
    upper: float = 99.9,
    mask: Tensor | Image | None = None,
) -> ImageOrTensor:
    """Map the ``lower`` and ``upper`` percentiles to 0 and 1, then clamp to [0, 1].

    The percentiles are computed once per image over all its voxels and channels (or over the
    voxels where ``mask`` is non-zero) and applied to every voxel.

    Args:
        image: an :class:`Image` (float data (C, *S)) or a float tensor of any shape (one image).
        lower, upper: percentiles in % (0 <= lower < upper <= 100).
        mask: optional tensor/Image broadcastable to the data shape, e.g. (*S) or (1, *S).

    Returns:
        The same type as ``image`` (same dtype, device and grid).

    Raises:
        ValueError: if the image is constant (the two percentiles coincide), or on bad arguments.
    """
    if not 0.0 <= lower < upper <= 100.0:
        raise ValueError(f"need 0 <= lower < upper <= 100, got lower={lower}, upper={upper}")
    data = image.data if isinstance(image, Image) else image
    if not isinstance(data, Tensor):
        raise TypeError(f"expected an Image or a Tensor, got {type(image).__name__}")
    if not data.is_floating_point():
        raise ValueError(f"cannot normalise integer (label) data of dtype {data.dtype}")
    lo, hi = percentiles(_mask_values(data, mask), (lower, upper))
    if not hi > lo:
        raise ValueError(
            f"image is constant between its {lower}th and {upper}th percentiles "
            f"(both {lo:.6g}); cannot normalise it"
        )
    out = ((data - lo) / (hi - lo)).clamp(0.0, 1.0)
    logger.debug("normalised intensities: p%g=%g -> 0, p%g=%g -> 1", lower, lo, upper, hi)
    return image.with_data(out) if isinstance(image, Image) else out
