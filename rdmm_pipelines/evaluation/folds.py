"""Jacobian determinant of a registration transform in physical units, and fold statistics.

The transform evaluated is the pull-back ``T: fixed world -> moving world`` (mm to mm) given on
the fixed grid as moving voxel indices ``V(i)`` per fixed voxel ``i``. With the voxel -> world
affines ``A_f`` and ``A_m`` (spatial parts), ``T = A_m o V o A_f^-1`` and so::

    det DT = det DV * det(A_m) / det(A_f)

``det DV`` is the *full* determinant of the voxel-index Jacobian (central differences inside,
one-sided on the border: :func:`rdmm_pipelines.core.differences.jacobian_determinant` with
spacing 1), never the product of its diagonal.

Central differences span two voxels and so skip the node in between: a map that zig-zags with a
period of two voxels can fold every other cell while its central-difference det stays positive.
:func:`folded_cells` is the exact per-cell test (the corner determinants of each grid cell from the
cell's own edges) and :func:`fold_statistics` reports both measures.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from torch import Tensor

from ..core.cells import folded_cell_mask
from ..core.differences import jacobian_determinant
from ..core.shapes import broadcast_or_raise
from ..spatial import Grid

__all__ = [
    "fold_statistics",
    "folded_cells",
    "jacobian_determinant_physical",
    "diagonal_product_folds",
    "FOLD_KEYS",
]

#: keys of :func:`fold_statistics`, in order
FOLD_KEYS = (
    "folds",
    "folding_voxels",
    "folding_percent",
    "det_min",
    "det_max",
    "det_mean",
    "det_std",
    "folded_cells",
    "folded_cells_percent",
)


def _volume_ratio(fixed_grid: Grid, moving_grid: Grid) -> float:
    """det(A_m) / det(A_f) of the spatial parts, with orientation.

    Computed as ``1 / det(M)`` where ``M`` is the linear part of ``fixed_grid.voxel_map_to(
    moving_grid)`` (= ``A_m^-1 A_f``). For 3D grids this equals ``det(A_m[:3,:3]) /
    det(A_f[:3,:3])``; for 2D grids it is the in-plane ratio (pixel areas, with the relative
    orientation of the two planes' axes), valid for any common plane, not only z = const.
    Its sign matters: when one affine is mirrored relative to the other, the voxel map of the
    identity has det < 0 and the ratio makes the physical determinant +1 again.
    """
    d = fixed_grid.ndim
    m = fixed_grid.voxel_map_to(moving_grid)[:d, :d]
    return float(1.0 / np.linalg.det(m))


def jacobian_determinant_physical(moving_voxels: Tensor, fixed_grid: Grid, moving_grid: Grid) -> Tensor:
    """det of the Jacobian of the fixed-world -> moving-world transform, per fixed voxel.

    ``det DT(i) = det(D V)(i) * det(A_m) / det(A_f)`` where ``V`` = ``moving_voxels`` (moving voxel
    indices as a function of fixed voxel indices; central differences with spacing 1, one-sided
    on the border) and ``A_f``, ``A_m`` the spatial parts of the grids' affines. When both affines
    have the same handedness the ratio is ``|det A_m| / |det A_f|``; with mismatched handedness
    the sign is kept so that the identity in world space has determinant +1 (see
    :func:`_volume_ratio`). det DT = 1 means volume preserved, < 0 a fold.

    Args:
        moving_voxels: (B, d, *S_fixed) moving voxel indices (e.g. ``result.moving_voxels()``).
        fixed_grid: the grid the map lives on (``S_fixed == fixed_grid.shape``).
        moving_grid: the grid whose voxel indices ``moving_voxels`` holds.

    Returns:
        (B, *S_fixed) float64 tensor on ``moving_voxels``'s device.
    """
    _check_map(moving_voxels, fixed_grid, moving_grid)
    d = fixed_grid.ndim
    det_v = jacobian_determinant(moving_voxels.to(torch.float64), (1.0,) * d)[:, 0]
    return det_v * _volume_ratio(fixed_grid, moving_grid)


def _check_map(moving_voxels: Tensor, fixed_grid: Grid, moving_grid: Grid) -> None:
    """Raise ValueError unless ``moving_voxels`` is (B, d, *fixed_grid.shape) with d both grids' ndim."""
    d = fixed_grid.ndim
    if moving_grid.ndim != d:
        raise ValueError(f"fixed grid is {d}D but moving grid is {moving_grid.ndim}D")
    if moving_voxels.dim() != d + 2 or moving_voxels.shape[1] != d:
        raise ValueError(
            f"moving_voxels shape {tuple(moving_voxels.shape)} must be (B, {d}, *{fixed_grid.shape})"
        )
    if tuple(moving_voxels.shape[2:]) != fixed_grid.shape:
        raise ValueError(
            f"moving_voxels spatial shape {tuple(moving_voxels.shape[2:])} does not match the fixed "
            f"grid shape {fixed_grid.shape}"
        )


def folded_cells(
    moving_voxels: Tensor,
    fixed_grid: Grid | None = None,
    moving_grid: Grid | None = None,
) -> Tensor:
    """Grid cells on which the multilinear interpolant of the voxel map is not orientation preserving.

    A cell is the box of ``2^d`` neighbouring voxels ``i + c``, ``c in {0, 1}^d``. At each corner
    ``c`` the cell's Jacobian is built from the ``d`` cell edges that leave that corner, all taken
    along +axis (one-sided differences inside the cell)::

        J_c[:, k] = V(i + c with c_k = 1) - V(i + c with c_k = 0)        k = 0 .. d-1

    e.g. in 2D at corner (0, 0): ``V(1,0) - V(0,0)`` and ``V(0,1) - V(0,0)``; at corner (1, 0):
    ``V(1,0) - V(0,0)`` and ``V(1,1) - V(1,0)``. With ``s`` the sign of det(A_m) / det(A_f)
    (see :func:`jacobian_determinant_physical`; +1 without grids) the cell is folded iff::

        exists c in {0, 1}^d :  s * det J_c <= 0

    (a non-finite determinant also counts as folded). For a bilinear cell (2D) the four corner
    determinants having one strict sign is exactly the condition for the cell map to be injective;
    in 3D it is the standard corner test of a trilinear cell. Unlike central differences, which
    skip the node between their two samples, every cell and every node is examined.

    Args:
        moving_voxels: (B, d, *S) moving voxel indices per fixed voxel (e.g.
            ``result.moving_voxels()``); any d, with explicit formulas for d <= 3.
        fixed_grid, moving_grid: both or neither; only the sign of their volume ratio is used, so
            that the identity between mirrored grids is not folded.

    Returns:
        (B, n_0 - 1, ..., n_{d-1} - 1) bool tensor on ``moving_voxels``'s device (an axis with a
        single voxel gives zero cells).

    Raises:
        ValueError: one grid without the other, or ``moving_voxels`` not (B, d, *fixed_grid.shape).
    """
    if (fixed_grid is None) != (moving_grid is None):
        raise ValueError("give both fixed_grid and moving_grid, or neither")
    if moving_voxels.dim() < 3:
        raise ValueError(f"moving_voxels shape {tuple(moving_voxels.shape)} must be (B, d, *S)")
    sign = 1.0
    if fixed_grid is not None and moving_grid is not None:
        _check_map(moving_voxels, fixed_grid, moving_grid)
        sign = math.copysign(1.0, _volume_ratio(fixed_grid, moving_grid))
    d = moving_voxels.shape[1]
    spatial = tuple(moving_voxels.shape[2:])
    if len(spatial) != d:
        raise ValueError(f"moving_voxels shape {tuple(moving_voxels.shape)} must be (B, d, *S) with len(S) == d")
    return folded_cell_mask(moving_voxels.detach().to(torch.float64), sign)


def fold_statistics(
    det: Tensor | np.ndarray,
    mask: Tensor | np.ndarray | None = None,
    *,
    cells: Tensor | np.ndarray | None = None,
) -> dict[str, float]:
    """Fold and determinant statistics of a Jacobian determinant field and of its folded cells.

    With ``N`` the voxels considered (all, or those where ``mask`` is true) and
    ``F = {i in N : det(i) < 0}``::

        folds           = |sum_{i in F} det(i)|     (the paper's Fig. 6 measure)
        folding_voxels  = |F|
        folding_percent = 100 |F| / |N|
        det_min, det_max, det_mean, det_std          over N (std with ddof = 0)

    and, with ``K`` the grid cells considered (all, or those whose ``2^d`` corners are all in
    ``mask``) and ``G = {c in K : cells(c)}`` (:func:`folded_cells`)::

        folded_cells         = |G|
        folded_cells_percent = 100 |G| / |K|        (NaN when K is empty)

    Without ``cells`` both are NaN (not measured).

    Args:
        det: (*S) determinant field (any shape, e.g. (1, *S)).
        mask: optional boolean array broadcastable to ``det``'s shape (e.g. a brain mask).
        cells: optional (B, *C) boolean output of :func:`folded_cells` for the same map, with
            ``C = S - 1`` per axis (``det`` then ends in the d spatial axes ``S``, d = cells.dim() - 1).

    Returns:
        the keys of :data:`FOLD_KEYS`; ``folding_voxels`` and (when measured) ``folded_cells`` are
        ints, the rest floats.

    Raises:
        ValueError: non-finite determinant values, a mask of the wrong shape, no voxel selected, or
            ``cells`` whose shape does not match ``det``'s.
    """
    det_t = torch.as_tensor(det).detach().to(torch.float64).cpu()
    mask_t: Tensor | None = None
    if mask is not None:
        mask_t = torch.as_tensor(mask).detach().cpu()
        mask_t = broadcast_or_raise(mask_t, det_t.shape, "mask", "determinant").to(torch.bool)
        values = det_t[mask_t]
    else:
        values = det_t.reshape(-1)
    if values.numel() == 0:
        raise ValueError(
            f"no voxels to measure (determinant shape {tuple(det_t.shape)}, "
            f"{'empty mask' if mask is not None else 'empty field'})"
        )
    bad = ~torch.isfinite(values)
    if bad.any():
        raise ValueError(f"determinant field has {int(bad.sum())} NaN or infinite values")
    neg = values < 0
    n_neg = int(neg.sum())
    stats: dict[str, float] = {
        "folds": float(values[neg].sum().abs()) if n_neg else 0.0,
        "folding_voxels": n_neg,
        "folding_percent": 100.0 * n_neg / values.numel(),
        "det_min": float(values.min()),
        "det_max": float(values.max()),
        "det_mean": float(values.mean()),
        "det_std": float(values.std(correction=0)) if values.numel() > 1 else 0.0,
        "folded_cells": math.nan,
        "folded_cells_percent": math.nan,
    }
    if cells is not None:
        stats.update(_cell_statistics(torch.as_tensor(cells).detach().cpu(), tuple(det_t.shape), mask_t))
    return stats


def _cell_statistics(cells: Tensor, det_shape: tuple[int, ...], mask: Tensor | None) -> dict[str, float]:
    """``folded_cells`` and ``folded_cells_percent`` of a (B, *C) boolean cell field; a cell is
    considered when all its corners are in ``mask`` (``mask`` already broadcast to ``det_shape``)."""
    d = cells.dim() - 1
    cell_shape = tuple(cells.shape[1:])
    if d < 1 or len(det_shape) < d or tuple(det_shape[-d:]) != tuple(n + 1 for n in cell_shape):
        raise ValueError(
            f"cells shape {tuple(cells.shape)} must be (B, *C) with C = S - 1 for the determinant "
            f"shape {det_shape} (S its last cells.dim() - 1 axes)"
        )
    selected = cells.to(torch.bool)
    if mask is not None:
        lead = mask.dim() - d
        corner_masks = []
        for corner in itertools.product((0, 1), repeat=d):
            m = mask
            for j in range(d):
                m = m.narrow(lead + j, corner[j], cell_shape[j])
            corner_masks.append(m)
        inside = torch.stack(corner_masks).all(dim=0)
        inside = broadcast_or_raise(inside, cells.shape, "cells", "determinant")
        selected = selected[inside]
    n_cells = selected.numel()
    n_folded = int(selected.sum())
    return {
        "folded_cells": n_folded,
        "folded_cells_percent": 100.0 * n_folded / n_cells if n_cells else math.nan,
    }


def diagonal_product_folds(moving_voxels: Tensor) -> dict[str, float]:
    """The authors' code's fold measure, for comparison only: the product of the *diagonal*
    partials d V_0/d i_0 * d V_1/d i_1 (* d V_2/d i_2), not the determinant.

    Args:
        moving_voxels: (1, d, *S) voxel map.

    Returns:
        {"folds_diagonal": |sum of the product where it is < 0|, "folding_voxels_diagonal": count}.
        It misses folds made by shear or rotation, which the full determinant sees.
    """
    from ..core.differences import partial

    d = moving_voxels.shape[1]
    prod = torch.ones_like(moving_voxels[:, :1])
    for k in range(d):
        prod = prod * partial(moving_voxels[:, k : k + 1], k, 1.0)
    neg = prod < 0
    return {"folds_diagonal": float(prod[neg].sum().abs()), "folding_voxels_diagonal": int(neg.sum())}
