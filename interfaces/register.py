"""RdmmRegistration: one fixed/moving pair registered with vSVF, LDDMM or RDMM.

A thin task around :func:`rdmm_pipelines.register`; :func:`register_pair` is the same stage as a
plain function (used by the nipype interface too).
"""

import logging
import math
import os
import shutil
import typing as ty
from pathlib import Path

from fileformats.application import Json
from fileformats.generic import Directory, File
from fileformats.medimage import NiftiGz

from rdmm_pipelines.config import MODELS
from rdmm_pipelines.presets import PRESETS
from rdmm_pipelines.similarity import SIMILARITIES

from ._pydra import Outputs, Task, arg, define
from .common import (
    NiftiImage,
    check_config_json,
    check_device,
    check_nifti,
    check_retry,
    check_subject_id,
    check_threads,
    guarded,
    output_path,
    read_config,
    task_device,
    thread_limits,
)

__all__ = ["REGISTRATION_FILES", "REGULARIZERS", "RdmmRegistration", "register_pair", "save_registration"]

log = logging.getLogger(__name__)

#: RDMM pre-weight sources
REGULARIZERS = ("predefined", "optimized")

#: output name -> (key in ``RegistrationResult.save``'s paths, file suffix)
REGISTRATION_FILES = {
    "warped": ("warped", "warped.nii.gz"),
    "displacement": ("displacement", "displacement.nii.gz"),
    "composite": ("composite", "composite.h5"),
    "jacobian": ("jacobian", "jacobian.nii.gz"),
    "record": ("record", "registration.json"),
}
#: RDMM only: its local scale sigma(x) at t = 0 and t = 1 (None for vSVF and LDDMM)
SIGMA_FILES = {
    "sigma_t0": ("sigma_t0", "sigma_t0.nii.gz"),
    "sigma_t1": ("sigma_t1", "sigma_t1.nii.gz"),
}


