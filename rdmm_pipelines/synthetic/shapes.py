"""Rasterising primitives shared by the synthetic generators (pure numpy), and the pair container.

Coordinates:
    * 2D shapes live in *normalised* coordinates in [-1, 1] per array axis; coordinate k is array
      axis k (row first). Pixel ``i`` of an axis of length ``N`` has its centre at
      ``c = 2 (i + 0.5) / N - 1``, i.e. a centre ``c`` maps to pixel ``N (c / 2 + 1 / 2)`` and a
      half-length ``l`` to ``N / 2 * l`` pixels.
    * 3D solids use *voxel-index* coordinates (float), component k indexing array axis k.

A shape is rasterised by testing the pixel (voxel) centres: no anti-aliasing, so label maps are
exact and images are piecewise constant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

__all__ = [
    "SyntheticPair",
    "Shape2D",
    "SHAPE_KINDS",
    "normalized_grid",
    "index_grid",
    "ellipse_mask",
    "rect_mask",
    "triangle_mask",
    "ellipsoid_mask",
    "capsule_mask",
    "dilate",
    "erode",
    "labels_to_image",
]

SHAPE_KINDS = ("ellipse", "rect", "triangle")


@dataclass(frozen=True, eq=False)
class SyntheticPair:
    """A synthetic source/target pair with label and region maps (``S`` = spatial shape).

    Attributes:
        source: (1, *S) float32 image in [0, 1] (channel-first).
        target: (1, *S) float32 image in [0, 1].
        source_labels: (*S) int64; 0 background, k >= 1 object k (same object in source and target).
        target_labels: (*S) int64.
        source_regions: (*S) int64 region map for a pre-defined regulariser: 1 inside the
            foreground region (2D: the big object including its inner objects; 3D: the lung
            including its inner structures), 0 elsewhere.
        target_regions: (*S) int64.
        spacing: voxel spacing in mm, one entry per spatial axis.
        name: identifier such as ``"synth2d_s0003"``.
    """

    source: torch.Tensor
    target: torch.Tensor
    source_labels: torch.Tensor
    target_labels: torch.Tensor
    source_regions: torch.Tensor
    target_regions: torch.Tensor
    spacing: tuple[float, ...]
    name: str


@dataclass(frozen=True)
class Shape2D:
    """A rotated 2D primitive in normalised coordinates.

    Attributes:
        kind: one of ``SHAPE_KINDS``.
        center: (c0, c1) centre in [-1, 1] (array axis 0, axis 1).
        half: (a, b) half-lengths along the shape's local axes (normalised units).
        angle: rotation in radians (local axis 0 -> direction (cos, sin) in (axis 0, axis 1)).
    """

    kind: str
    center: tuple[float, float]
    half: tuple[float, float]
    angle: float

    def __post_init__(self) -> None:
        if self.kind not in SHAPE_KINDS:
            raise ValueError(f"unknown shape kind {self.kind!r}; expected one of {SHAPE_KINDS}")

    def mask(self, grid: np.ndarray) -> np.ndarray:
        """Rasterise on ``grid`` ((*S, 2) point coordinates); returns a (*S) bool mask."""
        fn = {"ellipse": ellipse_mask, "rect": rect_mask, "triangle": triangle_mask}[self.kind]
        return fn(grid, self.center, self.half, self.angle)


def normalized_grid(shape: Sequence[int]) -> np.ndarray:
    """Pixel-centre coordinates in [-1, 1]: returns (*shape, d) float64, component k = axis k."""
    axes = [2.0 * (np.arange(n, dtype=np.float64) + 0.5) / n - 1.0 for n in shape]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


def index_grid(shape: Sequence[int]) -> np.ndarray:
    """Voxel-index coordinates: returns (*shape, d) float64, component k = index along axis k."""
    axes = [np.arange(n, dtype=np.float64) for n in shape]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


def _local(grid: np.ndarray, center: Sequence[float], angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates of (*S, 2) points in a frame centred at ``center`` and rotated by ``angle``."""
    d0 = grid[..., 0] - center[0]
    d1 = grid[..., 1] - center[1]
    c, s = np.cos(angle), np.sin(angle)
    return c * d0 + s * d1, -s * d0 + c * d1


def ellipse_mask(
    grid: np.ndarray, center: Sequence[float], half: Sequence[float], angle: float
) -> np.ndarray:
    """(*S) bool: points of ``grid`` (*S, 2) inside the rotated ellipse with radii ``half``."""
    u0, u1 = _local(grid, center, angle)
    return (u0 / half[0]) ** 2 + (u1 / half[1]) ** 2 <= 1.0


