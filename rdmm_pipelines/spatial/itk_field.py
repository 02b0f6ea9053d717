"""Export of a registration's map as an ITK/ANTs displacement field.

The map convention: a registration produces, on the FIXED (target) grid G_f, for each fixed voxel x
the corresponding MOVING point. It is held as ``moving_voxels`` (1, d, *G_f.shape): moving-image
voxel indices, channel k = moving array axis k. The warped moving image is then
``sample_voxel(moving, moving_voxels)`` on G_f.

ITK (and so ANTs, ``antsApplyTransforms``) represents the same thing as a displacement field on
the fixed grid in ITK's physical space, LPS millimetres (RAS with x and y negated):

    u(p) = T(p) - p,      p = fixed voxel's physical point,  T(p) = matching moving point,

and the warped image is moving(p + u(p)). The file is a NIfTI vector image (intent 1007,
NIFTI_INTENT_VECTOR) of dims (X, Y, Z, 1, 3) in 3D and (X, Y, 1, 1, 2) in 2D carrying the fixed
grid's affine; the vector components are stored in LPS as-is: ITK's NIfTI reader leaves intent-1007
vectors alone (it would flip x and y of an intent-1006 NIFTI_INTENT_DISPVECT field, read as RAS).
``tests/test_itk_field.py`` checks all of this against antspyx.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from torch import Tensor

from .grid import Grid
from .io import _read_nifti, set_geometry, write_nifti_atomic

__all__ = [
    "moving_points_world",
    "displacement_field_lps",
    "save_itk_displacement_field",
    "load_itk_displacement_field",
]

logger = logging.getLogger(__name__)

_RAS_TO_LPS = np.array([-1.0, -1.0, 1.0])
_INTENT_VECTOR = 1007


def _voxels_last(moving_voxels: Tensor | np.ndarray, d: int) -> np.ndarray:
    """(1, d, *S) (or (d, *S)) -> float64 numpy (*S, d)."""
    if isinstance(moving_voxels, Tensor):
        arr = moving_voxels.detach().to("cpu", torch.float64).numpy()
    else:
        arr = np.asarray(moving_voxels, dtype=np.float64)
    if arr.ndim == d + 2:
        if arr.shape[0] != 1:
            raise ValueError(f"moving_voxels batch size must be 1, got shape {arr.shape}")
        arr = arr[0]
    if arr.ndim != d + 1 or arr.shape[0] != d:
        raise ValueError(f"moving_voxels shape {arr.shape} must be (1, {d}, *S) for a {d}D grid")
    return np.moveaxis(arr, 0, -1)


def moving_points_world(moving_voxels: Tensor | np.ndarray, moving_grid: Grid) -> np.ndarray:
    """World RAS mm of the moving points.

    Args:
        moving_voxels: (1, d, *S) moving voxel indices.
        moving_grid: the moving image's grid.

    Returns:
        (*S, 3) float64 world RAS mm.
    """
    return moving_grid.voxel_to_world(_voxels_last(moving_voxels, moving_grid.ndim))


def _itk_physical_2d(grid: Grid, vox: np.ndarray) -> np.ndarray:
    """ITK's 2D physical points (LPS x, y mm) of voxel indices (..., 2) of a 2D NIfTI grid.

    ITK reads a 2D NIfTI's geometry as: origin = LPS (x, y) of the affine's origin, spacing =
    pixdim = 3D norms of the in-plane affine columns, direction column k = the LPS (x, y) part of
    affine column k, normalised. (Measured with antspyx 0.6.3; for an axial plane this is exactly
    the LPS x, y of the world point.)
    """
    lps = grid.affine_matrix * np.array([-1.0, -1.0, 1.0, 1.0])[:, None]
    cols = lps[:2, :2]
    norms = np.linalg.norm(cols, axis=0)
    if np.any(norms < 1e-6 * grid.spacing):
        raise ValueError(
            "a 2D grid axis has no (x, y) world component (the image plane contains the z axis): "
            f"ITK cannot represent this 2D geometry; affine\n{grid.affine_matrix}"
        )
    lin = cols / norms * grid.spacing
    return vox @ lin.T + lps[:2, 3]


def displacement_field_lps(
    fixed_grid: Grid, moving_voxels: Tensor | np.ndarray, moving_grid: Grid
) -> np.ndarray:
    """ITK displacement field u(p) = T(p) - p in LPS mm on the fixed grid.

    3D: p = LPS world point of the fixed voxel, T(p) = LPS world point of the moving voxel.
    2D: the same in ITK's 2D physical space (see :func:`_itk_physical_2d`); for axial planes
    (affine[2, :2] == 0) this is the LPS (x, y) part of T(p) - p, and for oblique planes it is
    what ITK needs to reproduce the warp exactly.

    Args:
        fixed_grid: grid G_f on which the map is defined.
        moving_voxels: (1, d, *G_f.shape) moving voxel indices.
        moving_grid: the moving image's grid.

    Returns:
        (*G_f.shape, d) float64 LPS displacement in mm.
    """
    d = fixed_grid.ndim
    if moving_grid.ndim != d:
        raise ValueError(f"fixed grid is {d}D but moving grid is {moving_grid.ndim}D")
    vox = _voxels_last(moving_voxels, d)
    if vox.shape[:-1] != fixed_grid.shape:
        raise ValueError(
            f"moving_voxels spatial shape {vox.shape[:-1]} does not match "
            f"fixed grid {fixed_grid.shape}"
        )
    fixed_idx = fixed_grid.voxel_indices(torch.float64)[0].movedim(0, -1).numpy()
    if d == 2:
        return _itk_physical_2d(moving_grid, vox) - _itk_physical_2d(fixed_grid, fixed_idx)
    return (moving_grid.voxel_to_world(vox) - fixed_grid.voxel_to_world(fixed_idx)) * _RAS_TO_LPS


def save_itk_displacement_field(
    path: str | os.PathLike,
    fixed_grid: Grid,
    moving_voxels: Tensor | np.ndarray,
    moving_grid: Grid,
    *,
    overwrite: bool = True,
) -> Path:
    """Write the map as an ITK/ANTs displacement field (NIfTI vector image), atomically.

    ``ants.apply_transforms(fixed, moving, transformlist=[path])`` then reproduces
    ``sample_voxel(moving, moving_voxels)`` on the fixed grid.

    Args:
        path: .nii or .nii.gz destination.
        fixed_grid: G_f; its affine is the field's affine.
        moving_voxels: (1, d, *G_f.shape) moving voxel indices.
        moving_grid: the moving image's grid.
        overwrite: if False, refuse to replace an existing file.

    Returns:
        The written path. Layout: (X, Y, Z, 1, 3) float32 in 3D, (X, Y, 1, 1, 2) in 2D, intent 1007.
    """
    u = displacement_field_lps(fixed_grid, moving_voxels, moving_grid).astype(np.float32)
    if fixed_grid.ndim == 2:
        arr = u[:, :, None, None, :]
    else:
        arr = u[:, :, :, None, :]
    affine = fixed_grid.affine_matrix
    img = nib.Nifti1Image(arr, affine)
    set_geometry(img, affine)
    img.header.set_intent(_INTENT_VECTOR, (), name="")
    written = write_nifti_atomic(img, path, overwrite=overwrite)
    logger.debug("wrote ITK field %s (max |u| = %.4g mm)", written, float(np.abs(u).max()))
    return written


def load_itk_displacement_field(path: str | os.PathLike) -> tuple[Grid, np.ndarray]:
    """Read an ITK displacement field written as a NIfTI vector image.

    Returns:
        (grid, u) with u (*grid.shape, d) LPS mm. (X, Y, 1, 1, 2) gives a 2D grid (X, Y);
        (X, Y, Z, 1, 3) a 3D grid.
    """
    arr, affine, p = _read_nifti(path)
    if arr.ndim != 5 or arr.shape[3] != 1 or arr.shape[4] not in (2, 3):
        raise ValueError(
            f"{p}: shape {arr.shape} is not a displacement field (X, Y, Z, 1, 3) or (X, Y, 1, 1, 2)"
        )
    comps = arr.shape[4]
    if comps == 2:
        if arr.shape[2] != 1:
            raise ValueError(f"{p}: 2-component field must have Z = 1, got shape {arr.shape}")
        return Grid(arr.shape[:2], affine), arr[:, :, 0, 0, :]
    return Grid(arr.shape[:3], affine), arr[:, :, :, 0, :]
