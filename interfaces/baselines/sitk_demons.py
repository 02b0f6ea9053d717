"""SimpleITK demons (diffeomorphic or fast symmetric forces), multi-resolution, written in our output
convention.

Pipeline (all in ITK physical space, LPS mm, on the fixed image's grid):

1. initial alignment A of the moving image: centre of mass ("moments", default), image centres
   ("geometry"), a quick affine registration (Mattes mutual information, initialised by moments;
   "affine") or none; the moving image is resampled onto the fixed grid through A;
2. optional histogram matching of that image to the fixed image (demons assume equal intensities);
3. demons at ``levels`` resolutions (shrink factors 2^(levels-1), ..., 1, Gaussian smoothing before
   shrinking), each level starting from the previous level's field resampled to its grid;
   the result is a displacement field D with ``warped(p) = moving_A(p + D(p))``;
4. the full transform ``T(p) = A(p + D(p))`` (SimpleITK composite [A, D]) is sampled on the fixed
   grid by ``TransformToDisplacementField`` (u = T(p) - p, LPS) and written in our convention;
   the warped image is the original moving image resampled through T (linear).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence

import numpy as np

from .common import (
    BaselineOutput,
    check_inputs,
    check_threads,
    require_module,
    versions_header,
    work_directory,
    write_field_lps,
    write_log,
    write_warped,
)

__all__ = ["INITIALISATIONS", "VARIANTS", "run_sitk_demons"]

logger = logging.getLogger(__name__)

VARIANTS = {"diffeomorphic": "sitk-demons-diffeomorphic", "fss": "sitk-demons-fss"}
INITIALISATIONS = ("moments", "geometry", "affine", "none")

# a level's image is not shrunk below this many voxels per axis
_MIN_LEVEL_SIZE = 8


def _to_numpy(sitk, image) -> np.ndarray:
    """SimpleITK image -> array indexed like the NIfTI file (x first; vector components last)."""
    arr = sitk.GetArrayFromImage(image)
    d = image.GetDimension()
    axes = tuple(range(d - 1, -1, -1))
    if image.GetNumberOfComponentsPerPixel() > 1:
        axes = axes + (d,)
    return np.transpose(arr, axes)


def _initial_transform(sitk, fixed, moving, initial: str, log: list[str]):
    d = fixed.GetDimension()
    if initial == "none":
        return sitk.TranslationTransform(d)
    rigid = sitk.Euler3DTransform() if d == 3 else sitk.Euler2DTransform()
    mode = (sitk.CenteredTransformInitializerFilter.GEOMETRY if initial == "geometry"
            else sitk.CenteredTransformInitializerFilter.MOMENTS)
    tx = sitk.CenteredTransformInitializer(fixed, moving, rigid, mode)
    if initial != "affine":
        log.append(f"initial {initial} alignment: {tx.GetParameters()}")
        return tx
    affine = sitk.AffineTransform(d)
    affine.SetCenter(tx.GetCenter())
    affine.SetTranslation(tx.GetTranslation())
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.25, seed=1)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-4, numberOfIterations=200, gradientMagnitudeTolerance=1e-6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2, 1, 0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    reg.SetInitialTransform(affine, inPlace=True)
    reg.Execute(fixed, moving)
    log.append(f"initial affine (Mattes MI): metric {reg.GetMetricValue():.5g}, "
               f"{reg.GetOptimizerIteration()} iterations, stop: "
               f"{reg.GetOptimizerStopConditionDescription()}")
    log.append(f"affine parameters: {affine.GetParameters()}, centre {affine.GetCenter()}")
    return affine


def _level_images(sitk, image, factor: int):
    """``image`` smoothed (sigma = factor/2 voxels, in mm per axis) and shrunk by ``factor``
    (less along axes too short for it)."""
    if factor == 1:
        return image
    size = image.GetSize()
    shrink = [max(1, min(factor, n // _MIN_LEVEL_SIZE)) for n in size]
    sigma = [0.5 * s * sp for s, sp in zip(shrink, image.GetSpacing())]
    smoothed = sitk.SmoothingRecursiveGaussian(image, sigma) if max(shrink) > 1 else image
    return sitk.Shrink(smoothed, shrink)


def _demons_filter(sitk, variant: str, iterations: int, smoothing_sigma: float):
    if variant == "diffeomorphic":
        filt = sitk.DiffeomorphicDemonsRegistrationFilter()
    else:
        filt = sitk.FastSymmetricForcesDemonsRegistrationFilter()
    filt.SetNumberOfIterations(int(iterations))
    filt.SetSmoothDisplacementField(True)
    filt.SetStandardDeviations(float(smoothing_sigma))
    return filt


def run_sitk_demons(
    fixed: str | os.PathLike,
    moving: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    prefix: str = "",
    threads: int | None = None,
    variant: str = "diffeomorphic",
    levels: int = 3,
    iterations: int | Sequence[int] = 50,
    smoothing_sigma: float = 1.5,
    initial: str = "moments",
    histogram_matching: bool = True,
) -> BaselineOutput:
    """Register ``moving`` to ``fixed`` with SimpleITK demons.

    Args:
        fixed: fixed (target) NIfTI image, 2D (X, Y) or 3D.
        moving: moving (source) NIfTI image of the same dimension.
        out_dir: output directory (created if needed); outputs
            ``{prefix}sitk-demons-{variant}_warped.nii.gz``, ``..._displacement.nii.gz``, ``.log``.
        prefix: per-pair file-name prefix.
        threads: SimpleITK's global default thread count during the run (restored afterwards);
            None: SimpleITK's default.
        variant: "diffeomorphic" (DiffeomorphicDemonsRegistrationFilter) or "fss"
            (FastSymmetricForcesDemonsRegistrationFilter).
        levels: number of resolution levels (shrink factors 2^(levels-1), ..., 1).
        iterations: demons iterations per level (one number for all, or one per level, coarse
            to fine).
        smoothing_sigma: standard deviation (voxels of the level) of the Gaussian smoothing of
            the displacement field after each iteration.
        initial: initial alignment: "moments" (centre of mass), "geometry", "affine" or "none".
        histogram_matching: match the moving intensities to the fixed ones before the demons.

    Returns:
        :class:`BaselineOutput` (method "sitk-demons-diffeomorphic" or "sitk-demons-fss").

    Raises:
        RuntimeError: SimpleITK is not importable (before any work), or a filter failed.
        FileNotFoundError / ValueError: bad inputs or parameters.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    method = VARIANTS[variant]
    sitk = require_module("SimpleITK", f"SimpleITK demons ({method})")
    threads = check_threads(threads)
    if initial not in INITIALISATIONS:
        raise ValueError(f"initial must be one of {INITIALISATIONS}, got {initial!r}")
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 1:
        raise ValueError(f"levels must be a positive integer, got {levels!r}")
    its = [int(iterations)] * levels if np.isscalar(iterations) else [int(i) for i in iterations]
    if len(its) != levels or min(its) < 0:
        raise ValueError(f"iterations {iterations!r} must be one count >= 0 or {levels} of them")
    if not smoothing_sigma > 0:
        raise ValueError(f"smoothing_sigma must be positive, got {smoothing_sigma!r}")
    f_path, m_path, f_grid, m_grid, paths = check_inputs(fixed, moving, out_dir, prefix, method)
    version = f"SimpleITK {sitk.Version_VersionString()}"
    params = {"variant": variant, "levels": levels, "iterations": its,
              "smoothing_sigma": smoothing_sigma, "initial": initial,
              "histogram_matching": histogram_matching, "threads": threads}
    log: list[str] = []
    out_dir = paths["warped"].parent
    old_threads = sitk.ProcessObject_GetGlobalDefaultNumberOfThreads()
    start = time.perf_counter()
    try:
        with work_directory(out_dir, f"{prefix}{method}"):
            if threads is not None:
                sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(threads)
            try:
                warped, u = _register(sitk, f_path, m_path, f_grid, variant, its,
                                      smoothing_sigma, initial, histogram_matching, log)
            except RuntimeError as exc:  # SimpleITK raises RuntimeError with ITK's message
                raise RuntimeError(f"{method} failed: {exc}") from exc
            write_field_lps(paths["displacement"], f_grid, m_grid, u)
            write_warped(paths["warped"], f_grid, warped)
    finally:
        sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(old_threads)
        seconds = time.perf_counter() - start
        log.append(f"[{method} finished in {seconds:.2f} s]")
        log_path = write_log(paths["log"], versions_header(method, f_path, m_path, version, params),
                             log)
    return BaselineOutput(method, paths["warped"], paths["displacement"], seconds, version, log_path)


