"""Interpolation: the only place that converts coordinates to ``grid_sample``'s convention.

Coordinates in this package are *voxel-index* or *domain* coordinates with channel ``k`` giving
array axis ``k`` (DESIGN.md section 2). ``torch.nn.functional.grid_sample`` wants the last
dimension ordered (W, H[, D]) = reversed axes and values in [-1, 1] with ``align_corners=True``
meaning -1 and +1 are the centres of the first and last voxel. Both conversions live here.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["sample", "sample_voxel", "voxel_to_grid_sample", "resize_field", "identity_map"]

_MODES = {"linear": "bilinear", "bilinear": "bilinear", "nearest": "nearest"}
_PADDING = ("border", "zeros", "reflection")


def voxel_to_grid_sample(coords: Tensor, shape: Sequence[int]) -> Tensor:
    """Convert voxel-index coordinates to ``grid_sample`` coordinates.

    Args:
        coords: (B, d, *S_out) voxel indices into a field of spatial ``shape``; channel k is axis k.
        shape: the sampled field's spatial shape (n_0, ..., n_{d-1}).

    Returns:
        (B, *S_out, d) with g_k = 2 i_k / (n_k - 1) - 1, last dimension in reversed axis order.
        Axes of length 1 map to 0.
    """
    d = coords.shape[1]
    if d != len(shape):
        raise ValueError(f"coordinates have {d} channels but the field has {len(shape)} spatial axes")
    scale = torch.tensor(
        [2.0 / (n - 1) if n > 1 else 0.0 for n in shape], dtype=coords.dtype, device=coords.device
    )
    g = coords * scale.view(1, d, *([1] * d)) - torch.tensor(
        [1.0 if n > 1 else 0.0 for n in shape], dtype=coords.dtype, device=coords.device
    ).view(1, d, *([1] * d))
    return g.flip(1).movedim(1, -1)


def sample_voxel(
    field: Tensor, coords: Tensor, mode: str = "linear", padding: str = "border"
) -> Tensor:
    """Sample ``field`` at voxel-index coordinates.

    Args:
        field: (B, C, *S_in), d = 2 or 3 spatial axes.
        coords: (B, d, *S_out) voxel indices (channel k = axis k). B may be 1 for broadcasting.
        mode: "linear" (bi/trilinear) or "nearest".
        padding: "border", "zeros" or "reflection" (outside the field's first/last voxel centres).

    Returns:
        (B, C, *S_out).
    """
    if mode not in _MODES:
        raise ValueError(f"unknown interpolation mode {mode!r}; use one of {sorted(_MODES)}")
    if padding not in _PADDING:
        raise ValueError(f"unknown padding {padding!r}; use one of {_PADDING}")
    d = field.dim() - 2
    if d not in (2, 3) or coords.dim() != d + 2 or coords.shape[1] != d:
        raise ValueError(
            f"field shape {tuple(field.shape)} and coordinates shape {tuple(coords.shape)} "
            "must be (B, C, *S) and (B, d, *S') with d = 2 or 3"
        )
    grid = voxel_to_grid_sample(coords, field.shape[2:]).to(field.dtype)
    # Far outside the field (|g| > 3, three field extents away) the value and the gradient do not
    # depend on the coordinate for either padding, so clamping there changes nothing; it also keeps
    # non-finite coordinates (a diverged line-search trial) away from grid_sample, whose backward
    # pass crashes on them.
    grid = torch.nan_to_num(grid, nan=3.0, posinf=3.0, neginf=-3.0).clamp(-3.0, 3.0)
    if grid.shape[0] != field.shape[0]:
        if grid.shape[0] == 1:
            grid = grid.expand(field.shape[0], *grid.shape[1:])
        elif field.shape[0] == 1:
            field = field.expand(grid.shape[0], *field.shape[1:])
        else:
            raise ValueError(f"batch sizes differ: field {field.shape[0]}, coordinates {grid.shape[0]}")
    return F.grid_sample(field, grid, mode=_MODES[mode], padding_mode=padding, align_corners=True)


def sample(
    field: Tensor,
    coords: Tensor,
    spacing: Sequence[float],
    mode: str = "linear",
    padding: str = "border",
) -> Tensor:
    """Sample ``field`` at domain coordinates ``x_k = i_k * spacing_k``.

    Args:
        field: (B, C, *S_in) on a grid with domain spacing ``spacing`` (one value per axis).
        coords: (B, d, *S_out) domain coordinates (e.g. a pull-back map phi^-1).
        spacing: the field grid's domain spacing h_k.

    Returns:
        (B, C, *S_out): field o coords.
    """
    d = coords.shape[1]
    inv_h = torch.tensor([1.0 / h for h in spacing], dtype=coords.dtype, device=coords.device)
    return sample_voxel(field, coords * inv_h.view(1, d, *([1] * d)), mode=mode, padding=padding)


def resize_field(field: Tensor, shape: Sequence[int]) -> Tensor:
    """Resample a field to ``shape`` over the same extent (first/last voxel centres kept).

    Args:
        field: (B, C, *S) with d = 2 or 3.
        shape: new spatial shape.

    Returns:
        (B, C, *shape), (bi/tri)linear, ``align_corners=True``; values are not rescaled.
    """
    shape = tuple(int(s) for s in shape)
    if tuple(field.shape[2:]) == shape:
        return field
    mode = "bilinear" if field.dim() == 4 else "trilinear"
    return F.interpolate(field, size=shape, mode=mode, align_corners=True)


def identity_map(
    shape: Sequence[int],
    spacing: Sequence[float],
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """The identity map in domain coordinates.

    Args:
        shape: spatial shape (n_0, ..., n_{d-1}).
        spacing: domain spacing h_k.

    Returns:
        (1, d, *shape) with channel k equal to i_k * h_k.
    """
    axes = [torch.arange(n, dtype=torch.float64) * h for n, h in zip(shape, spacing)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0)
    return grid.unsqueeze(0).to(dtype=dtype, device=device)
