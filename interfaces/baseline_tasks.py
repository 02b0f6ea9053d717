"""Baseline registrations as tasks: AntsSyN, SimpleITKDemons and NiftyRegF3D.

Thin tasks around the runners of :mod:`rdmm_pipelines.interfaces.baselines`; their outputs have
the shape of :class:`~.register.RdmmRegistration`'s (warped, displacement, seconds, device_used,
status, message), so :class:`~.evaluate.Evaluate`, :class:`~.apply.ApplyTransform` and
:class:`~.report.VisualReport` treat every method alike. :func:`run_baseline` is the same stage
as a plain function.

A tool that is not installed is reported when the task *runs*, as ``status="failed"`` with the
reason and what to install: a workflow may be built on a machine without the tool (a login
node) and run where it is installed.
"""

import math
import os
import typing as ty
from pathlib import Path

from fileformats.generic import File
from fileformats.medimage import NiftiGz

from ._pydra import Outputs, Task, arg, define
from .common import (
    NiftiImage,
    check_nifti,
    check_retry,
    check_subject_id,
    check_threads,
    guarded,
    output_path,
    thread_limits,
)

__all__ = ["AntsSyN", "NiftyRegF3D", "SimpleITKDemons", "run_baseline"]


def run_baseline(
    method: str,
    fixed: os.PathLike | str,
    moving: os.PathLike | str,
    *,
    subject_id: str,
    threads: int = 0,
    out_dir: os.PathLike | str | None = None,
    **options: ty.Any,
) -> dict[str, ty.Any]:
    """Run baseline ``method`` (a key of ``baselines.BASELINES``) on one pair; outputs
    ``{subject_id}_{method}_warped.nii.gz``, ``..._displacement.nii.gz`` and ``.log`` in ``out_dir``
    (default: the working directory).

    Raises:
        RuntimeError: the method's tool is not installed (the message says what to install).
    """
    from .baselines import BASELINES, available

    ok, reason = available(method)
    if not ok:
        raise RuntimeError(f"{method} cannot run on this machine: {reason}")
    folder = Path(out_dir).absolute() if out_dir is not None else Path.cwd()
    with thread_limits(threads) as n:
        result = BASELINES[method](os.fspath(fixed), os.fspath(moving), folder, prefix=f"{subject_id}_",
                                   threads=n, **options)
    return {
        "warped": result.warped,
        "displacement": result.displacement,
        "log": result.log,
        "method": result.method,
        "tool_version": result.tool_version,
        "seconds": float(result.seconds),
        "device_used": "cpu",
    }


def _failed(method: str) -> dict[str, ty.Any]:
    return {"warped": None, "displacement": None, "log": None, "method": method, "tool_version": "",
            "seconds": math.nan, "device_used": "cpu"}


def _guarded_run(method: str, fixed, moving, subject_id: str, threads: int, **options: ty.Any):
    outputs = guarded(
        lambda: run_baseline(method, fixed, moving, subject_id=subject_id, threads=threads, **options),
        _failed(method),
        what=f"{subject_id}: {method}",
        error_file=output_path(subject_id, method, "error", ".txt"))
    return {**outputs, "subject_id": subject_id}


def _run_ants_syn(fixed, moving, subject_id, type_of_transform, seed, threads, retry=0, fixed_mask=None,
                  moving_mask=None, metric=None):
    """The body of :class:`AntsSyN` (module level: worker processes import it)."""
    given = {"fixed_mask": fixed_mask, "moving_mask": moving_mask, "metric": metric}
    return _guarded_run("ants-syn", fixed, moving, subject_id, threads, type_of_transform=type_of_transform,
                        seed=seed, **{k: v for k, v in given.items() if v is not None})


def _run_sitk_demons(fixed, moving, subject_id, variant, levels, iterations, smoothing_sigma, threads, retry=0):
    """The body of :class:`SimpleITKDemons` (module level: worker processes import it)."""
    return _guarded_run(f"sitk-demons-{variant}", fixed, moving, subject_id, threads, levels=levels,
                        iterations=iterations, smoothing_sigma=smoothing_sigma)


def _run_niftyreg(fixed, moving, subject_id, aladin, f3d_args, aladin_args, threads, retry=0):
    """The body of :class:`NiftyRegF3D` (module level: worker processes import it)."""
    return _guarded_run("niftyreg-f3d", fixed, moving, subject_id, threads, aladin=aladin,
                        f3d_args=tuple(f3d_args), aladin_args=tuple(aladin_args))


class BaselineOutputs(Outputs):
    """
    Args:
        warped: the moving image warped onto the fixed grid, {subject_id}_{method}_warped.nii.gz.
        displacement: the full transform as an ITK/ANTs displacement field on the fixed grid.
        log: the tool's log.
        method: the method's name, for Evaluate's method input ("ants-syn", ...).
        tool_version: the tool and its version.
        seconds: registration wall time (NaN if failed).
        device_used: always "cpu".
        status: "ok" or "failed" (also when the tool is not installed).
        message: the error when failed ("" when ok).
        subject_id: the input subject_id (to chain per-pair tasks in a split workflow).
    """

    warped: NiftiGz | None
    displacement: NiftiGz | None
    log: File | None
    method: str
    tool_version: str
    seconds: float
    device_used: str
    status: str
    message: str
    subject_id: str


