"""The affine stage's image pyramid and the similarity each level evaluates.

A :class:`_Level` holds the fixed image smoothed and resampled to one scale, the moving image
smoothed to the same physical resolution, and evaluates the loss of a world-space affine by
sampling the moving image through it (``sample_voxel``, linear); "ncc" / "ssd" / "mi" are taken over
the overlap only (:func:`overlap_similarity`), as ITK/ANTs metrics do. Used by :mod:`.optimize`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import AffineConfig
from ..core.interpolation import sample_voxel
from ..mutual_information import MutualInformation
from ..similarity import make_similarity
from ..spatial.image import Image, resample_to_grid

__all__ = ["overlap_similarity", "MIN_OVERLAP", "NO_OVERLAP_LOSS"]

# measures evaluated over the overlap only (fixed points mapped inside the moving image)
_OVERLAP_MEASURES = ("ncc", "ssd", "mi")
MIN_OVERLAP = 0.1
"""Below this fraction of fixed voxels mapped inside the moving image, "ncc" / "ssd" / "mi" give
:data:`NO_OVERLAP_LOSS` (with zero gradient), so the line search backs off."""
NO_OVERLAP_LOSS = 2.0



def overlap_similarity(kind: str, warped: Tensor, target: Tensor, mask: Tensor, eps: float = 1e-10) -> Tensor:
    """SSD, NCC or MI over the voxels where ``mask`` is 1 (the overlap), as ITK/ANTs metrics do.

    Same definitions as :class:`rdmm_pipelines.similarity.SSD` / :class:`~.similarity.NCC` (sigma
    1), with every mean taken over the masked voxels: SSD = mean_{c, mask} (I_w - I_t)^2,
    NCC = 1 - mean_c cov_c^2 / (var_w,c var_t,c + eps). With a mask of ones they coincide.
    MI is :class:`rdmm_pipelines.mutual_information.MutualInformation` (32 bins, every voxel) with
    the mask as its voxel weight: ``1 - MI / H(target)`` of the joint histogram of the masked voxels.

    Args:
        kind: "ssd", "ncc" or "mi".
        warped, target: (B, C, *S).
        mask: (B or 1, 1, *S) of 0 / 1.

    Returns:
        (B,).
    """
    if kind == "mi":
        return MutualInformation()(warped, target, mask)
    w, t = warped.flatten(2), target.flatten(2)
    m = mask.flatten(2).expand(w.shape[0], 1, -1)
    n = m.sum(2, keepdim=True).clamp_min(1.0)  # (B, 1, 1)
    if kind == "ssd":
        return ((w - t).pow(2) * m).sum(2).mean(1) / n[:, 0, 0]
    if kind != "ncc":
        raise ValueError(f"overlap similarity is 'ssd', 'ncc' or 'mi', got {kind!r}")
    a = (w - (w * m).sum(2, keepdim=True) / n) * m
    b = (t - (t * m).sum(2, keepdim=True) / n) * m
    cov = (a * b).sum(2) / n[:, :, 0]
    ncc2 = cov * cov / ((a * a).sum(2) / n[:, :, 0] * ((b * b).sum(2) / n[:, :, 0]) + eps)
    return (1.0 - ncc2.mean(1)).clamp_min(0.0)


def _gaussian_1d(sigma: float, dtype: torch.dtype, device) -> Tensor:
    r = max(1, int(math.ceil(3.0 * sigma)))
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return (g / g.sum()).to(dtype=dtype, device=device)


def _blur(x: Tensor, sigmas: np.ndarray) -> Tensor:
    """Separable Gaussian blur of (1, C, *S) with per-axis sigmas in voxels (edge replicated)."""
    d = x.dim() - 2
    conv = F.conv2d if d == 2 else F.conv3d
    c = x.shape[1]
    for k, s in enumerate(sigmas):
        if s < 0.2 or x.shape[2 + k] < 2:
            continue
        g = _gaussian_1d(float(s), x.dtype, x.device)
        r = (g.numel() - 1) // 2
        r = min(r, x.shape[2 + k] - 1)
        g = g[(g.numel() - 1) // 2 - r : (g.numel() - 1) // 2 + r + 1]
        g = g / g.sum()
        shape = [1] * d
        shape[k] = g.numel()
        pad = [0] * (2 * d)
        pad[2 * (d - 1 - k)] = pad[2 * (d - 1 - k) + 1] = r  # F.pad lists the last axis first
        x = conv(F.pad(x, pad, mode="replicate"), g.view(1, 1, *shape).expand(c, 1, *shape), groups=c)
    return x


def _smoothing_sigmas(spacing: np.ndarray, target_mm: np.ndarray) -> np.ndarray:
    """Voxel sigmas taking an image of ``spacing`` (mm) to a resolution of ``target_mm``."""
    ratio = np.asarray(target_mm, dtype=np.float64) / spacing
    return 0.5 * np.sqrt(np.clip(ratio**2 - 1.0, 0.0, None))


def _coarse_shape(shape: tuple[int, ...], factor: float, minimum: int) -> tuple[int, ...]:
    if factor >= 1.0:
        return tuple(shape)
    return tuple(n if n == 1 else max(min(minimum, n), int(round(factor * n))) for n in shape)


def level_factors(config: AffineConfig, shape: tuple[int, ...]) -> tuple[float, ...]:
    """The scale factor each of ``config.scales`` runs at on a fixed grid of ``shape``.

    A factor is lowered, in steps of 0.001 (not below 0.001), until the level's grid (with the
    ``min_size`` floor of short axes) keeps within ``config.max_voxels``: twelve parameters need no
    millions of samples. 0.0 marks a level skipped, because it has no iterations or because the
    limit made its grid the previous level's.
    """
    shape = tuple(int(n) for n in shape)

    def voxels(f: float) -> int:
        return math.prod(_coarse_shape(shape, f, config.min_size))

    plan: list[float] = []
    last = None
    for factor, iters in zip(config.scales, config.iterations):
        f = float(factor)
        if config.max_voxels and voxels(f) > config.max_voxels:
            f = math.floor(1000.0 * min(f, (config.max_voxels / math.prod(shape)) ** (1.0 / len(shape)) + 0.05)) / 1000.0
            while f > 0.001 and voxels(f) > config.max_voxels:
                f = round(f - 0.001, 3)
            f = max(f, 0.001)
        grid = _coarse_shape(shape, f, config.min_size)
        plan.append(0.0 if iters == 0 or (f < factor and grid == last) else f)
        if iters:
            last = grid
    return tuple(plan)


# ------------------------------------------------------------------------------ the registration
class _Level:
    """Images and constants of one scale: the loss as a function of the world matrix."""

    def __init__(self, fixed: Image, moving: Image, factor: float, cfg: AffineConfig,
                 fixed_mask: Image | None = None, moving_mask: Image | None = None) -> None:
        """``fixed_mask`` / ``moving_mask``: (1, *S) masks in [0, 1] on the fixed / moving grid, or
        None; the loss is restricted to the fixed voxels inside the fixed mask whose point maps
        inside the moving mask (linearly interpolated: a soft edge)."""
        d = fixed.ndim
        shape = _coarse_shape(fixed.grid.shape, factor, cfg.min_size)
        self.grid = fixed.grid.resized(shape)
        target_mm = self.grid.spacing
        f_data = fixed.batch()
        if shape != fixed.grid.shape:
            f_data = _blur(f_data, _smoothing_sigmas(fixed.grid.spacing, target_mm))
            self.fixed = resample_to_grid(Image(f_data[0], fixed.grid), self.grid, padding="border").batch()
        else:
            self.fixed = f_data
        # the moving image: smoothed to the (geometric-mean) coarse resolution, kept on its grid
        coarse_mm = float(np.exp(np.log(target_mm).mean()))
        if shape != fixed.grid.shape:
            self.moving = _blur(moving.batch(), _smoothing_sigmas(moving.grid.spacing, np.full(d, coarse_mm)))
        else:
            self.moving = moving.batch()
        self.fixed_mask = None
        if fixed_mask is not None:
            self.fixed_mask = resample_to_grid(fixed_mask.with_data(fixed_mask.data.to(self.fixed.dtype)), self.grid,
                                               mode="linear").batch()
        self.masked_moving = moving_mask is not None  # the mask travels as one more channel of the moving image
        if self.masked_moving:
            self.moving = torch.cat([self.moving, moving_mask.data.to(self.moving)[None]], dim=1)
        self.moving_grid = moving.grid
        dtype, device = self.fixed.dtype, self.fixed.device
        self.idx_flat = self.grid.voxel_indices(dtype, device).view(d, -1)
        self.fixed_affine = torch.as_tensor(self.grid.affine_matrix, dtype=torch.float64, device=device)
        self.moving_inv = torch.as_tensor(
            np.linalg.inv(moving.grid.affine_matrix), dtype=torch.float64, device=device
        )
        self.kind = cfg.similarity
        self.sim = None if self.kind in _OVERLAP_MEASURES else make_similarity(self.kind, shape)
        self.upper = torch.tensor(
            [n - 1 for n in moving.grid.shape], dtype=dtype, device=device
        ).view(1, d, *([1] * d))
        self.d = d

    def _coords(self, world: Tensor) -> Tensor:
        d = self.d
        m = self.moving_inv @ world @ self.fixed_affine
        if d == 2:
            m = m[[0, 1, 3]][:, [0, 1, 3]]
        m = m.to(self.idx_flat.dtype)
        return (m[:d, :d] @ self.idx_flat + m[:d, d:]).view(1, d, *self.grid.shape)

    def warp(self, world: Tensor) -> Tensor:
        """(1, C, *S) moving image sampled at ``world`` applied to this level's fixed grid."""
        warped = sample_voxel(self.moving, self._coords(world), mode="linear", padding="zeros")
        return warped[:, :-1] if self.masked_moving else warped

    def loss(self, world: Tensor) -> Tensor:
        coords = self._coords(world)
        warped = sample_voxel(self.moving, coords, mode="linear", padding="zeros")
        weight = self.fixed_mask
        if self.masked_moving:
            warped, moved_mask = warped[:, :-1], warped[:, -1:]
            moved_mask = moved_mask.detach()  # selects voxels, as ANTs' masks do; not a term to optimise
            weight = moved_mask if weight is None else weight * moved_mask
        if self.sim is not None:
            return self.sim(warped, self.fixed, weight).sum()
        tol = 1e-3
        inside = ((coords >= -tol) & (coords <= self.upper + tol)).all(dim=1, keepdim=True)
        if float(inside.to(torch.float32).mean()) < MIN_OVERLAP:
            return warped.sum() * 0.0 + NO_OVERLAP_LOSS  # zero gradient, worse than any overlap
        mask = inside.to(warped.dtype) if weight is None else inside.to(warped.dtype) * weight
        return overlap_similarity(self.kind, warped, self.fixed, mask).sum()
