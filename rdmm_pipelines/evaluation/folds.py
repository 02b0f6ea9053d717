"""Jacobian determinant of a registration transform in physical units, and fold statistics.

The transform evaluated is the pull-back ``T: fixed world -> moving world`` (mm to mm) given on
the fixed grid as moving voxel indices ``V(i)`` per fixed voxel ``i``. With the voxel -> world
affines ``A_f`` and ``A_m`` (spatial parts), ``T = A_m o V o A_f^-1`` and so::

    det DT = det DV * det(A_m) / det(A_f)

``det DV`` is the *full* determinant of the voxel-index Jacobian (central differences inside,
one-sided on the border: :func:`rdmm_pipelines.core.differences.jacobian_determinant` with
spacing 1), never the product of its diagonal.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..core.differences import jacobian_determinant
from ..spatial import Grid

__all__ = ["fold_statistics", "jacobian_determinant_physical", "diagonal_product_folds", "FOLD_KEYS"]

#: keys of :func:`fold_statistics`, in order
FOLD_KEYS = ("folds", "folding_voxels", "folding_percent", "det_min", "det_max", "det_mean", "det_std")


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
    det_v = jacobian_determinant(moving_voxels.to(torch.float64), (1.0,) * d)[:, 0]
    return det_v * _volume_ratio(fixed_grid, moving_grid)


def fold_statistics(det: Tensor | np.ndarray, mask: Tensor | np.ndarray | None = None) -> dict[str, float]:
    """Fold and determinant statistics of a Jacobian determinant field.

    With ``N`` the voxels considered (all, or those where ``mask`` is true) and
    ``F = {i in N : det(i) < 0}``::

        folds           = |sum_{i in F} det(i)|     (the paper's Fig. 6 measure)
        folding_voxels  = |F|
        folding_percent = 100 |F| / |N|
        det_min, det_max, det_mean, det_std          over N (std with ddof = 0)

    Args:
        det: (*S) determinant field (any shape, e.g. (1, *S)).
        mask: optional boolean array broadcastable to ``det``'s shape (e.g. a brain mask).

    Returns:
        the keys of :data:`FOLD_KEYS`; ``folding_voxels`` is an int, the rest floats.

    Raises:
        ValueError: non-finite determinant values, a mask of the wrong shape, or no voxel selected.
    """
    det_t = torch.as_tensor(det).detach().to(torch.float64).cpu()
    if mask is not None:
        mask_t = torch.as_tensor(mask).detach().cpu()
        try:
            mask_t = torch.broadcast_to(mask_t, det_t.shape)
        except RuntimeError as exc:
            raise ValueError(
                f"mask shape {tuple(mask_t.shape)} does not match determinant shape {tuple(det_t.shape)}"
            ) from exc
        values = det_t[mask_t.to(torch.bool)]
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
    return {
        "folds": float(values[neg].sum().abs()) if n_neg else 0.0,
        "folding_voxels": n_neg,
        "folding_percent": 100.0 * n_neg / values.numel(),
        "det_min": float(values.min()),
        "det_max": float(values.max()),
        "det_mean": float(values.mean()),
        "det_std": float(values.std(correction=0)) if values.numel() > 1 else 0.0,
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