@define
class AntsSyN(Task["AntsSyN.Outputs"]):
    """ANTs SyN (after rigid and affine stages) through antspyx, as a baseline.

    Args:
        fixed: target image (NIfTI).
        moving: source image (NIfTI).
        subject_id: pair identifier used in the output names.
        type_of_transform: an ants.registration transform type ("SyN", "SyNRA", "Affine", ...).
        seed: ANTs' random seed (metric sampling); with one thread the result is reproducible.
        threads: ITK threads (effective for the first ANTs call of a process); 0 = all available.
        retry: attempt number; any other value gives the task another cache hash, so a failed
            registration is run again instead of its cached failure being re-used (the cohort
            workflow bumps it for pairs that failed).
        fixed_mask: ANTs metric mask of the fixed image (NIfTI, nonzero = inside), used in every
            stage (rigid, affine and SyN).
        moving_mask: ANTs metric mask of the moving image, the same way.
        metric: "mattes" (Mattes mutual information in every stage: a multi-modal pair) or "cc"
            (SyN with cross-correlation, radius 4, after Mattes MI linear stages); None:
            antspyx's defaults (Mattes MI in every stage with antspyx 0.6).
    """

    requires_gpu = False

    fixed: NiftiImage = arg(validator=check_nifti)
    moving: NiftiImage = arg(validator=check_nifti)
    subject_id: str = arg(validator=check_subject_id)
    type_of_transform: str = "SyN"
    seed: int = 1
    threads: int = arg(default=0, validator=check_threads)
    retry: int = arg(default=0, validator=check_retry)
    fixed_mask: NiftiImage | None = arg(default=None, validator=check_nifti)
    moving_mask: NiftiImage | None = arg(default=None, validator=check_nifti)
    metric: str | None = arg(default=None, allowed_values=["mattes", "cc"])

    class Outputs(BaselineOutputs):
        __doc__ = BaselineOutputs.__doc__

    function = staticmethod(_run_ants_syn)


@define
class SimpleITKDemons(Task["SimpleITKDemons.Outputs"]):
    """SimpleITK demons (diffeomorphic or fast symmetric forces), multi-resolution, as a baseline.

    Args:
        fixed: target image (NIfTI).
        moving: source image (NIfTI).
        subject_id: pair identifier used in the output names.
        variant: "diffeomorphic" or "fss" (fast symmetric forces).
        levels: resolution levels (shrink factors 2^(levels-1), ..., 1).
        iterations: demons iterations per level.
        smoothing_sigma: Gaussian smoothing (voxels) of the displacement field per iteration.
        threads: SimpleITK threads during the run; 0 = all available.
        retry: attempt number; any other value gives the task another cache hash, so a failed
            registration is run again instead of its cached failure being re-used (the cohort
            workflow bumps it for pairs that failed).
    """

    requires_gpu = False

    fixed: NiftiImage = arg(validator=check_nifti)
    moving: NiftiImage = arg(validator=check_nifti)
    subject_id: str = arg(validator=check_subject_id)
    variant: str = arg(default="fss", allowed_values=["diffeomorphic", "fss"])
    levels: int = 3
    iterations: int = 50
    smoothing_sigma: float = 1.5
    threads: int = arg(default=0, validator=check_threads)
    retry: int = arg(default=0, validator=check_retry)

    class Outputs(BaselineOutputs):
        __doc__ = BaselineOutputs.__doc__

    function = staticmethod(_run_sitk_demons)


@define
class NiftyRegF3D(Task["NiftyRegF3D.Outputs"]):
    """NiftyReg reg_f3d (free-form B-spline deformation), after reg_aladin, as a baseline.

    Args:
        fixed: target (reference) image (NIfTI).
        moving: source (floating) image (NIfTI).
        subject_id: pair identifier used in the output names.
        aladin: run reg_aladin first and start reg_f3d from its affine.
        f3d_args: extra reg_f3d arguments, e.g. ("-be", "0.005", "-maxit", "300").
        aladin_args: extra reg_aladin arguments, e.g. ("-rigOnly",).
        threads: OpenMP threads of the NiftyReg processes; 0 = all available.
        retry: attempt number; any other value gives the task another cache hash, so a failed
            registration is run again instead of its cached failure being re-used (the cohort
            workflow bumps it for pairs that failed).
    """

    requires_gpu = False

    fixed: NiftiImage = arg(validator=check_nifti)
    moving: NiftiImage = arg(validator=check_nifti)
    subject_id: str = arg(validator=check_subject_id)
    aladin: bool = True
    f3d_args: tuple[str, ...] = ()
    aladin_args: tuple[str, ...] = ()
    threads: int = arg(default=0, validator=check_threads)
    retry: int = arg(default=0, validator=check_retry)

    class Outputs(BaselineOutputs):
        __doc__ = BaselineOutputs.__doc__

    function = staticmethod(_run_niftyreg)
