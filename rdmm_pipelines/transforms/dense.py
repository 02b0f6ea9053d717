"""``DenseTransform``: a registration's full map sampled on the fixed grid.

Convention: the full transform T maps a FIXED world point p to the MOVING world point T(p)
(ITK's fixed -> moving, pull-back direction). On the fixed grid it is held as ``moving_voxels``
(1, d, *fixed_grid.shape): the moving voxel indices of T(p) for each fixed voxel p (channel k =
moving array axis k). Warping a moving-space image onto the fixed grid is then
``sample_voxel(moving, moving_voxels)``; between voxel centres T is (bi/tri)linear in the voxel
indices.

The roles are generic: "fixed" is the grid the map is defined on (the target of a warp), "moving"
the grid it points into (the source). :func:`rdmm_pipelines.transforms.inverse.invert` returns a
``DenseTransform`` whose ``fixed_grid`` is the original moving grid and whose ``moving_grid`` is the
original fixed grid.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..core.interpolation import sample_voxel
from ..spatial import (
    Grid,
    Image,
    load_itk_displacement_field,
    save_itk_displacement_field,
)
from ..spatial.itk_field import _itk_physical_2d

__all__ = ["DenseTransform", "itk_physical_geometry"]

_RAS_TO_LPS = np.array([-1.0, -1.0, 1.0])
# tolerance (voxels) for a query point to count as inside the fixed grid's voxel-centre box
_INSIDE_TOL = 1e-6


def itk_physical_geometry(grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """ITK's physical space of ``grid`` (how ITK/ANTs read a NIfTI image on it).

    Returns:
        (origin (d,), lin (d, d)) with ``ITK physical point = origin + lin @ index`` (LPS mm).
        3D: the LPS version of the grid's affine. 2D: ITK's 2D geometry of a NIfTI slice (the LPS
        (x, y) of an axial plane; see :func:`rdmm_pipelines.spatial.itk_field._itk_physical_2d`).
        ``lin = direction @ diag(spacing)`` with ``spacing = grid.spacing``.
    """
    d = grid.ndim
    if d == 3:
        a = grid.affine_matrix
        return a[:3, 3] * _RAS_TO_LPS, a[:3, :3] * _RAS_TO_LPS[:, None]
    basis = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    pts = _itk_physical_2d(grid, basis)
    return pts[0], (pts[1:] - pts[0]).T


def _as_map(moving_voxels: Tensor | np.ndarray, grid: Grid, name: str) -> Tensor:
    t = torch.as_tensor(moving_voxels).detach()
    if not t.is_floating_point():
        t = t.to(torch.float64)
    d = grid.ndim
    if t.dim() == d + 1:
        t = t[None]
    if t.dim() != d + 2 or t.shape[0] != 1 or t.shape[1] != d or tuple(t.shape[2:]) != grid.shape:
        raise ValueError(
            f"{name} shape {tuple(t.shape)} must be (1, {d}, *{grid.shape}) for the grid {grid!r}"
        )
    return t


def _apply_voxel_matrix(m: np.ndarray, coords: Tensor) -> Tensor:
    """Homogeneous (d+1, d+1) ``m`` applied to (B, d, *S) ``coords`` (in float64, cast back)."""
    d = coords.shape[1]
    mt = torch.as_tensor(m, dtype=torch.float64, device=coords.device)
    c = coords.to(torch.float64)
    out = torch.einsum("kl,bl...->bk...", mt[:d, :d], c) + mt[:d, d].view(1, d, *([1] * d))
    return out.to(coords.dtype)


@dataclass(frozen=True, eq=False)
class DenseTransform:
    """A dense fixed -> moving map on the fixed grid (see the module docstring).

    Attributes:
        fixed_grid: the grid the map is defined on (warps land on it).
        moving_grid: the grid whose voxel indices ``moving_voxels`` holds.
        moving_voxels: (1, d, *fixed_grid.shape) float tensor, moving voxel indices of T(p).
    """

    fixed_grid: Grid
    moving_grid: Grid
    moving_voxels: Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.fixed_grid, Grid) or not isinstance(self.moving_grid, Grid):
            raise TypeError("fixed_grid and moving_grid must be Grid instances")
        if self.fixed_grid.ndim != self.moving_grid.ndim:
            raise ValueError(
                f"fixed grid is {self.fixed_grid.ndim}D but moving grid is {self.moving_grid.ndim}D"
            )
        object.__setattr__(
            self, "moving_voxels", _as_map(self.moving_voxels, self.fixed_grid, "moving_voxels")
        )

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_result(cls, result: Any) -> DenseTransform:
        """The full transform of a :class:`~rdmm_pipelines.result.RegistrationResult`
        (affine composed with the deformation, ``result.moving_voxels()``)."""
        return cls(result.fixed.grid, result.moving.grid, result.moving_voxels())

    @classmethod
    def from_displacement_field(
        cls, path: str | os.PathLike, moving_grid: Grid
    ) -> DenseTransform:
        """Read an ITK/ANTs displacement field (NIfTI vector image, see
        :func:`rdmm_pipelines.spatial.save_itk_displacement_field`).

        The field u (ITK physical space, LPS mm) lives on its own grid, which becomes
        ``fixed_grid``; T(p) = p + u(p) is converted to voxel indices of ``moving_grid`` (the grid
        of the image the field is meant to warp) through ITK's physical space of that grid, so a
        field written by ANTs is read as ANTs applies it.
        """
        grid, u = load_itk_displacement_field(path)
        if grid.ndim != moving_grid.ndim:
            raise ValueError(
                f"{path}: a {grid.ndim}D field cannot map into a {moving_grid.ndim}D moving grid"
            )
        f_origin, f_lin = itk_physical_geometry(grid)
        m_origin, m_lin = itk_physical_geometry(moving_grid)
        idx = grid.voxel_indices(torch.float64)[0].movedim(0, -1).numpy()
        target = idx @ f_lin.T + f_origin + np.asarray(u, dtype=np.float64)
        mv = (target - m_origin) @ np.linalg.inv(m_lin).T
        return cls(grid, moving_grid, torch.from_numpy(np.moveaxis(mv, -1, 0)[None].copy()))

    # ------------------------------------------------------------------ properties
    @property
    def ndim(self) -> int:
        """Number of spatial axes d."""
        return self.fixed_grid.ndim

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> DenseTransform:
        """A copy with ``moving_voxels`` moved (and optionally cast)."""
        return DenseTransform(
            self.fixed_grid, self.moving_grid, self.moving_voxels.to(device=device, dtype=dtype)
        )

    def voxels_into(self, grid: Grid) -> Tensor:
        """(1, d, *fixed_grid.shape) voxel indices of T(p) in ``grid`` (any grid in the moving
        image's world space; for 2D, in the moving image's plane)."""
        if grid == self.moving_grid:
            return self.moving_voxels
        return _apply_voxel_matrix(self.moving_grid.voxel_map_to(grid), self.moving_voxels)

    # ------------------------------------------------------------------ applying
    def apply(self, image: Image, interpolation: str | None = None) -> Image:
        """Warp an image living in moving world space (on any grid) onto the fixed grid.

        Args:
            image: (C, *S) intensities or an integer label map.
            interpolation: "linear" or "nearest"; default linear for float data, nearest for labels
                (labels must use nearest).

        Returns:
            (C, *fixed_grid.shape) image on ``fixed_grid``, same dtype; zero outside ``image``.
        """
        if image.ndim != self.ndim:
            raise ValueError(f"cannot apply a {self.ndim}D transform to a {image.ndim}D image")
        mode = interpolation or ("nearest" if image.is_labels else "linear")
        if image.is_labels and mode != "nearest":
            raise ValueError("label maps must be warped with nearest-neighbour interpolation")
        work = torch.float64 if image.is_labels else image.data.dtype
        coords = self.voxels_into(image.grid).to(device=image.data.device, dtype=work)
        out = sample_voxel(image.data[None].to(work), coords, mode=mode, padding="zeros")[0]
        out = out.round().to(image.data.dtype) if image.is_labels else out
        return Image(out, self.fixed_grid)

    def world_points(self, points: np.ndarray | Tensor) -> np.ndarray:
        """T of fixed world points: (P, 3) RAS mm -> (P, 3) RAS mm (moving world).

        ``moving_voxels`` is interpolated linearly at the points' fixed voxel positions. Points
        outside the fixed grid's voxel-centre box (where T is not known) give NaN. For 2D grids the
        component of a point normal to the fixed plane is ignored and the result lies in the moving
        plane.
        """
        p = np.asarray(points.detach().cpu() if isinstance(points, Tensor) else points,
                       dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != 3:
            raise ValueError(f"points must have shape (P, 3), got {p.shape}")
        d = self.ndim
        idx = self.fixed_grid.world_to_voxel(p)  # (P, d)
        hi = np.asarray(self.fixed_grid.shape, dtype=np.float64) - 1.0
        inside = np.all((idx >= -_INSIDE_TOL) & (idx <= hi + _INSIDE_TOL), axis=1)
        coords = torch.from_numpy(np.ascontiguousarray(idx.T)).view(1, d, -1, *([1] * (d - 1)))
        field = self.moving_voxels.to("cpu", torch.float64)
        mv = sample_voxel(field, coords, mode="linear", padding="border").reshape(d, -1).T.numpy()
        out = self.moving_grid.voxel_to_world(mv)
        out[~inside] = np.nan
        return out

    # ------------------------------------------------------------------ saving
    def save_displacement_field(self, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
        """Write T as an ITK/ANTs displacement field on ``fixed_grid`` (NIfTI vector image).

        ``ants.apply_transforms(fixed_image, moving_image, [path])`` then reproduces
        :meth:`apply` (see :func:`rdmm_pipelines.spatial.save_itk_displacement_field`).
        """
        return save_itk_displacement_field(
            path, self.fixed_grid, self.moving_voxels, self.moving_grid, overwrite=overwrite
        )

    def inverse(self, iterations: int = 30, tol: float | None = None) -> DenseTransform:
        """T^-1 on the moving grid; see :func:`rdmm_pipelines.transforms.inverse.invert`."""
        from .inverse import invert

        return invert(self, iterations=iterations, tol=tol)

    def __repr__(self) -> str:
        return (
            f"DenseTransform(fixed_grid={self.fixed_grid!r}, moving_grid={self.moving_grid!r}, "
            f"dtype={self.moving_voxels.dtype}, device={self.moving_voxels.device})"
        )
