"""A 3D phantom pair in the spirit of the RDMM lung experiment (pure numpy).

A body ("tissue", label 2, region 0) that barely moves (shift <= 1 voxel) holds a "lung"
(label 1, region 1) that moves by several voxels and changes shape non-rigidly between source
and target: new semi-axes (+-15 %), a shift, and a smooth sinusoidal wobble of its surface.
One or two inner structures (a spherical "nodule" or a tube-shaped "vessel", labels 3 and 4)
sit at fixed lung-relative positions, so they move with the lung. Background (label 0) is 0.

Geometry is in voxel-index coordinates and expressed relative to the array shape, so small and
anisotropic shapes work. Shifts are in voxels and scale with ``min(shape) / 48``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from .shapes import (
    SyntheticPair,
    capsule_mask,
    dilate,
    ellipsoid_mask,
    erode,
    index_grid,
    labels_to_image,
)

__all__ = ["make_phantom_3d", "PHANTOM_SPACING", "LUNG", "BODY"]

PHANTOM_SPACING = (1.5, 1.5, 1.5)  # mm
LUNG, BODY = 1, 2
_MIN_SIDE = 16
_TRIES = 200
_SCENE_TRIES = 20


def _direction(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def _wobble(rng: np.random.Generator) -> tuple[float, np.ndarray, float]:
    """Random smooth surface perturbation for :func:`ellipsoid_mask` (about 5-10 % of the radius)."""
    amplitude = float(rng.uniform(0.1, 0.2))
    wavevector = _direction(rng) * rng.uniform(1.5, 3.0)
    return amplitude, wavevector, float(rng.uniform(0, 2 * math.pi))


def _ball_point(rng: np.random.Generator, radius: float) -> np.ndarray:
    return _direction(rng) * radius * rng.uniform(0.0, 1.0) ** (1.0 / 3.0)


def _lungs(rng, grid, body_c, body_r, body: tuple[np.ndarray, np.ndarray], scale: float):
    """Sample source/target lung ellipsoids (centre, radii, mask) inside the (source, target) body masks."""
    cores = (erode(body[0], 1), erode(body[1], 1))
    for _ in range(_TRIES):
        r_src = body_r * rng.uniform(0.45, 0.6, size=3)
        c_src = body_c + body_r * rng.uniform(-0.12, 0.12, size=3)
        r_tgt = r_src * rng.uniform(0.85, 1.15, size=3)
        c_tgt = c_src + _direction(rng) * max(2.5, rng.uniform(3.0, 5.0) * scale)
        m_src = ellipsoid_mask(grid, c_src, r_src, _wobble(rng))
        m_tgt = ellipsoid_mask(grid, c_tgt, r_tgt, _wobble(rng))
        inside = not (np.any(m_src & ~cores[0]) or np.any(m_tgt & ~cores[1]))
        if inside and m_src.sum() >= 8 and m_tgt.sum() >= 8:
            return (c_src, r_src, m_src), (c_tgt, r_tgt, m_tgt)
    raise RuntimeError("could not fit the lung inside the body")


def _structure(rng, grid, lung_src, lung_tgt, taken):
    """One nodule or vessel at a fixed lung-relative position; returns (source, target) masks."""
    (c_s, r_s, m_s), (c_t, r_t, m_t) = lung_src, lung_tgt
    allowed = (erode(m_s, 1), erode(m_t, 1))
    growth = float(np.prod(r_t / r_s) ** (1.0 / 3.0))
    for _ in range(_TRIES):
        if rng.uniform() < 0.5:  # nodule: a ball
            u = _ball_point(rng, 0.45)
            rad = max(1.1, float(rng.uniform(0.2, 0.3)) * float(r_s.min()))
            masks = (
                ellipsoid_mask(grid, c_s + r_s * u, [rad] * 3),
                ellipsoid_mask(grid, c_t + r_t * u, [rad * growth] * 3),
            )
        else:  # vessel: a tube between two lung-relative points
            u0, u1 = _ball_point(rng, 0.55), _ball_point(rng, 0.55)
            if np.linalg.norm(u1 - u0) < 0.4:
                continue
            rad = max(1.0, float(rng.uniform(0.06, 0.1)) * float(r_s.min()))
            masks = (
                capsule_mask(grid, c_s + r_s * u0, c_s + r_s * u1, rad),
                capsule_mask(grid, c_t + r_t * u0, c_t + r_t * u1, rad * growth),
            )
        if all(m.sum() >= 3 and not np.any(m & (taken[k] | ~allowed[k])) for k, m in enumerate(masks)):
            return masks
    return None


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    try:
        dims = tuple(int(n) for n in shape)
        ok = len(dims) == 3 and all(int(n) == n and not isinstance(n, bool) for n in shape)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"shape must be a 3D shape (three integers), got {shape!r}")
    if min(dims) < _MIN_SIDE:
        raise ValueError(f"every side of shape must be >= {_MIN_SIDE} voxels, got {dims}")
    return dims  # type: ignore[return-value]


def make_phantom_3d(seed: int, shape: tuple[int, int, int] = (48, 48, 48)) -> SyntheticPair:
    """A lung-like 3D phantom pair, reproducible from ``seed``.

    Args:
        seed: non-negative integer; ``numpy.random.default_rng(seed)`` drives all sampling.
        shape: (D, H, W) array shape, every side >= 16 (anisotropic shapes allowed).

    Returns:
        A :class:`SyntheticPair`: images (1, D, H, W) float32 in [0, 1]; labels (D, H, W) int64
        with 0 background, 1 lung, 2 body (tissue), 3-4 inner structures; regions (D, H, W) int64,
        1 inside the lung including its structures, 0 elsewhere; spacing ``PHANTOM_SPACING``;
        name ``"phantom3d_s{seed:04d}"``.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    dims = _check_shape(shape)
    rng = np.random.default_rng(seed)
    grid = index_grid(dims)
    size = np.asarray(dims, dtype=np.float64)
    scale = min(dims) / 48.0

    body_c = (size - 1.0) / 2.0 + rng.uniform(-0.02, 0.02, size=3) * size
    body_r = size * rng.uniform(0.38, 0.43, size=3)
    body_shift = _direction(rng) * rng.uniform(0.3, 1.0)
    body = (ellipsoid_mask(grid, body_c, body_r), ellipsoid_mask(grid, body_c + body_shift, body_r))
    for _ in range(_SCENE_TRIES):  # the lung must hold at least one inner structure
        lung_src, lung_tgt = _lungs(rng, grid, body_c, body_r, body, scale)
        taken = (np.zeros(dims, dtype=bool), np.zeros(dims, dtype=bool))
        structures = []
        for _ in range(int(rng.integers(1, 3))):
            masks = _structure(rng, grid, lung_src, lung_tgt, taken)
            if masks is not None:
                structures.append(masks)
                for k in range(2):
                    taken[k][...] |= dilate(masks[k], 1)
        if structures:
            break
    else:
        raise RuntimeError(f"could not place an inner structure in the lung for shape {dims}")

    labels = [np.where(body[k], BODY, 0).astype(np.int64) for k in range(2)]
    regions = [lung_src[2].astype(np.int64), lung_tgt[2].astype(np.int64)]
    for k in range(2):
        labels[k][regions[k] == 1] = LUNG
        for j, masks in enumerate(structures):
            labels[k][masks[k]] = BODY + 1 + j
    label = BODY + 1 + len(structures)

    lut = np.zeros(label, dtype=np.float64)
    lut[LUNG] = rng.uniform(0.15, 0.25)
    lut[BODY] = rng.uniform(0.55, 0.65)
    bright = rng.permutation([rng.uniform(0.78, 0.86), rng.uniform(0.92, 1.0)])
    lut[BODY + 1 :] = bright[: label - BODY - 1]
    return SyntheticPair(
        source=labels_to_image(labels[0], lut),
        target=labels_to_image(labels[1], lut),
        source_labels=torch.from_numpy(labels[0]),
        target_labels=torch.from_numpy(labels[1]),
        source_regions=torch.from_numpy(regions[0]),
        target_regions=torch.from_numpy(regions[1]),
        spacing=PHANTOM_SPACING,
        name=f"phantom3d_s{seed:04d}",
    )
