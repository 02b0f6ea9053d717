"""Seeded augmentation of training batches: small random affine warps and intensity changes.

Every image of a batch gets its own draw, the source and the target independently, so a pair's
misalignment is changed too. A strength ``s`` scales the ranges of :class:`AugmentRanges` (the
ranges at ``s = 1``); ``s = 0`` returns the images unchanged.

* affine: the image is resampled at ``y = A (x - c) + c + t`` (domain coordinates, so rotation and
  shear are physical: the domain keeps the grid's aspect ratio), with c the grid's centre,
  A = R(angles) diag(1 + scales) (I + upper shear) and t a translation in voxels; bilinear, zero
  padding (the background of the normalised images) by default;
* intensity: ``clamp(a x^gamma + b, 0, 1)`` with log gamma, a - 1 and b drawn uniformly, so images
  normalised to [0, 1] stay in [0, 1].

All draws come from a ``torch.Generator`` (on the CPU, whatever the images' device), so a batch's
augmentation is reproducible from the generator's seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..config_base import ConfigError, _Config, _positive
from ..core.interpolation import identity_map, sample

__all__ = ["AugmentRanges", "affine_augment", "augment_pairs", "intensity_augment", "random_affine"]


@dataclass(frozen=True)
class AugmentRanges(_Config):
    """The ranges of the draws at strength 1 (each drawn uniformly in [-range, range]).

    Attributes:
        rotation_degrees: rotation angle per plane of axes (1 plane in 2D, 3 in 3D).
        scale: relative scaling per axis (0.05: +-5 %).
        shear: off-diagonal shear entries of the linear part.
        translation_voxels: translation per axis, in voxels of the image grid.
        log_gamma: log of the gamma exponent (0.3: gamma in [0.74, 1.35]).
        intensity_scale: a - 1 of the linear intensity change a x + b.
        intensity_shift: b.
    """

    rotation_degrees: float = 5.0
    scale: float = 0.05
    shear: float = 0.05
    translation_voxels: float = 4.0
    log_gamma: float = 0.3
    intensity_scale: float = 0.1
    intensity_shift: float = 0.05

    def __post_init__(self) -> None:
        for name in ("rotation_degrees", "scale", "shear", "translation_voxels", "log_gamma",
                     "intensity_scale", "intensity_shift"):
            _positive(f"augment.{name}", getattr(self, name), allow_zero=True)
        if self.scale >= 0.5 or self.intensity_scale >= 1:
            raise ConfigError("augment.scale must be < 0.5 and augment.intensity_scale < 1")


def _uniform(generator: torch.Generator, *shape: int) -> Tensor:
    """Uniform draws in [-1, 1], float64 on the CPU."""
    return torch.rand(*shape, generator=generator, dtype=torch.float64) * 2 - 1


def random_affine(n: int, ndim: int, generator: torch.Generator, strength: float = 1.0,
                  ranges: AugmentRanges = AugmentRanges()) -> Tensor:
    """``n`` random linear parts A = R diag(1 + s) (I + shear): (n, d, d) float64 on the CPU."""
    s = float(strength)
    w = torch.zeros(n, ndim, ndim, dtype=torch.float64)
    planes = [(i, j) for i in range(ndim) for j in range(i + 1, ndim)]
    angles = _uniform(generator, n, len(planes)) * math.radians(ranges.rotation_degrees) * s
    for k, (i, j) in enumerate(planes):
        w[:, i, j], w[:, j, i] = -angles[:, k], angles[:, k]
    scale = torch.diag_embed(1 + _uniform(generator, n, ndim) * ranges.scale * s)
    shear = torch.eye(ndim, dtype=torch.float64).repeat(n, 1, 1)
    upper = torch.triu(torch.ones(ndim, ndim, dtype=torch.bool), diagonal=1)
    shear[:, upper] = _uniform(generator, n, int(upper.sum())) * ranges.shear * s
    return torch.linalg.matrix_exp(w) @ scale @ shear


def affine_augment(images: Tensor, spacing: Sequence[float], generator: torch.Generator, strength: float = 1.0,
                   ranges: AugmentRanges = AugmentRanges(), padding: str = "zeros") -> Tensor:
    """Each image of ``images`` (B, C, *S), d = 2 or 3, resampled through its own random affine
    warp about the grid's centre (see the module docstring); ``spacing`` the grid's domain spacing.
    Returns (B, C, *S); ``images`` itself when ``strength`` is 0."""
    if strength == 0:
        return images
    b, shape = images.shape[0], tuple(images.shape[2:])
    d = len(shape)
    if len(spacing) != d:
        raise ValueError(f"spacing {tuple(spacing)} does not match the images' {d} spatial axes")
    linear = random_affine(b, d, generator, strength, ranges)
    h = torch.tensor([float(x) for x in spacing], dtype=torch.float64)
    shift = _uniform(generator, b, d) * ranges.translation_voxels * float(strength) * h
    centre = torch.tensor([(n - 1) / 2 for n in shape], dtype=torch.float64) * h
    offset = centre + shift - (linear @ centre[:, None])[..., 0]  # y = A x + (c + t - A c)
    x = identity_map(shape, spacing, dtype=torch.float64)[0].reshape(d, -1)
    y = (linear @ x + offset[..., None]).reshape(b, d, *shape)
    return sample(images, y.to(images.device, images.dtype), spacing, padding=padding)


def intensity_augment(images: Tensor, generator: torch.Generator, strength: float = 1.0,
                      ranges: AugmentRanges = AugmentRanges()) -> Tensor:
    """``clamp(a x^gamma + b, 0, 1)`` per image of ``images`` (B, C, *S) in [0, 1] (one draw per
    batch element, shared by its channels). Returns (B, C, *S); ``images`` itself when
    ``strength`` is 0."""
    if strength == 0:
        return images
    s, b, d = float(strength), images.shape[0], images.dim() - 2
    view = (b, 1, *([1] * d))
    draws = [_uniform(generator, b) * r * s for r in (ranges.log_gamma, ranges.intensity_scale, ranges.intensity_shift)]
    gamma, a, shift = (t.to(images.device, images.dtype).view(view) for t in
                       (draws[0].exp(), 1 + draws[1], draws[2]))
    return (a * images.clamp(0, 1).pow(gamma) + shift).clamp(0, 1)


def augment_pairs(source: Tensor, target: Tensor, spacing: Sequence[float], generator: torch.Generator,
                  affine: float = 0.0, intensity: float = 0.0,
                  ranges: AugmentRanges = AugmentRanges()) -> tuple[Tensor, Tensor]:
    """A training batch's sources and targets (B, C, *S) each augmented independently: first the
    affine warp of strength ``affine``, then the intensity change of strength ``intensity``.
    Returns (source, target), (B, C, *S) each, in [0, 1] when the inputs are."""
    both = torch.cat([source, target])
    both = intensity_augment(affine_augment(both, spacing, generator, affine, ranges), generator, intensity, ranges)
    return both[: source.shape[0]], both[source.shape[0]:]
