"""Warping label maps with a registration transform (nearest neighbour or one-hot linear)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.interpolation import sample_voxel
from ..spatial import Grid, Image

__all__ = ["warp_labels", "LABEL_WARP_METHODS"]

LABEL_WARP_METHODS = ("nearest", "onehot")

# float64 holds every integer up to 2**53 exactly; nearest sampling goes through floats
_MAX_EXACT_LABEL = 2**53


def warp_labels(
    labels: Image,
    moving_voxels: Tensor,
    fixed_grid: Grid,
    method: str = "nearest",
    chunk_size: int = 16,
) -> Image:
    """Pull a moving-space label map back onto the fixed grid.

    ``out(i) = labels(moving_voxels(i))`` for every fixed voxel ``i``; outside the label map's
    voxel centres (after rounding, for ``"nearest"``) the result is background 0.

    Methods:
        * ``"nearest"``: the label of the nearest voxel (``sample_voxel`` nearest, zero padding).
        * ``"onehot"``: for each foreground label ``l`` the indicator ``[labels == l]`` is
          interpolated linearly (zero padding), giving weights ``w_l(i)`` in [0, 1]. Background
          gets ``w_0 = 1 - sum_l w_l`` (so outside the map counts as background) and the result is
          ``argmax_l w_l`` over background and all foreground labels. Ties go to background, then
          to the smaller label value. This gives smoother boundaries than nearest neighbour; where
          the warp moves by whole voxels both methods agree exactly. Labels are processed
          ``chunk_size`` at a time keeping a running maximum and argmax, so memory does not grow
          with the number of labels (e.g. 116 AAL labels).

    Args:
        labels: (1, *S_moving) integer label map in moving space (0 = background).
        moving_voxels: (1, d, *S_fixed) voxel indices into ``labels.grid`` per fixed voxel
            (e.g. ``result.moving_voxels(labels.grid)``).
        fixed_grid: the grid of the output (``S_fixed == fixed_grid.shape``).
        method: ``"nearest"`` or ``"onehot"``.
        chunk_size: labels interpolated at once by ``"onehot"``.

    Returns:
        Image (1, *S_fixed) int64 on ``fixed_grid``, on ``labels``'s device.
    """
    if method not in LABEL_WARP_METHODS:
        raise ValueError(f"unknown label warp method {method!r}; use one of {LABEL_WARP_METHODS}")
    if not isinstance(labels, Image):
        raise TypeError(f"labels must be an Image, got {type(labels).__name__}")
    if not labels.is_labels:
        raise ValueError(
            f"labels have dtype {labels.data.dtype}; warp_labels needs an integer label map "
            "(load it with load_labels)"
        )
    if labels.channels != 1:
        raise ValueError(f"label map has {labels.channels} channels; expected 1")
    d = fixed_grid.ndim
    if labels.ndim != d:
        raise ValueError(f"label map is {labels.ndim}D but the fixed grid is {d}D")
    expected = (1, d, *fixed_grid.shape)
    if tuple(moving_voxels.shape) != expected:
        raise ValueError(
            f"moving_voxels shape {tuple(moving_voxels.shape)} must be {expected} "
            "(voxel indices into the label map per fixed voxel)"
        )
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    data = labels.data
    device = data.device
    if method == "nearest":
        if data.numel() and int(data.abs().max()) >= _MAX_EXACT_LABEL:
            raise ValueError(f"label values reach {int(data.abs().max())}; at most 2**53 are supported")
        coords = moving_voxels.to(device=device, dtype=torch.float64)
        out = sample_voxel(data[None].to(torch.float64), coords, mode="nearest", padding="zeros")[0]
        return Image(out.round().to(torch.int64), fixed_grid)
    return Image(_warp_onehot(data[0], moving_voxels, chunk_size)[None], fixed_grid)


def _warp_onehot(data: Tensor, moving_voxels: Tensor, chunk_size: int) -> Tensor:
    """(*S_moving) int labels, (1, d, *S_fixed) coordinates -> (*S_fixed) int64 (see warp_labels)."""
    work = torch.float64 if moving_voxels.dtype == torch.float64 else torch.float32
    coords = moving_voxels.to(device=data.device, dtype=work)
    values = torch.unique(data)
    values = values[values != 0]
    # background weight: 1 - interpolated foreground indicator (outside the map is background)
    fg = (data != 0).to(work)[None, None]
    best = 1.0 - sample_voxel(fg, coords, mode="linear", padding="zeros")[0, 0]
    arg = torch.zeros(best.shape, dtype=torch.int64, device=data.device)
    for start in range(0, values.numel(), chunk_size):
        chunk = values[start : start + chunk_size]
        onehot = (data[None] == chunk.view(-1, *([1] * data.dim()))).to(work)[None]
        w = sample_voxel(onehot, coords, mode="linear", padding="zeros")[0]  # (K, *S_fixed)
        w_max, k = w.max(dim=0)  # first maximum -> the smaller label within the chunk
        better = w_max > best
        best = torch.where(better, w_max, best)
        arg = torch.where(better, chunk.to(torch.int64)[k], arg)
        del onehot, w
    return arg