def rect_mask(grid: np.ndarray, center: Sequence[float], half: Sequence[float], angle: float) -> np.ndarray:
    """(*S) bool: points of ``grid`` (*S, 2) inside the rotated rectangle with half-sides ``half``."""
    u0, u1 = _local(grid, center, angle)
    return (np.abs(u0) <= half[0]) & (np.abs(u1) <= half[1])


def triangle_mask(
    grid: np.ndarray, center: Sequence[float], half: Sequence[float], angle: float
) -> np.ndarray:
    """(*S) bool: isosceles triangle inscribed in the rotated box of half-sides ``half``.

    Local vertices: (-a, -b), (-a, b) (the base) and (a, 0) (the apex).
    """
    u0, u1 = _local(grid, center, angle)
    a, b = half
    verts = ((-a, -b), (a, 0.0), (-a, b))  # counter-clockwise in the (u0, u1) plane
    inside = np.ones(u0.shape, dtype=bool)
    for (p0, p1), (q0, q1) in zip(verts, verts[1:] + verts[:1]):
        cross = (q0 - p0) * (u1 - p1) - (q1 - p1) * (u0 - p0)
        inside &= cross >= 0.0
    return inside


def ellipsoid_mask(
    grid: np.ndarray,
    center: Sequence[float],
    radii: Sequence[float],
    wobble: tuple[float, Sequence[float], float] | None = None,
) -> np.ndarray:
    """(*S) bool: points of ``grid`` (*S, d) inside an axis-aligned ellipsoid, optionally wobbled.

    Args:
        grid: (*S, d) point coordinates (any units, same as ``center`` and ``radii``).
        center: (d,) centre.
        radii: (d,) semi-axes.
        wobble: optional ``(amplitude, wavevector, phase)``; the level set becomes
            ``|u|^2 + amplitude * sin(wavevector . u + phase) <= 1`` with ``u = (x - c) / r``,
            a smooth non-rigid deformation of the ellipsoid's surface.
    """
    # per-component loops: reductions over a short trailing axis are slow in numpy
    u = [(grid[..., i] - float(center[i])) / float(radii[i]) for i in range(grid.shape[-1])]
    level = sum(ui * ui for ui in u)
    if wobble is not None:
        amp, k, phase = wobble
        level = level + amp * np.sin(sum(float(ki) * ui for ki, ui in zip(k, u)) + phase)
    return level <= 1.0


def capsule_mask(grid: np.ndarray, p0: Sequence[float], p1: Sequence[float], radius: float) -> np.ndarray:
    """(*S) bool: points of ``grid`` (*S, d) within ``radius`` of the segment [p0, p1] (a tube)."""
    d = grid.shape[-1]
    ab = [float(p1[i]) - float(p0[i]) for i in range(d)]
    ap = [grid[..., i] - float(p0[i]) for i in range(d)]
    denom = sum(x * x for x in ab)
    t = 0.0 if denom == 0.0 else np.clip(sum(x * y for x, y in zip(ap, ab)) / denom, 0.0, 1.0)
    dist2 = sum((api - t * abi) ** 2 for api, abi in zip(ap, ab))
    return dist2 <= radius * radius


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of an n-d bool ``mask`` by a (2 radius + 1)^d box (outside counts as False)."""
    out = np.asarray(mask, dtype=bool)
    if radius <= 0:
        return out.copy()
    for axis in range(out.ndim):
        n = out.shape[axis]
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, constant_values=False)
        acc = np.zeros_like(out)
        for shift in range(2 * radius + 1):
            acc |= np.take(padded, np.arange(shift, shift + n), axis=axis)
        out = acc
    return out


def erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary erosion of an n-d bool ``mask`` by a (2 radius + 1)^d box (outside counts as False)."""
    inv = ~np.pad(np.asarray(mask, dtype=bool), radius, constant_values=False)
    core = ~dilate(inv, radius)
    return core[tuple(slice(radius, radius + n) for n in np.shape(mask))]


def labels_to_image(labels: np.ndarray, intensities: Sequence[float]) -> torch.Tensor:
    """Paint a label map: ``labels`` (*S) int -> (1, *S) float32 image, label k -> intensities[k]."""
    lut = np.asarray(intensities, dtype=np.float32)
    return torch.from_numpy(lut[labels][None].copy())
