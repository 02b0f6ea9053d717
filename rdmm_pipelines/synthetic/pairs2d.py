"""2D synthetic pairs in the style of the RDMM paper's synthetic experiment (pure numpy).

Each image holds a large foreground object (ellipse or rectangle) with two small objects inside
it, and up to five small objects in the background outside it. Between source and target every
object is changed independently (shift, scale, rotation; the foreground may switch between
ellipse and rectangle, small objects keep their kind). Every object keeps its intensity and label.

Geometry is sampled in normalised coordinates [-1, 1] (see :mod:`.shapes`), so any image size
works; pixel margins are the paper's values at 200 px scaled by ``size / 200``. A target object
is centred at its source centre plus U(-0.1, 0.1) times the object's largest extent (twice its
largest half-length) per axis, with a new scale and rotation. Placement uses rejection sampling
with bounded tries: inner objects stay 10 px (at 200 px) inside the foreground's border, outer
objects 5 px outside it, small objects 5 px apart, in source and target alike.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .shapes import (
    Shape2D,
    SyntheticPair,
    dilate,
    erode,
    labels_to_image,
    normalized_grid,
)

__all__ = ["make_pair_2d", "make_pairs_2d"]

_BOUND = 0.9  # every shape stays inside [-0.9, 0.9]^2
_MAX_ANGLE = math.pi / 3  # rotations U(-60 deg, 60 deg)
_SHIFT = 0.1  # target centre = source centre + U(-0.1, 0.1) * (object's max extent)
_N_INNER = 2
_MAX_OUTER = 5
_MIN_PIXELS = 4
_SCENE_TRIES = 50
_SOURCE_TRIES = 60
_TARGET_TRIES = 10


def _half_lengths(rng: np.random.Generator, kind: str, scale: float) -> tuple[float, float]:
    lo, hi = {"ellipse": (0.6, 0.8), "rect": (0.4, 0.8), "triangle": (0.6, 0.8)}[kind]
    a, b = rng.uniform(lo, hi, size=2) * scale
    return float(a), float(b)


def _random_shape(rng: np.random.Generator, kind: str, center, scale_range: tuple[float, float]) -> Shape2D:
    scale = float(rng.uniform(*scale_range))
    angle = float(rng.uniform(-_MAX_ANGLE, _MAX_ANGLE))
    return Shape2D(kind, (float(center[0]), float(center[1])), _half_lengths(rng, kind, scale), angle)


def _shifted_center(rng: np.random.Generator, shape: Shape2D) -> np.ndarray:
    extent = 2.0 * max(shape.half)
    return np.asarray(shape.center) + rng.uniform(-_SHIFT, _SHIFT, size=2) * extent


class _Scene:
    """Rasterisation context for one image size: grid, in-bounds mask and pixel margins."""

    def __init__(self, size: int) -> None:
        self.grid = normalized_grid((size, size))
        self.box = np.all(np.abs(self.grid) <= _BOUND, axis=-1)
        self.m_in = max(1, round(10 * size / 200))  # small object to foreground border (inside)
        self.m_out = max(1, round(5 * size / 200))  # outside objects to foreground / to each other

    def foreground(self, rng: np.random.Generator, center) -> tuple[Shape2D, np.ndarray]:
        """Sample a foreground object around ``center`` that fits inside the bounds."""
        for _ in range(100):
            kind = str(rng.choice(["ellipse", "rect"]))
            shape = _random_shape(rng, kind, center, (0.8, 0.9))
            mask = shape.mask(self.grid)
            if not np.any(mask & ~self.box):
                return shape, mask
            center = np.asarray(center) * 0.8  # pull towards the middle and retry
        raise RuntimeError("could not fit the foreground object inside the image bounds")


def _fits(mask: np.ndarray, allowed: np.ndarray, occupied: np.ndarray) -> bool:
    """Whether ``mask`` is big enough, lies in ``allowed`` and misses ``occupied``."""
    return mask.sum() >= _MIN_PIXELS and not np.any(mask & ~allowed) and not np.any(mask & occupied)


def _place_small(
    rng: np.random.Generator,
    scene: _Scene,
    allowed: tuple[np.ndarray, np.ndarray],
    occupied: tuple[np.ndarray, np.ndarray],
    seeds: np.ndarray,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Rejection-sample one small object pair; returns (source mask, target mask) or None.

    ``allowed``: where the (source, target) object may lie; ``occupied``: dilated masks of the
    objects placed so far; ``seeds``: (n, 2) candidate centres for the source object.
    """
    if len(seeds) == 0:
        return None
    for _ in range(_SOURCE_TRIES):
        kind = str(rng.choice(["ellipse", "rect", "triangle"]))
        center = seeds[rng.integers(len(seeds))]
        src = _random_shape(rng, kind, center, (0.15, 0.25))
        src_mask = src.mask(scene.grid)
        if not _fits(src_mask, allowed[0], occupied[0]):
            continue
        for _ in range(_TARGET_TRIES):
            tgt = _random_shape(rng, kind, _shifted_center(rng, src), (0.15, 0.25))
            tgt_mask = tgt.mask(scene.grid)
            if _fits(tgt_mask, allowed[1], occupied[1]):
                return src_mask, tgt_mask
    return None