def _link(source: Path, target: Path) -> Path:
    """``target`` as a hard link to ``source`` (a copy where links are impossible)."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
    return target


def register_pair(
    fixed: os.PathLike | str,
    moving: os.PathLike | str,
    *,
    subject_id: str,
    model: str = "rdmm",
    regularizer: str | None = None,
    region_labels: os.PathLike | str | None = None,
    preset: str | None = None,
    config_json: os.PathLike | str | None = None,
    affine: os.PathLike | str | None = None,
    device: str = "auto",
    threads: int = 0,
    out_dir: os.PathLike | str | None = None,
    fixed_mask: os.PathLike | str | None = None,
    moving_mask: os.PathLike | str | None = None,
    similarity: str | None = None,
) -> dict[str, ty.Any]:
    """Register ``moving`` to ``fixed`` and write the results into ``out_dir`` (default: the
    working directory).

    ``fixed_mask`` and ``moving_mask`` (NIfTI, nonzero = inside, any grid in their image's world
    space) restrict the similarity and the affine stage to their regions (see
    :func:`rdmm_pipelines.register`); registration.json records them under ``inputs``.
    ``similarity`` replaces the configuration's similarity measure ("mi" also the affine
    stage's: :meth:`rdmm_pipelines.config.RegistrationConfig.with_similarity`).

    The library's complete result directory (``registration.json``, warped image, ITK
    displacement field and composite transform, det J, momentum, RDMM pre-weights and sigma maps)
    is ``{subject_id}_{model}/``; the main files are also linked beside it under per-subject names
    ``{subject_id}_{model}_warped.nii.gz`` etc. (:data:`REGISTRATION_FILES`).

    Returns:
        ``{"warped", "displacement", "composite", "jacobian", "record", "result_dir", "sigma_t0",
        "sigma_t1"}`` paths (the sigma maps None for vSVF and LDDMM) and
        ``device_used`` ("cpu", "cuda:0"), ``seconds`` (the library's total time).
    """
    from rdmm_pipelines import register

    config = read_config(Path(os.fspath(config_json))) if config_json is not None else None
    if similarity is not None:
        from rdmm_pipelines.registration import resolve_config

        config = resolve_config(model, config, preset or None, regularizer or None).with_similarity(similarity)
        preset = None
    with thread_limits(threads):
        dev = task_device(device)
        result = register(
            os.fspath(fixed), os.fspath(moving), model, config=config, preset=preset or None,
            regularizer=regularizer or None,
            region_labels=None if region_labels is None else os.fspath(region_labels),
            affine=None if affine is None else os.fspath(affine), device=dev,
            **_masks(fixed_mask, moving_mask))
        return save_registration(result, subject_id, model, dev, out_dir)


def _masks(fixed_mask: os.PathLike | str | None, moving_mask: os.PathLike | str | None) -> dict[str, str]:
    """The ``fixed_mask``/``moving_mask`` keywords of :func:`rdmm_pipelines.register` for the masks
    given (as paths); none for an absent one, so a registration without masks calls the library
    exactly as before."""
    given = {"fixed_mask": fixed_mask, "moving_mask": moving_mask}
    return {name: os.fspath(path) for name, path in given.items() if path is not None}


def save_registration(result, subject_id: str, method: str, device, out_dir: os.PathLike | str | None = None
                      ) -> dict[str, ty.Any]:
    """Save a :class:`~rdmm_pipelines.RegistrationResult` as a registration task's outputs: the
    complete result folder ``{subject_id}_{method}/`` and the main files linked beside it under
    per-subject names (:data:`REGISTRATION_FILES`, :data:`SIGMA_FILES`)."""
    folder = output_path(subject_id, method, "", "", out_dir)
    paths = result.save(folder, extra={"subject_id": subject_id})
    outputs: dict[str, ty.Any] = {"result_dir": folder}
    for name, (key, suffix) in {**REGISTRATION_FILES, **SIGMA_FILES}.items():
        what, ext = suffix.split(".", 1)
        outputs[name] = (_link(paths[key], output_path(subject_id, method, what, f".{ext}", out_dir))
                         if key in paths else None)
    outputs["device_used"] = str(device)
    outputs["seconds"] = float(result.timings.get("total", math.nan))
    return outputs


def _run_registration(
    fixed, moving, subject_id, model, regularizer, region_labels, preset, config_json, affine,
    device, threads, retry=0, fixed_mask=None, moving_mask=None, similarity=None
):
    """The body of :class:`RdmmRegistration` (module level: worker processes import it)."""
    return guarded_registration(
        lambda: register_pair(
            fixed, moving, subject_id=subject_id, model=model, regularizer=regularizer,
            region_labels=region_labels, preset=preset, config_json=config_json, affine=affine,
            device=device, threads=threads, fixed_mask=fixed_mask, moving_mask=moving_mask,
            similarity=similarity),
        subject_id, model, "RdmmRegistration")


def guarded_registration(run: ty.Callable[[], dict], subject_id: str, method: str, task: str) -> dict:
    """Outputs of a registration task: ``run()``'s, or, if it fails, the failure record (files
    None, the error in ``message`` and in ``<subject>_<method>_error.txt``); with the pair's id
    and method."""
    failed = {name: None for name in (*REGISTRATION_FILES, *SIGMA_FILES, "result_dir")}
    outputs = guarded(run, {**failed, "device_used": "", "seconds": math.nan},
                      what=f"{subject_id}: {task} ({method})",
                      error_file=output_path(subject_id, method, "error", ".txt"))
    return {**outputs, "subject_id": subject_id, "method": method}


@define
class RdmmRegistration(Task["RdmmRegistration.Outputs"]):
    """Register a moving (source) image to a fixed (target) image with vSVF, LDDMM or RDMM.

    Calls :func:`rdmm_pipelines.register` (affine pre-registration, then the shooting model) and
    writes the result on the fixed grid. A pair that cannot be registered gives
    ``status="failed"`` and the error in ``message`` (the files are then None) instead of
    raising. The device is resolved when the task runs; ``device_used`` says which it was.

    Args:
        fixed: target image I1 (NIfTI .nii or .nii.gz); every output lies on its grid.
        moving: source image I0 (NIfTI), any grid in the same world space.
        subject_id: pair identifier used in output file names (letters, digits, '.', '_', '-').
        model: "vsvf", "lddmm" or "rdmm"; overrides the configuration's model.
        regularizer: RDMM pre-weight source, "predefined" (needs region_labels) or "optimized";
            default: the configuration's.
        region_labels: label map of the moving image (its grid) for a predefined RDMM
            regulariser: region r gets the configuration's region_weights[r].
        preset: a preset name of rdmm_pipelines.PRESETS (default "default"); not with config_json.
        config_json: a RegistrationConfig as JSON (RegistrationConfig.to_dict()); unknown keys are
            refused when the task is built.
        affine: a given affine pre-registration (ITK .txt or ANTs .mat, fixed to moving) used
            instead of estimating one.
        fixed_mask: mask of the fixed image (NIfTI, nonzero = inside; any grid in the fixed
            image's world space): the similarity, and the affine stage, are measured only inside
            it. An empty mask, or one of another dimension or outside the image, fails the pair
            with the reason in ``message``. Recorded in registration.json.
        moving_mask: mask of the moving image (NIfTI, nonzero = inside), the same way: the
            similarity counts only fixed voxels whose point lies inside it after the transform.
        similarity: a similarity measure of rdmm_pipelines.similarity.SIMILARITIES replacing the
            configuration's (None: the configuration's); "mi" (mutual information, images of
            different contrasts) sets the affine stage's too.
        device: "auto" (a GPU if the machine running the task has one), "cpu", "cuda" or
            "cuda:N"; resolved when the task runs, so it does not enter the cache hash as a
            machine-specific value.
        threads: CPU threads for torch/OpenMP while the task runs; 0 = all CPUs available to it.
        retry: attempt number; any other value gives the task another cache hash, so a failed
            registration is run again instead of its cached failure being re-used (the cohort
            workflow bumps it for pairs that failed).
    """

    #: the scheduler should give this task a GPU when one is available (e.g. SLURM --gres=gpu:1)
    requires_gpu = True

    fixed: NiftiImage = arg(validator=check_nifti)
    moving: NiftiImage = arg(validator=check_nifti)
    subject_id: str = arg(validator=check_subject_id)
    model: str = arg(default="rdmm", allowed_values=list(MODELS))
    regularizer: str | None = arg(default=None, allowed_values=list(REGULARIZERS))
    region_labels: NiftiImage | None = arg(default=None, validator=check_nifti)
    preset: str | None = arg(default=None, allowed_values=sorted(PRESETS))
    config_json: Json | None = arg(default=None, validator=check_config_json)
    affine: File | None = None
    device: str = arg(default="auto", validator=check_device)
    threads: int = arg(default=0, validator=check_threads)
    retry: int = arg(default=0, validator=check_retry)
    fixed_mask: NiftiImage | None = arg(default=None, validator=check_nifti)
    moving_mask: NiftiImage | None = arg(default=None, validator=check_nifti)
    similarity: str | None = arg(default=None, allowed_values=list(SIMILARITIES))

    class Outputs(Outputs):
        """
        Args:
            warped: the moving image warped onto the fixed grid (original intensities).
            displacement: ITK/ANTs displacement field (LPS mm, vector NIfTI) of the full
                transform (affine and deformation), on the fixed grid.
            composite: ITK HDF5 composite transform (affine + displacement field).
            jacobian: det of the Jacobian of the transform (physical units) on the fixed grid.
            record: registration.json: configuration, versions, device, timings, energies, folds.
            result_dir: the library's complete result directory (momentum, RDMM sigma maps, ...).
            sigma_t0: RDMM's local scale sigma(x) in mm at t = 0, on the fixed grid (None
                for vSVF and LDDMM).
            sigma_t1: the same at t = 1, after the pre-weights moved with the deformation.
            device_used: the device the registration ran on ("cpu", "cuda:0"); "" if it failed first.
            seconds: registration wall time (NaN if it failed).
            status: "ok" or "failed".
            message: the error of a failed pair ("" when ok).
            subject_id: the input subject_id (to chain per-pair tasks in a split workflow).
            method: the model ("vsvf", "lddmm", "rdmm"), for Evaluate's method input.
        """

        warped: NiftiGz | None
        displacement: NiftiGz | None
        composite: File | None
        jacobian: NiftiGz | None
        record: Json | None
        result_dir: Directory | None
        sigma_t0: NiftiGz | None
        sigma_t1: NiftiGz | None
        device_used: str
        seconds: float
        status: str
        message: str
        subject_id: str
        method: str

    function = staticmethod(_run_registration)
