"""Optimised affine pre-registration: multi-scale L-BFGS on a well-scaled parametrisation.

The estimated transform maps FIXED world points to MOVING world points (see
:mod:`rdmm_pipelines.affine.transform`). How it is estimated:

* **Intensities**: both images are mapped to [0, 1] by their 0.1 / 99.9 percentiles and clamped
  (:func:`rdmm_pipelines.spatial.normalize_intensity`; ``config.percentiles``); a constant image
  is an error.
* **Similarity**: "ncc" (default), "ssd" and "mi" (mutual information, for multi-modal pairs) are
  evaluated over the overlap only (times the masks, when given), the fixed voxels
  whose moving point lies inside the moving image (as ITK/ANTs metrics do; below 10% overlap the
  loss is a constant 2, worse than any real value). Zero-filling the outside instead biases the
  result as soon as the moving field of view cuts through structure (measured on textured 3D
  images with partial coverage: 3-7 voxel errors with zero filling, 0.03-0.06 over the overlap).
  "lncc" / "mk-lncc" (:mod:`rdmm_pipelines.similarity`) see zeros outside the moving image.
* **Initialisation** ``A0``: a translation aligning the world intensity centroids
  ("center_of_mass"), the grid box centres ("geometric_center"), or the identity.
* **Parametrisation**: ``A = A0 @ inv(N) @ T(theta) @ N`` where ``N`` maps world mm to a centred,
  unit-less frame, ``u = (x - c) / s`` (``c`` the fixed image's intensity centroid for
  "center_of_mass", else its box centre; ``s`` half the longest side of the fixed box in mm), and
  ``T(theta)`` is an affine of that frame with ``theta = 0`` the identity: "affine" ``T = [I + L,
  t]`` (d*d + d parameters), "similarity" ``[e^a R(w), t]``, "rigid" ``[R(w), t]`` (R = exp of a
  skew matrix, w in radians). A parameter change of 0.01 thus moves the fixed box's far corner by
  about 1% of its half-size whatever the image's size, spacing or world position, so one L-BFGS
  setting fits all images. 2D images (in an axial plane) get 6 affine parameters, 3D 12.
* **Scales**: each scale factor is lowered so that its grid keeps within ``config.max_voxels``
  (a scale the limit makes equal to the previous one is skipped: ``affine.pyramid.level_factors``);
  at each scale factor ``f`` the fixed image is smoothed (Gaussian, sigma
  ``sqrt(f^-2 - 1) / 2`` of its voxels) and resampled to ``fixed_grid.resized(round(f n))``; the
  moving image is smoothed to the same physical resolution and sampled, at every evaluation,
  through world space at ``inv(A_moving) A A_fixed_coarse`` applied to the coarse voxel indices
  (:func:`rdmm_pipelines.core.interpolation.sample_voxel`, linear). The parameters carry over
  unchanged from scale to scale (they do not depend on the grid).
* **Optimiser**: L-BFGS with a strong-Wolfe line search (:func:`rdmm_pipelines.optim.lbfgs.minimize`),
  first trial step ``config.learning_rate`` times the quasi-Newton step, at most ``iterations[k]``
  iterations per scale (it stops earlier when the loss and the parameters stop changing); the best
  finite parameters seen are kept.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, ClassVar

import numpy as np
import torch
from torch import Tensor

from ..config import _AFFINE_INITS as _INITS
from ..config import AffineConfig
from ..optim.lbfgs import minimize
from ..spatial.grid import Grid
from ..spatial.image import Image
from ..masks import normalize_in_mask
from .pyramid import (
    _OVERLAP_MEASURES,
    MIN_OVERLAP,
    NO_OVERLAP_LOSS,
    _Level,
    level_factors,
    overlap_similarity,
)
from .transform import AffineTransform

__all__ = [
    "AffineConfig",
    "AffineResult",
    "AffineIterationRecord",
    "affine_register",
    "centroid",
    "initial_transform",
    "overlap_similarity",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AffineIterationRecord:
    """One L-BFGS iteration: its scale, global iteration number, loss (``total``) and time.

    ``stage`` (a class attribute, "affine") tells progress displays which stage of a registration
    it belongs to (:mod:`rdmm_pipelines.progress`)."""

    stage: ClassVar[str] = "affine"
    scale: float
    iteration: int
    total: float
    seconds: float


@dataclass(frozen=True, eq=False)
class AffineResult:
    """Outcome of :func:`affine_register`.

    Attributes:
        transform: fixed -> moving world transform (RAS mm).
        history: the loss after every L-BFGS iteration, all scales in order.
        seconds: wall time.
        initial_loss, final_loss: the similarity at full resolution for the initial transform
            (after initialisation) and for the result.
        initial_transform: the initialisation (centre of mass / geometric centre / identity).
        iterations_per_scale: iterations run at each scale.
        scales: the factor each configured scale ran at (``affine.pyramid.level_factors``; 0: skipped).
        records: per-iteration details (scale, loss, time).
        warnings: anything suspicious (non-finite loss, a near-singular or flipping result).
    """

    transform: AffineTransform
    history: tuple[float, ...]
    seconds: float
    initial_loss: float
    final_loss: float
    initial_transform: AffineTransform | None = None
    iterations_per_scale: tuple[int, ...] = ()
    scales: tuple[float, ...] = ()
    records: tuple[AffineIterationRecord, ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        """A JSON-ready summary (matrix as nested lists, world RAS fixed -> moving)."""
        return {
            "matrix": self.transform.to_list(),
            "ndim": self.transform.ndim,
            "initial_matrix": None if self.initial_transform is None else self.initial_transform.to_list(),
            "initial_loss": self.initial_loss,
            "final_loss": self.final_loss,
            "seconds": self.seconds,
            "iterations_per_scale": list(self.iterations_per_scale),
            "scales": list(self.scales),
            "history": list(self.history),
            "warnings": list(self.warnings),
        }


# ------------------------------------------------------------------------------ geometry helpers
def _check_pair(fixed: Image, moving: Image) -> int:
    if not isinstance(fixed, Image) or not isinstance(moving, Image):
        raise TypeError("affine_register needs two Image objects")
    d = fixed.ndim
    if moving.ndim != d:
        raise ValueError(f"fixed image is {d}D but moving image is {moving.ndim}D")
    if fixed.is_labels or moving.is_labels:
        raise ValueError("affine registration needs intensity images, not integer label maps")
    if fixed.channels != moving.channels:
        raise ValueError(
            f"fixed and moving images have {fixed.channels} and {moving.channels} channels"
        )
    if d == 2:
        for name, g in (("fixed", fixed.grid), ("moving", moving.grid)):
            a = g.affine_matrix
            if np.abs(a[2, :2]).max() > 1e-6 * g.spacing.max():
                raise ValueError(
                    f"2D affine registration works in an axial plane (z constant), but the {name} "
                    f"grid's plane is tilted (affine row z = {a[2, :3].tolist()})"
                )
        dz = abs(fixed.grid.origin[2] - moving.grid.origin[2])
        if dz > 1e-3 * min(fixed.grid.spacing.min(), moving.grid.spacing.min()):
            raise ValueError(
                f"2D fixed and moving images lie in different planes (z = {fixed.grid.origin[2]:.6g} "
                f"and {moving.grid.origin[2]:.6g} mm)"
            )
    return d


def _normalise(image: Image, name: str, percentiles: tuple[float, float] = (0.1, 99.9),
               mask: Image | None = None) -> Image:
    """``image`` with its ``percentiles`` (over the voxels inside ``mask``, when given) mapped to 0
    and 1, clamped."""
    data = image.data if image.data.dtype in (torch.float32, torch.float64) else image.data.float()
    if not torch.isfinite(data).all():
        raise ValueError(f"the {name} image has non-finite (NaN or inf) intensities")
    try:
        return normalize_in_mask(image.with_data(data), mask, f"{name} image", percentiles)[0]
    except ValueError as exc:
        raise ValueError(f"cannot affinely register: the {name} image is constant ({exc})") from None


def centroid(image: Image) -> np.ndarray:
    """World RAS centroid (3,) of the (non-negative) intensities summed over channels."""
    w = image.data.detach().to("cpu", torch.float64).clamp_min(0).sum(0)
    total = float(w.sum())
    if not total > 0:
        raise ValueError("image has no positive intensity: its centre of mass is undefined")
    idx = image.grid.voxel_indices(torch.float64)[0]
    mean_idx = (idx * w).flatten(1).sum(1).numpy() / total
    return image.grid.voxel_to_world(mean_idx)


def _masked(image: Image, mask: Image | None) -> Image:
    """``image`` times ``mask`` for a centre of mass; the mask itself where nothing positive is
    left inside it."""
    if mask is None:
        return image
    kept = image.data * mask.data
    return image.with_data(kept if bool((kept > 0).any()) else mask.data.expand_as(kept).clone())


def _box_centre(grid: Grid) -> np.ndarray:
    return grid.voxel_to_world((np.asarray(grid.shape, dtype=np.float64) - 1) / 2.0)


def initial_transform(fixed: Image, moving: Image, init: str) -> AffineTransform:
    """The initial translation for ``init`` (images assumed intensity-normalised)."""
    d = fixed.ndim
    if init == "identity":
        return AffineTransform.identity(d)
    if init == "geometric_center":
        shift = _box_centre(moving.grid) - _box_centre(fixed.grid)
    elif init == "center_of_mass":
        shift = centroid(moving) - centroid(fixed)
    else:
        raise ValueError(f"unknown initialisation {init!r}; use one of {', '.join(_INITS)}")
    if d == 2:
        shift[2] = 0.0
    return AffineTransform.from_translation(shift, d)


# ------------------------------------------------------------------------------ parametrisation
def _rotation(w: Tensor, d: int) -> Tensor:
    if d == 2:
        c, s = torch.cos(w[0]), torch.sin(w[0])
        return torch.stack([torch.stack([c, -s]), torch.stack([s, c])])
    z = w.new_zeros(())
    skew = torch.stack(
        [torch.stack([z, -w[2], w[1]]), torch.stack([w[2], z, -w[0]]), torch.stack([-w[1], w[0], z])]
    )
    return torch.linalg.matrix_exp(skew)


def _frame_matrix(theta: Tensor, d: int, dof: str) -> Tensor:
    """(4, 4) float64 affine T(theta) of the normalised frame (identity at theta = 0)."""
    eye = torch.eye(d, dtype=theta.dtype, device=theta.device)
    if dof == "affine":
        lin = eye + theta[: d * d].view(d, d)
        t = theta[d * d :]
    else:
        nrot = 1 if d == 2 else 3
        lin = _rotation(theta[:nrot], d)
        if dof == "similarity":
            lin = torch.exp(theta[nrot]) * lin
            t = theta[nrot + 1 :]
        else:
            t = theta[nrot:]
    cols = [lin, t[:, None]] if d == 3 else [lin, theta.new_zeros(d, 1), t[:, None]]
    top = torch.cat(cols, dim=1)  # (d, 4)
    bottom = torch.eye(4, dtype=theta.dtype, device=theta.device)[d:]
    return torch.cat([top, bottom], dim=0)


def _world_matrix(theta: Tensor, a0: Tensor, n: Tensor, n_inv: Tensor, d: int, dof: str) -> Tensor:
    return a0 @ n_inv @ _frame_matrix(theta, d, dof) @ n


# ------------------------------------------------------------------------------ smoothing
class _Tracker:
    """Turns L-BFGS function evaluations into one record per iteration (the lowest loss so far),
    reports progress as iterations complete, and restores the best parameters at the end (the
    line search may stop on a worse point)."""

    def __init__(self, theta, scale, history, records, progress, total, t_start) -> None:
        self.theta, self.scale, self.history, self.records = theta, scale, history, records
        self.progress, self.total, self.t_start = progress, total, t_start
        self.best_loss = math.inf
        self.best_theta = theta.detach().clone()
        self.current = 0
        self.iterations = 0

    def observe(self, n_iter: int, value: float) -> None:
        if n_iter != self.current:
            self._emit()
            self.current = n_iter
        if value < self.best_loss:
            self.best_loss, self.best_theta = value, self.theta.detach().clone()

    def _emit(self) -> None:
        if self.current == 0:  # the evaluation before the first iteration
            return
        self.history.append(self.best_loss)
        rec = AffineIterationRecord(self.scale, len(self.history), self.best_loss,
                                    time.perf_counter() - self.t_start)
        self.records.append(rec)
        self.iterations += 1
        if self.progress is not None:
            self.progress(rec, self.total)

    def finish(self) -> int:
        self._emit()
        with torch.no_grad():
            self.theta.copy_(self.best_theta)
        return self.iterations


def affine_register(
    fixed: Image,
    moving: Image,
    config: AffineConfig = AffineConfig(),
    device: torch.device | str = "cpu",
    progress: Callable[[AffineIterationRecord, int], None] | None = None,
    fixed_mask: Image | None = None,
    moving_mask: Image | None = None,
) -> AffineResult:
    """Estimate the affine map from ``fixed`` world points to ``moving`` world points.

    Args:
        fixed, moving: intensity images (any grids: oblique, anisotropic, different shapes; 2D
            images must lie in one axial plane). Same number of channels.
        config: :class:`AffineConfig`.
        device: where to compute.
        progress: called after every iteration with the record and the total iteration budget.
        fixed_mask, moving_mask: optional (1, *S) masks in [0, 1] on the fixed / moving grid
            that restrict the similarity (the fixed voxels inside the fixed mask whose point maps
            inside the moving mask).

    Returns:
        :class:`AffineResult`; ``result.transform.moving_voxels(fixed.grid, moving.grid)`` resamples
        the moving image onto the fixed grid.

    Raises:
        ValueError: constant or non-finite images, mismatched dimensions or channels, or 2D
            images not in a common axial plane.
    """
    t_start = time.perf_counter()
    if not isinstance(config, AffineConfig):
        raise TypeError(f"config must be an AffineConfig, got {type(config).__name__}")
    d = _check_pair(fixed, moving)
    work = torch.float64 if torch.float64 in (fixed.data.dtype, moving.data.dtype) else torch.float32
    for name, mask, img in (("fixed", fixed_mask, fixed), ("moving", moving_mask, moving)):
        if mask is not None and tuple(mask.data.shape[1:]) != tuple(img.grid.shape):
            raise ValueError(f"{name} mask of shape {tuple(mask.data.shape[1:])} is not on the {name} grid "
                             f"{tuple(img.grid.shape)}")
    fixed_n = _normalise(fixed, "fixed", config.percentiles, fixed_mask).to(device=device, dtype=work)
    moving_n = _normalise(moving, "moving", config.percentiles, moving_mask).to(device=device, dtype=work)
    fmask = None if fixed_mask is None else fixed_mask.with_data(fixed_mask.data.to(device=device, dtype=work))
    mmask = None if moving_mask is None else moving_mask.with_data(moving_mask.data.to(device=device, dtype=work))
    full = _Level(fixed_n, moving_n, 1.0, config, fmask, mmask)

    if not config.enabled:
        ident = AffineTransform.identity(d)
        with torch.no_grad():
            loss = float(full.loss(torch.tensor(np.array(ident.matrix), device=device)))
        return AffineResult(ident, (), time.perf_counter() - t_start, loss, loss, ident)

    # the centres of mass of what the masks keep (a blob outside the moving mask must not pull the
    # start); a mask over dark background only: the mask's own centre
    fixed_in, moving_in = _masked(fixed_n, fmask), _masked(moving_n, mmask)
    init = initial_transform(fixed_in, moving_in, config.init)
    centre = centroid(fixed_in) if config.init == "center_of_mass" else _box_centre(fixed.grid)
    if d == 2:
        centre[2] = 0.0
    half = 0.5 * fixed.grid.domain_scale
    n = np.eye(4)
    n[:3, :3] /= half
    n[:3, 3] = -centre / half
    if d == 2:  # leave z alone
        n[2] = [0.0, 0.0, 1.0, 0.0]
    as_t = lambda a: torch.tensor(np.array(a), dtype=torch.float64, device=device)  # noqa: E731
    a0, n_t, n_inv = as_t(init.matrix), as_t(n), as_t(np.linalg.inv(n))
    theta = torch.zeros(config.num_parameters(d), dtype=torch.float64, device=device, requires_grad=True)

    def world(th: Tensor) -> Tensor:
        return _world_matrix(th, a0, n_t, n_inv, d, config.dof)

    with torch.no_grad():
        initial_loss = float(full.loss(world(theta)))
    if not math.isfinite(initial_loss):
        raise ValueError("the similarity is not finite at the initial transform")
    notes: list[str] = []
    if config.similarity in _OVERLAP_MEASURES and initial_loss >= NO_OVERLAP_LOSS:
        notes.append(
            f"fewer than {MIN_OVERLAP:.0%} of the fixed voxels map inside the moving image at the "
            f"initial transform ({config.init}): nothing to optimise; try init='center_of_mass'"
        )

    history: list[float] = []
    records: list[AffineIterationRecord] = []
    per_scale: list[int] = []
    total_budget = sum(config.iterations)
    gamma: float | None = None
    plan = level_factors(config, fixed.grid.shape)
    for factor, iters in zip(plan, config.iterations):
        if factor == 0.0:  # no iterations, or the same grid as the previous scale (max_voxels)
            per_scale.append(0)
            continue
        level = full if factor >= 1.0 else _Level(fixed_n, moving_n, factor, config, fmask, mmask)
        with torch.no_grad():
            loss0 = float(level.loss(world(theta)))
        # divide by the starting loss so that L-BFGS's absolute tolerances are relative ones,
        # whatever the measure's magnitude (SSD values are ~1e-3 to 1e-6)
        inv0 = 1.0 / max(loss0, 1e-6) if math.isfinite(loss0) else 1.0
        tracker = _Tracker(theta, float(factor), history, records, progress, total_budget, t_start)

        def evaluate(k: int) -> float:
            loss = level.loss(world(theta))
            value = float(loss.detach())
            if not math.isfinite(value):
                notes.append(f"scale {factor}: non-finite similarity during the line search")
                theta.grad = torch.zeros_like(theta)
                return math.inf
            scaled = loss * inv0
            scaled.backward()
            tracker.observe(k, value)
            return float(scaled.detach())

        # the parameters and the (normalised, mean) loss do not depend on the grid: the curvature
        # learnt at the coarser scale is a good first guess at the finer one
        gamma = minimize(evaluate, [theta], max_iter=iters, history=10, max_evals=iters * 4 + 5, gamma=gamma,
                         grad_tolerance=1e-7, change_tolerance=1e-9, step=config.learning_rate).gamma
        done = tracker.finish()
        per_scale.append(done)
        log.info("affine scale %s (%s): loss %.6g after %d iterations", factor, level.grid.shape,
                 tracker.best_loss, done)

    with torch.no_grad():
        final_world = world(theta).cpu().numpy()
        final_loss = float(full.loss(world(theta)))
    det = float(np.linalg.det(final_world[:d, :d]))
    if not np.all(np.isfinite(final_world)) or not 0.2 < det < 5.0:
        what = "flips orientation" if det <= 0 else "changes volume by a factor"
        notes.append(
            f"the optimised affine {what} (determinant {det:.3g}): the optimisation diverged "
            "(too little overlap, or the wrong initialisation?); returning the initial transform"
        )
        result, final_loss = init, initial_loss
    elif not final_loss <= initial_loss:
        notes.append(
            f"the optimised loss {final_loss:.6g} is above the initial {initial_loss:.6g} at full "
            "resolution: returning the initial transform"
        )
        result, final_loss = init, initial_loss
    else:
        result = AffineTransform(final_world, d)
    for msg in dict.fromkeys(notes):
        log.warning(msg)
    return AffineResult(
        transform=result,
        history=tuple(history),
        seconds=time.perf_counter() - t_start,
        initial_loss=initial_loss,
        final_loss=final_loss,
        initial_transform=init,
        iterations_per_scale=tuple(per_scale),
        scales=plan,
        records=tuple(records),
        warnings=tuple(dict.fromkeys(notes)),
    )