def _sample_scene(
    rng: np.random.Generator, scene: _Scene
) -> tuple[list[np.ndarray], list[np.ndarray]] | None:
    """One attempt at a full scene; returns per-object (source masks, target masks), label order."""
    fg_src, src_fg_mask = scene.foreground(rng, rng.uniform(-0.15, 0.15, size=2))
    fg_tgt, tgt_fg_mask = scene.foreground(rng, _shifted_center(rng, fg_src))
    inside = (erode(src_fg_mask, scene.m_in), erode(tgt_fg_mask, scene.m_in))
    outside = (
        scene.box & ~dilate(src_fg_mask, scene.m_out),
        scene.box & ~dilate(tgt_fg_mask, scene.m_out),
    )
    occupied = [np.zeros_like(src_fg_mask), np.zeros_like(src_fg_mask)]
    masks_src, masks_tgt = [src_fg_mask], [tgt_fg_mask]

    def accept(pair: tuple[np.ndarray, np.ndarray]) -> None:
        for k in range(2):
            occupied[k] |= dilate(pair[k], scene.m_out)
        masks_src.append(pair[0])
        masks_tgt.append(pair[1])

    for _ in range(_N_INNER):
        both = inside[0] & inside[1] & ~occupied[0]
        seeds = scene.grid[both if both.any() else inside[0] & ~occupied[0]]
        pair = _place_small(rng, scene, inside, (occupied[0], occupied[1]), seeds)
        if pair is None:
            return None
        accept(pair)
    n_outer = int(rng.integers(2, _MAX_OUTER + 1))
    placed = 0
    for _ in range(n_outer):
        seeds = scene.grid[outside[0] & outside[1] & ~occupied[0]]
        pair = _place_small(rng, scene, outside, (occupied[0], occupied[1]), seeds)
        if pair is not None:
            accept(pair)
            placed += 1
    return (masks_src, masks_tgt) if placed >= 1 else None


def _intensities(rng: np.random.Generator, n: int) -> np.ndarray:
    """Distinct intensities in (0.2, 1.0] for ``n`` objects (plus 0 for the background)."""
    width = 0.8 / n
    slots = rng.permutation(n)
    values = 0.2 + width * (slots + rng.uniform(0.5, 1.0, size=n))
    return np.concatenate([[0.0], values])


def _paint(masks: list[np.ndarray]) -> np.ndarray:
    labels = np.zeros(masks[0].shape, dtype=np.int64)
    for k, mask in enumerate(masks, start=1):
        labels[mask] = k  # later objects (the small ones) are drawn on top of the foreground
    return labels


def _pair_from_rng(rng: np.random.Generator, size: int, name: str) -> SyntheticPair:
    scene = _Scene(size)
    for _ in range(_SCENE_TRIES):
        result = _sample_scene(rng, scene)
        if result is not None:
            break
    else:
        raise RuntimeError(f"could not sample a synthetic scene of size {size} ({name})")
    masks_src, masks_tgt = result
    lut = _intensities(rng, len(masks_src))
    src_labels, tgt_labels = _paint(masks_src), _paint(masks_tgt)
    return SyntheticPair(
        source=labels_to_image(src_labels, lut),
        target=labels_to_image(tgt_labels, lut),
        source_labels=torch.from_numpy(src_labels),
        target_labels=torch.from_numpy(tgt_labels),
        source_regions=torch.from_numpy(masks_src[0].astype(np.int64)),
        target_regions=torch.from_numpy(masks_tgt[0].astype(np.int64)),
        spacing=(1.0, 1.0),
        name=name,
    )


def _check(seed: int, size: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 32:
        raise ValueError(f"size must be an integer >= 32, got {size!r}")


def make_pair_2d(seed: int, size: int = 200) -> SyntheticPair:
    """One synthetic 2D pair, reproducible from ``seed``.

    Args:
        seed: non-negative integer; ``numpy.random.default_rng(seed)`` drives all sampling.
        size: image side length N in pixels (>= 32); the paper uses 200.

    Returns:
        A :class:`SyntheticPair` with images (1, N, N) float32 in [0, 1], labels and regions
        (N, N) int64 (label 1 = the foreground object's visible part, 2-3 = the objects inside it,
        4.. = the objects outside it; region 1 = the foreground object), spacing (1.0, 1.0) and
        name ``"synth2d_s{seed:04d}"``.
    """
    _check(seed, size)
    return _pair_from_rng(np.random.default_rng(seed), int(size), f"synth2d_s{seed:04d}")


def make_pairs_2d(n: int, seed: int = 0, size: int = 200) -> list[SyntheticPair]:
    """``n`` synthetic 2D pairs; pair i uses the independent stream ``SeedSequence(seed, spawn_key=(i,))``.

    Names are ``"synth2d_s{seed:04d}_{i:04d}"``. Shapes and contents as in :func:`make_pair_2d`.
    """
    _check(seed, size)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    pairs = []
    for i in range(int(n)):
        rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(i,)))
        pairs.append(_pair_from_rng(rng, int(size), f"synth2d_s{seed:04d}_{i:04d}"))
    return pairs
