"""``register(fixed, moving, model=...)``: the one public call.

String names (model, preset, regulariser, device) are resolved here and only here; below this
everything is objects. Inputs are validated before any heavy work.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from pathlib import Path
from typing import Callable, Union

import torch
from torch import Tensor

from .affine import AffineTransform, affine_register
from .config import MODELS, RegistrationConfig
from .core.interpolation import resize_field, sample_voxel
from .optim.initial import InitialConditions
from .optim.multiscale import IterationRecord, optimize, scale_shapes
from .optim.preweights import preweights_from_regions, smooth_region_preweights
from .presets import default_region_weights, get_preset
from .masks import MaskLike, describe_mask, mask_on_grid, normalize_in_mask
from .progress import LONG_RUN_SECONDS, RegistrationProgress, TimeEstimate, estimate_seconds, plan_stages
from .provenance import device_description, resolve_device, sha256
from .result import RegistrationResult
from .spatial import Grid, Image, load_image, load_labels, same_grid
from .threads import available_cpus, registration_threads, thread_limits

__all__ = ["register", "as_image", "as_labels", "resolve_config"]

log = logging.getLogger(__name__)

ImageLike = Union[Image, str, os.PathLike, Tensor]


def as_image(x: ImageLike, what: str = "image") -> Image:
    """An :class:`Image` from an Image, a NIfTI path, or a (C, *S) tensor (unit spacing)."""
    if isinstance(x, Image):
        return x
    if isinstance(x, (str, os.PathLike)):
        return load_image(x)
    if isinstance(x, Tensor):
        if x.dim() not in (3, 4) or x.shape[0] > 8:
            raise ValueError(
                f"{what}: a tensor must be (C, *S) with 2 or 3 spatial axes and a channel axis first; "
                f"got shape {tuple(x.shape)} (add a leading channel axis: x[None])")
        return Image(x.float(), Grid.from_shape(tuple(x.shape[1:])))
    raise TypeError(f"{what}: expected an Image, a NIfTI path or a tensor, got {type(x).__name__}")


def as_labels(x: ImageLike, what: str = "labels") -> Image:
    """A label :class:`Image` (int64) from an Image, a NIfTI path or an integer (*S) tensor."""
    if isinstance(x, (str, os.PathLike)):
        return load_labels(x)
    if isinstance(x, Tensor):
        if x.dim() not in (2, 3):
            raise ValueError(f"{what}: a label tensor must be (*S) with 2 or 3 axes; got shape {tuple(x.shape)}")
        if x.is_floating_point() and not torch.equal(x, x.round()):
            raise ValueError(f"{what}: label tensor has non-integer values")
        return Image(x.long()[None], Grid.from_shape(tuple(x.shape)))
    if isinstance(x, Image):
        if not x.is_labels:
            if not torch.equal(x.data, x.data.round()):
                raise ValueError(f"{what}: label image has non-integer values")
            return x.with_data(x.data.long())
        return x
    raise TypeError(f"{what}: expected an Image, a NIfTI path or a tensor, got {type(x).__name__}")


def resolve_config(
    model: str | None = None,
    config: RegistrationConfig | None = None,
    preset: str | None = None,
    regularizer: str | None = None,
) -> RegistrationConfig:
    """Combine a preset (or explicit config) with a model name and a regulariser source."""
    if config is not None and preset is not None:
        raise ValueError("give either config or preset, not both")
    if model is not None and model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    if config is None:
        cfg = get_preset(preset or "default", model or "rdmm")
    else:
        cfg = config if model is None else config.replace(model=model)
    if regularizer is not None:
        if regularizer not in ("predefined", "optimized"):
            raise ValueError(f"unknown regularizer {regularizer!r}; choose predefined or optimized")
        regional = cfg.regional.replace(
            source=regularizer,
            region_weights=cfg.regional.region_weights or (
                default_region_weights(cfg.kernel) if regularizer == "predefined" else ()))
        cfg = cfg.replace(regional=regional)
    return cfg


def _read_affine(affine: AffineTransform | str | os.PathLike, ndim: int) -> AffineTransform:
    transform = affine if isinstance(affine, AffineTransform) else AffineTransform.read(affine)
    if transform.ndim != ndim:
        raise ValueError(f"the given affine is {transform.ndim}D but the images are {ndim}D")
    return transform


#: below this fraction of fixed voxels inside the moving image (after the affine), a warning
LOW_OVERLAP = 0.1


def _check_overlap(to_moving: Tensor, moving_grid: Grid, aligned: bool) -> list[str]:
    """Refuse a pair whose fields of view do not overlap (before the optimisation, which would
    return an all-zero warped image), and warn when they barely do.

    to_moving: (1, d, *S_fixed) moving voxel coordinates of the fixed voxels. Returns the warning
    (empty when the overlap is sound)."""
    n = torch.tensor(moving_grid.shape, dtype=to_moving.dtype, device=to_moving.device).view(1, -1, *([1] * moving_grid.ndim))
    inside = ((to_moving >= -0.5) & (to_moving <= n - 0.5)).all(dim=1)
    fraction = float(inside.double().mean())
    how = "after the affine pre-registration" if aligned else "without an estimated affine (given or disabled)"
    if fraction == 0.0:
        raise ValueError(f"the moving image does not overlap the fixed image {how}: none of the fixed image's voxels "
                         "falls inside the moving image's field of view; check the images' headers"
                         + ("" if aligned else ", or let the affine stage align them"))
    if fraction < LOW_OVERLAP:
        msg = (f"only {100 * fraction:.1f} % of the fixed image's voxels fall inside the moving image {how}: "
               "the registration can only use that overlap")
        log.warning(msg)
        return [msg]
    return []


def _grid_record(grid: Grid) -> dict:
    """A grid as registration.json records it: shape and 4x4 affine (RAS mm)."""
    return {"shape": list(grid.shape), "affine": [list(row) for row in grid.affine]}


def _initial_record(initial: InitialConditions) -> dict:
    return {"source": initial.source, "m0_shape": list(initial.m0.shape[2:]), "preweights": initial.h0 is not None,
            "iteration": initial.iteration}


def _describe(x: ImageLike) -> dict:
    if isinstance(x, (str, os.PathLike)):
        return {"path": str(Path(x).resolve()), "sha256": sha256(x)}
    return {"path": None}


def register(
    fixed: ImageLike,
    moving: ImageLike,
    model: str | None = None,
    *,
    config: RegistrationConfig | None = None,
    preset: str | None = None,
    regularizer: str | None = None,
    region_labels: ImageLike | None = None,
    fixed_mask: MaskLike | None = None,
    moving_mask: MaskLike | None = None,
    affine: AffineTransform | str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    progress: Callable[[IterationRecord, int], None] | RegistrationProgress | None = None,
    threads: int | None = None,
    deterministic: bool = False,
    initial: InitialConditions | None = None,
) -> RegistrationResult:
    """Register ``moving`` (source I0) to ``fixed`` (target I1).

    Args:
        fixed, moving: images (Image, NIfTI path, or (C, *S) tensor), both 2D or both 3D, any grids.
        model: "vsvf", "lddmm" or "rdmm" (overrides the config's).
        config: a full :class:`RegistrationConfig`; or ``preset``: a name from ``presets.PRESETS``.
        regularizer: RDMM pre-weight source, "predefined" or "optimized" (overrides the config's).
        region_labels: for "predefined": a label map in the moving image's space and on its grid;
            region r gets h0^2 = ``config.regional.region_weights[r]``.
        fixed_mask, moving_mask: optional masks (nonzero = inside; an Image, NIfTI path or
            tensor on any grid of the image's world space, :mod:`rdmm_pipelines.masks`) that
            restrict the similarity, in the affine and the deformable stage, to the fixed voxels
            inside the fixed mask whose point maps inside the moving mask. Checked before any
            work (dimension, empty, field of view); recorded in registration.json.
        affine: a given affine pre-registration (an :class:`AffineTransform`, or an ITK .txt /
            ANTs .mat file, fixed-to-moving as ITK writes them) used instead of estimating one;
            otherwise one is estimated when ``config.affine.enabled`` (the default).
        device: "auto", "cpu", "cuda" or "cuda:N".
        progress: a function, called after each iteration of the deformable optimiser with
            (:class:`~rdmm_pipelines.optim.multiscale.IterationRecord`, the deformable iteration
            budget); or a :class:`~rdmm_pipelines.progress.RegistrationProgress`, which also hears
            the affine stage's iterations and reports the fraction of the weighted work done
            and the time left (:mod:`rdmm_pipelines.progress`).
        threads: CPU threads of torch while registering (restored afterwards). None: one per
            ``threads.VOXELS_PER_THREAD`` (10^6) fixed-image voxels, at most torch's current count
            (:func:`~rdmm_pipelines.threads.registration_threads`: a 2D slice and a 2 mm brain run
            on one); 0: all CPUs available to the process.
        deterministic: one thread and torch's deterministic algorithms, so that a rerun with
            the same seed gives a bit-identical result (recorded in registration.json); with
            several threads the order of floating-point reductions varies between runs.
        initial: start the deformable optimisation from this momentum (and RDMM pre-weights)
            instead of zero (:class:`~rdmm_pipelines.optim.initial.InitialConditions`; instance
            optimisation from a network's prediction, :mod:`rdmm_pipelines.learning.refine`). Its
            grid spans the fixed image's domain after the affine: give the ``affine`` it was
            predicted with, or the affine stage would move the frame under it.

    Returns:
        A :class:`RegistrationResult` (on the CPU): ``apply()`` warps images and labels, ``save()``
        writes all outputs.

    Before a run estimated (:func:`~rdmm_pipelines.progress.estimate_seconds`, on a CPU) to take
    more than :data:`~rdmm_pipelines.progress.LONG_RUN_SECONDS`, the estimate and the options
    that shorten it are logged as a warning (or passed to a ``RegistrationProgress``'s
    ``on_long_run``).
    """
    t0 = time.perf_counter()
    cfg = resolve_config(model, config, preset, regularizer)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 0):
        raise ValueError(f"threads must be a non-negative integer (0: all available CPUs) or None; got {threads!r}")
    if deterministic and threads not in (None, 1):
        raise ValueError(f"a deterministic registration runs on one thread; got threads={threads}")
    fixed_img, moving_img = as_image(fixed, "fixed image"), as_image(moving, "moving image")
    if fixed_img.ndim != moving_img.ndim:
        raise ValueError(f"fixed image is {fixed_img.ndim}D but moving image is {moving_img.ndim}D")
    cfg = cfg.replace(optimizer=cfg.optimizer.resolved(fixed_img.ndim))  # "auto" iterations and preconditioner
    if fixed_img.channels != moving_img.channels:
        raise ValueError(f"fixed image has {fixed_img.channels} channels but moving image has {moving_img.channels}")
    for name, img in (("fixed", fixed_img), ("moving", moving_img)):
        if not torch.isfinite(img.data).all():
            raise ValueError(f"{name} image contains NaN or infinite values")
        if min(img.grid.shape) < 4:
            raise ValueError(f"{name} image is too small for registration: shape {img.grid.shape}")
    masks = _Masks.read(fixed_mask, moving_mask, fixed_img.grid, moving_img.grid)
    regions = None
    if cfg.model == "rdmm" and cfg.regional.source == "predefined":
        if region_labels is None:
            raise ValueError("a predefined RDMM regulariser needs region_labels (a label map of the moving image)")
        regions = as_labels(region_labels, "region labels")
        if not same_grid(regions.grid, moving_img.grid):
            raise ValueError(
                f"region label map grid {regions.grid} does not match the moving image grid {moving_img.grid}")
        n_rows = len(cfg.regional.region_weights)
        found = torch.unique(regions.data).tolist()
        if min(found) < 0 or max(found) >= n_rows:
            raise ValueError(f"region label map has labels {found} but region weights are given for labels 0..{n_rows - 1}")
    elif region_labels is not None:
        log.warning("region_labels ignored: model %s with a %s regulariser does not use them", cfg.model, cfg.regional.source)

    if initial is not None:
        initial.check(fixed_img.ndim, len(cfg.kernel.sigmas), cfg.model == "rdmm" and cfg.regional.source == "optimized")
    given_affine = _read_affine(affine, fixed_img.ndim) if affine is not None else None
    dev = resolve_device(device)
    n_threads = 1 if deterministic else registration_threads(fixed_img.grid.numel) if threads is None else threads
    _announce(progress, fixed_img.grid.shape, cfg, dev, n_threads or available_cpus(),
              affine=given_affine is None and cfg.affine.enabled)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    switch = deterministic and not was_deterministic  # torch's first call of the switch costs ~1.3 s
    with thread_limits(n_threads, environment=False):
        try:
            if switch:
                torch.use_deterministic_algorithms(True)
            result = _register_checked(fixed, moving, region_labels, affine, cfg, fixed_img, moving_img, regions,
                                       given_affine, dev, progress, t0, masks, initial)
        finally:
            if switch:
                torch.use_deterministic_algorithms(False)
    if isinstance(progress, RegistrationProgress):
        progress.finish()
    return dataclasses.replace(result, deterministic=deterministic or was_deterministic)


def _announce(progress, shape: tuple[int, ...], cfg: RegistrationConfig, dev: torch.device, threads: int,
              affine: bool) -> None:
    """The time estimate before the work: a warning (or ``progress.on_long_run``) when the run is
    estimated long on this CPU, and the plan for a :class:`RegistrationProgress`. On a GPU the
    CPU-calibrated estimate says nothing, so nothing is announced."""
    seconds = estimate_seconds(shape, cfg, threads, affine) if dev.type == "cpu" else None
    if seconds is not None and seconds > LONG_RUN_SECONDS:
        estimate = TimeEstimate(seconds, tuple(shape), cfg.model, threads, available_cpus())
        if isinstance(progress, RegistrationProgress) and progress.on_long_run is not None:
            progress.on_long_run(estimate)
        else:
            log.warning(estimate.message())
    if isinstance(progress, RegistrationProgress):
        progress.start(plan_stages(shape, cfg, affine), estimate=seconds)


def kernel_sigmas(cfg: RegistrationConfig, grid: Grid) -> tuple[float, ...]:
    """The kernel's sigmas in domain units on ``grid``, as the registration uses them.

    ``kernel.sigmas`` converted from their units; then, where the narrowest spans fewer than
    ``kernel.min_voxels`` voxels h of the finest map grid, it is raised to ``min_voxels h`` and the
    others are spread geometrically between it and the widest, which is kept (log sigma_i mapped
    linearly from [log sigma_0, log sigma_max] onto [log min_voxels h, log sigma_max]); a widest
    sigma below the floor too makes every sigma the floor times its ratio to sigma_0.
    """
    base = 1.0 if cfg.kernel.units == "domain" else 1.0 / grid.domain_scale
    sig = [s * base for s in cfg.kernel.sigmas]
    if cfg.kernel.min_voxels <= 0:
        return tuple(sig)
    map_shape = scale_shapes(grid.shape, cfg)[-1][1]
    h = max((n - 1) * d / max(m - 1, 1) for n, m, d in zip(grid.shape, map_shape, grid.domain_spacing))
    floor, lo, hi = cfg.kernel.min_voxels * h, sig[0], sig[-1]
    if lo >= floor:
        return tuple(sig)
    if hi <= floor or len(sig) == 1:
        return tuple(s * floor / lo for s in sig)
    a = math.log(hi / floor) / math.log(hi / lo)
    return tuple(hi * (s / hi) ** a for s in sig)


@dataclasses.dataclass(frozen=True)
class _Masks:
    """The masks of a registration: as given (for the record) and checked on their image's grid."""

    fixed_given: MaskLike | None = None
    moving_given: MaskLike | None = None
    fixed: Image | None = None
    moving: Image | None = None

    @classmethod
    def read(cls, fixed_mask: MaskLike | None, moving_mask: MaskLike | None, fixed_grid: Grid,
             moving_grid: Grid) -> "_Masks":
        return cls(fixed_mask, moving_mask,
                   None if fixed_mask is None else mask_on_grid(fixed_mask, fixed_grid, "fixed mask", "fixed image"),
                   None if moving_mask is None else mask_on_grid(moving_mask, moving_grid, "moving mask", "moving image"))

    def record(self) -> dict:
        out = {}
        for key, given, mask in (("fixed_mask", self.fixed_given, self.fixed), ("moving_mask", self.moving_given,
                                                                               self.moving)):
            out[key] = None if mask is None else {**_describe(given), **describe_mask(mask)}
        return out


def _register_checked(fixed, moving, region_labels, affine, cfg, fixed_img, moving_img, regions, given_affine,
                      dev, progress, t0, masks: "_Masks", initial: InitialConditions | None = None) -> RegistrationResult:
    """The work of :func:`register` once its inputs are checked."""
    grid = fixed_img.grid
    notes: list[str] = []
    if cfg.normalize_intensity:  # the percentiles of what the masks keep (bone or scalp outside must not set them)
        fixed_n, note_f = normalize_in_mask(fixed_img, masks.fixed, "fixed image")
        moving_n, note_m = normalize_in_mask(moving_img, masks.moving, "moving image")
        notes += [n for n in (note_f, note_m) if n]
    else:
        fixed_n, moving_n = fixed_img, moving_img
    if given_affine is not None:
        transform = given_affine
    elif cfg.affine.enabled:
        tracker = progress if isinstance(progress, RegistrationProgress) else None  # a plain callback: deformable only
        estimate = affine_register(fixed_img, moving_img, cfg.affine, device=dev, progress=tracker,
                                   fixed_mask=masks.fixed, moving_mask=masks.moving)
        transform = estimate.transform
        notes += list(estimate.warnings)
    else:
        transform = AffineTransform.identity(fixed_img.ndim)
    t_affine = time.perf_counter()
    target = fixed_n.batch().to(dev, torch.float32)
    to_moving = transform.moving_voxels(grid, moving_n.grid, dtype=torch.float32, device=dev)
    notes += _check_overlap(to_moving, moving_n.grid, aligned=given_affine is None and cfg.affine.enabled)
    source = sample_voxel(moving_n.batch().to(dev, torch.float32), to_moving, mode="linear", padding="zeros")
    target_mask = None if masks.fixed is None else masks.fixed.batch().to(dev, torch.float32)
    source_mask = None
    if masks.moving is not None:  # the moving mask on the fixed grid, aligned as the source is
        source_mask = sample_voxel(masks.moving.batch().to(dev, torch.float32), to_moving, mode="linear",
                                   padding="zeros")
    joint = (torch.ones_like(target[:, :1]) if target_mask is None else target_mask) * \
        (1.0 if source_mask is None else source_mask)
    if not bool((joint > 0).any()):
        where = "after the affine alignment" if given_affine is not None or cfg.affine.enabled else "without an affine"
        raise ValueError(f"{where} the masks leave no fixed voxel to compare: the fixed mask and the moving mask "
                         "mapped onto the fixed grid do not overlap (check the masks and their headers)")
    h0_full = None
    sigma_scale = 1.0 if cfg.kernel.units == "domain" else 1.0 / grid.domain_scale
    used = kernel_sigmas(cfg, grid)  # the model's sigmas: kernel.sigmas * sigma_scale = used
    run_cfg = cfg.replace(kernel=cfg.kernel.replace(sigmas=tuple(s / sigma_scale for s in used)))
    if regions is not None:
        to_regions = transform.moving_voxels(grid, regions.grid, dtype=torch.float64, device=dev)
        on_fixed = sample_voxel(regions.batch().to(dev, torch.float64), to_regions, mode="nearest", padding="zeros")
        h0_full = preweights_from_regions(on_fixed[0, 0].round().long(), cfg.regional.region_weights).to(dev)
        h0_full = smooth_region_preweights(h0_full, grid.domain_spacing, cfg.regional.region_smoothing_sigma * sigma_scale)
    t_prep = time.perf_counter()

    torch.manual_seed(cfg.seed)
    log.info("registering %s -> %s with %s on %s", moving_img.grid, fixed_img.grid, cfg.model, dev)
    out = optimize(source, target, grid.domain_spacing, run_cfg, h0_fixed=h0_full, sigma_scale=sigma_scale,
                   progress=progress, target_mask=target_mask, source_mask=source_mask, initial=initial)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t_opt = time.perf_counter()
    phi = resize_field(out.phi, grid.shape).cpu()
    map_grid = grid.resized(tuple(out.m0.shape[2:]))
    return RegistrationResult(
        fixed=fixed_img, moving=moving_img, config=cfg, phi=phi, map_grid=map_grid, map_phi=out.phi.cpu(),
        m0=out.m0.cpu(), h0=None if out.h0 is None else out.h0.cpu(), model=out.model, history=out.history,
        affine=transform,
        timings={"affine": t_affine - t0, "preprocess": t_prep - t_affine, "optimize": t_opt - t_prep,
                 "total": time.perf_counter() - t0},
        device=device_description(dev),
        inputs={"fixed": {**_describe(fixed), "grid": _grid_record(fixed_img.grid)},
                "moving": {**_describe(moving), "grid": _grid_record(moving_img.grid)},
                "region_labels": _describe(region_labels) if region_labels is not None else None,
                "affine": _describe(affine) if affine is not None else None, **masks.record(),
                **({} if initial is None else {"initial": _initial_record(initial)})},
        warnings=notes + list(out.warnings),
        evaluations=out.evaluations, step_difference=out.step_difference,
        shot_steps=out.shot_steps, shot_cfl=out.shot_cfl, scales=out.scales,
    )