def _register(sitk, f_path, m_path, f_grid, variant, its, smoothing_sigma, initial,
              histogram_matching, log):
    """The registration proper; returns (warped array, u (*S, d) LPS mm) on the fixed grid."""
    fixed = sitk.ReadImage(str(f_path), sitk.sitkFloat32)
    moving = sitk.ReadImage(str(m_path), sitk.sitkFloat32)
    d = fixed.GetDimension()
    if d != f_grid.ndim or moving.GetDimension() != d:
        raise ValueError(f"SimpleITK reads {f_path} / {m_path} as {d}D / "
                         f"{moving.GetDimension()}D images, we read {f_grid.ndim}D")
    if tuple(fixed.GetSize()) != f_grid.shape:
        raise ValueError(f"SimpleITK reads {f_path} with size {fixed.GetSize()}, "
                         f"we read {f_grid.shape}")
    init = _initial_transform(sitk, fixed, moving, initial, log)
    moving_a = sitk.Resample(moving, fixed, init, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    if histogram_matching:
        moving_a = sitk.HistogramMatching(moving_a, fixed, numberOfHistogramLevels=256,
                                          numberOfMatchPoints=15, thresholdAtMeanIntensity=True)
    field = None
    levels = len(its)
    for level, n_it in enumerate(its):
        factor = 2 ** (levels - 1 - level)
        f_l = _level_images(sitk, fixed, factor)
        m_l = _level_images(sitk, moving_a, factor)
        if field is None:
            init_field = sitk.Image(f_l.GetSize(), sitk.sitkVectorFloat64, d)
            init_field.CopyInformation(f_l)
        else:
            init_field = sitk.Resample(field, f_l, sitk.Transform(d, sitk.sitkIdentity),
                                       sitk.sitkLinear, 0.0, sitk.sitkVectorFloat64)
        if n_it == 0:
            field = init_field
            continue
        filt = _demons_filter(sitk, variant, n_it, smoothing_sigma)
        field = filt.Execute(f_l, m_l, init_field)
        log.append(f"level {level + 1}/{levels}: size {f_l.GetSize()}, {filt.GetElapsedIterations()}"
                   f" iterations, metric {filt.GetMetric():.5g}, RMS change {filt.GetRMSChange():.4g}")
    if tuple(field.GetSize()) != tuple(fixed.GetSize()):  # levels shrank even at factor 1: never
        raise RuntimeError(f"demons field size {field.GetSize()} != fixed size {fixed.GetSize()}")
    dfield = sitk.DisplacementFieldTransform(sitk.Image(field))  # takes over its copy
    full = sitk.CompositeTransform(d)
    full.AddTransform(init)
    full.AddTransform(dfield)  # applied first: T(p) = A(p + D(p))
    u_img = sitk.TransformToDisplacementField(
        full, sitk.sitkVectorFloat64, fixed.GetSize(), fixed.GetOrigin(), fixed.GetSpacing(),
        fixed.GetDirection())
    warped = sitk.Resample(moving, fixed, full, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return _to_numpy(sitk, warped), _to_numpy(sitk, u_img)
