"""``Grid``: the one owner of the voxel / world / registration-domain coordinate conventions.

Three coordinate systems (DESIGN.md section 2):

* **voxel indices** ``i = (i_0, ..., i_{d-1})``: array axis k of an image's data;
* **world** RAS millimetres (nibabel convention): ``x = A @ [i, 1]`` with the 4x4 ``affine`` A.
  A 2D grid (d = 2) maps voxel (i, j) to ``A @ [i, j, 0, 1]``;
* **registration domain**: ``x_k = i_k * h_k`` with ``h_k = spacing_k / L`` and
  ``L = max_k (n_k - 1) * spacing_k``, i.e. the grid's physical box with its longest side scaled
  to 1, aspect ratio and anisotropic spacing kept. Maps, sigmas and velocities live in these units.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["Grid", "domain_map_to_moving_voxels", "same_grid"]

logger = logging.getLogger(__name__)

# tolerance, in voxels of the other grid, for two 2D grids to count as lying in one plane
_COPLANAR_TOL = 1e-3


def _as_affine(affine: object) -> tuple[tuple[float, ...], ...]:
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4):
        raise ValueError(f"affine must be a 4x4 matrix, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"affine has non-finite entries:\n{a}")
    if not np.allclose(a[3], [0.0, 0.0, 0.0, 1.0]):
        raise ValueError(f"affine's last row must be [0, 0, 0, 1], got {a[3].tolist()}")
    if abs(np.linalg.det(a)) < 1e-12:
        raise ValueError(f"affine is singular:\n{a}")
    return tuple(tuple(float(v) for v in row) for row in a)


@dataclass(frozen=True)
class Grid:
    """A sampling grid in world space.

    Attributes:
        shape: spatial shape (n_0, ..., n_{d-1}), d = 2 or 3.
        affine: 4x4 voxel-index -> world RAS mm matrix (nibabel convention), stored as a tuple of
            tuples so that grids are hashable; use :attr:`affine_matrix` for an array.
    """

    shape: tuple[int, ...]
    affine: tuple[tuple[float, ...], ...]

    def __post_init__(self) -> None:
        shape = tuple(int(n) for n in self.shape)
        if len(shape) not in (2, 3):
            raise ValueError(f"grid shape {shape} must have 2 or 3 spatial axes")
        if any(n < 1 for n in shape):
            raise ValueError(f"grid shape {shape} has an axis of length < 1")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "affine", _as_affine(self.affine))
        if np.any(self.spacing <= 0):
            raise ValueError(f"affine gives zero spacing for grid of shape {shape}")

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_shape(
        cls,
        shape: Sequence[int],
        spacing: Sequence[float] | None = None,
        origin: Sequence[float] | None = None,
    ) -> "Grid":
        """Axis-aligned grid: ``world = origin + i * spacing`` (RAS, no rotation).

        Args:
            shape: spatial shape, 2 or 3 axes.
            spacing: mm per axis (default 1).
            origin: world position (d or 3 values) of voxel 0 (default 0).
        """
        d = len(shape)
        spacing = tuple(float(s) for s in (spacing if spacing is not None else (1.0,) * d))
        if len(spacing) != d:
            raise ValueError(f"spacing {spacing} does not match grid shape {tuple(shape)}")
        a = np.eye(4)
        a[np.arange(d), np.arange(d)] = spacing
        if origin is not None:
            origin = [float(o) for o in origin]
            if len(origin) not in (d, 3):
                raise ValueError(f"origin {origin} must have {d} or 3 values")
            a[: len(origin), 3] = origin
        return cls(tuple(shape), a)

    # ----------------------------------------------------------------- basic properties
    @property
    def ndim(self) -> int:
        """Number of spatial axes d."""
        return len(self.shape)

    @property
    def affine_matrix(self) -> np.ndarray:
        """(4, 4) float64 voxel -> world RAS mm matrix (a fresh copy)."""
        return np.array(self.affine, dtype=np.float64)

    @property
    def spacing(self) -> np.ndarray:
        """(d,) mm per voxel along each array axis (norms of the affine's first d columns)."""
        return np.linalg.norm(self.affine_matrix[:3, : self.ndim], axis=0)

    @property
    def origin(self) -> np.ndarray:
        """(3,) world RAS position of voxel 0."""
        return self.affine_matrix[:3, 3].copy()

    @property
    def direction(self) -> np.ndarray:
        """(3, d) unit world directions (RAS) of the array axes."""
        return self.affine_matrix[:3, : self.ndim] / self.spacing

    @property
    def domain_scale(self) -> float:
        """L = max_k (n_k - 1) * spacing_k in mm: the length that becomes 1 in the domain."""
        lengths = (np.asarray(self.shape) - 1) * self.spacing
        scale = float(lengths.max())
        if scale <= 0:
            raise ValueError(f"grid of shape {self.shape} has no extent (all axes of length 1)")
        return scale

    @property
    def domain_spacing(self) -> tuple[float, ...]:
        """h_k = spacing_k / L: voxel spacing in registration-domain units."""
        scale = self.domain_scale
        return tuple(float(s) / scale for s in self.spacing)

    @property
    def extent(self) -> tuple[float, ...]:
        """(n_k - 1) * h_k: the domain's size per axis (its largest entry is 1)."""
        return tuple((n - 1) * h for n, h in zip(self.shape, self.domain_spacing))

    @property
    def numel(self) -> int:
        """Number of voxels."""
        return int(np.prod(self.shape))

    # ----------------------------------------------------------------- coordinate maps
    def voxel_to_world(self, idx: np.ndarray) -> np.ndarray:
        """Voxel indices (..., d) -> world RAS mm (..., 3)."""
        idx = np.asarray(idx, dtype=np.float64)
        if idx.shape[-1] != self.ndim:
            raise ValueError(
                f"voxel indices have {idx.shape[-1]} components, grid has {self.ndim} axes"
            )
        a = self.affine_matrix
        return idx @ a[:3, : self.ndim].T + a[:3, 3]

    def world_to_voxel(self, points: np.ndarray) -> np.ndarray:
        """World RAS mm (..., 3) -> voxel indices (..., d).

        For a 2D grid the component normal to the image plane is dropped.
        """
        points = np.asarray(points, dtype=np.float64)
        if points.shape[-1] != 3:
            raise ValueError(f"world points must have 3 components, got shape {points.shape}")
        inv = np.linalg.inv(self.affine_matrix)
        return (points @ inv[: self.ndim, :3].T + inv[: self.ndim, 3])

    def voxel_map_to(self, other: "Grid") -> np.ndarray:
        """(d+1, d+1) homogeneous matrix: this grid's voxel indices -> ``other``'s, through world.

        For 2D grids this uses rows/columns [0, 1, 3] of ``inv(A_other) @ A_self``; it raises
        ValueError when this grid's plane does not lie in ``other``'s plane (index 2 of ``other``
        would vary over this grid by more than 1e-3 voxels).
        """
        if other.ndim != self.ndim:
            raise ValueError(f"cannot map a {self.ndim}D grid to a {other.ndim}D grid")
        m = np.linalg.inv(other.affine_matrix) @ self.affine_matrix
        if self.ndim == 3:
            return m
        keep = [0, 1, 3]
        corners = np.array(
            [[i, j, 1.0] for i in (0, self.shape[0] - 1) for j in (0, self.shape[1] - 1)]
        )
        off_plane = np.abs(corners @ m[2, keep])
        if off_plane.max() > _COPLANAR_TOL:
            raise ValueError(
                "2D grids are not in a common plane: this grid lies up to "
                f"{off_plane.max():.4g} voxels off the other grid's plane (affines\n"
                f"{self.affine_matrix}\nand\n{other.affine_matrix})"
            )
        return m[np.ix_(keep, keep)]

    def voxel_indices(self, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
        """(1, d, *shape) tensor whose channel k is the voxel index i_k."""
        axes = [torch.arange(n, dtype=dtype, device=device) for n in self.shape]
        return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0)[None]

    def identity_map(self, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
        """(1, d, *shape) identity map in domain coordinates: channel k is ``i_k * h_k``."""
        h = torch.tensor(self.domain_spacing, dtype=dtype, device=device)
        return self.voxel_indices(dtype, device) * h.view(1, self.ndim, *([1] * self.ndim))

    # ----------------------------------------------------------------- derived grids
    def resized(self, shape: Sequence[int]) -> "Grid":
        """Grid of a new ``shape`` over the same box: first and last voxel centres are kept.

        spacing_k is scaled by (n_k - 1) / (n'_k - 1); origin and directions are unchanged. An axis
        of length 1 may only stay of length 1.
        """
        shape = tuple(int(n) for n in shape)
        if len(shape) != self.ndim:
            raise ValueError(f"new shape {shape} must have {self.ndim} axes like {self.shape}")
        a = self.affine_matrix
        for k, (n, m) in enumerate(zip(self.shape, shape)):
            if m < 1:
                raise ValueError(f"new shape {shape} has an axis of length < 1")
            if n == 1 or m == 1:
                if n != m:
                    raise ValueError(
                        f"cannot resize axis {k} from {n} to {m} voxels "
                        "keeping the end voxel centres"
                    )
                continue
            a[:3, k] *= (n - 1) / (m - 1)
        return Grid(shape, a)

    def scaled(self, factor: float) -> "Grid":
        """``resized`` to ``max(2, round(factor * n_k))`` voxels per axis (length-1 axes stay 1)."""
        if not factor > 0:
            raise ValueError(f"scale factor must be positive, got {factor}")
        shape = tuple(n if n == 1 else max(2, int(round(factor * n))) for n in self.shape)
        return self.resized(shape)

    def __repr__(self) -> str:
        sp = ", ".join(f"{s:.4g}" for s in self.spacing)
        org = ", ".join(f"{o:.4g}" for o in self.origin)
        return f"Grid(shape={self.shape}, spacing=({sp}), origin=({org}))"


def domain_map_to_moving_voxels(phi: Tensor, fixed_grid: Grid, moving_grid: Grid) -> Tensor:
    """Convert a map in fixed-domain coordinates to moving-image voxel indices.

    ``moving_voxels = M @ [phi / h_fixed ; 1]`` with ``M = fixed_grid.voxel_map_to(moving_grid)``,
    i.e. domain coordinates -> fixed voxel indices -> world -> moving voxel indices. Differentiable,
    in ``phi``'s dtype and device.

    Args:
        phi: (B, d, *S) map (e.g. phi^-1 on the fixed grid) in fixed-domain coordinates.
        fixed_grid: the grid defining the domain (its ``domain_spacing`` h_fixed).
        moving_grid: the grid whose voxel indices are wanted.

    Returns:
        (B, d, *S) moving voxel indices (channel k = moving array axis k).
    """
    d = fixed_grid.ndim
    if phi.dim() != d + 2 or phi.shape[1] != d:
        raise ValueError(f"map shape {tuple(phi.shape)} must be (B, {d}, *S) for a {d}D grid")
    m = torch.as_tensor(fixed_grid.voxel_map_to(moving_grid), dtype=phi.dtype, device=phi.device)
    inv_h = torch.tensor(
        [1.0 / h for h in fixed_grid.domain_spacing], dtype=phi.dtype, device=phi.device
    )
    lin = m[:d, :d] * inv_h[None, :]  # fold 1/h into the linear part
    out = torch.einsum("kl,bl...->bk...", lin, phi)
    return out + m[:d, d].view(1, d, *([1] * d))


def same_grid(a: Grid, b: Grid, atol: float = 1e-4) -> bool:
    """Same shape and the same voxel-to-world affine (to ``atol`` mm)."""
    return a.shape == b.shape and np.allclose(a.affine_matrix, b.affine_matrix, atol=atol)
