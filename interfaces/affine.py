"""AffineRegistration: the affine pre-registration of a pair, as an ITK transform and a warped image.

A thin task around :func:`rdmm_pipelines.affine.affine_register`; :func:`affine_pair` is the same
stage as a plain function.
"""

import json
import math
import os
import typing as ty
from pathlib import Path

from fileformats.application import Json
from fileformats.medimage import NiftiGz
from fileformats.text import TextFile

from ._pydra import Outputs, Task, arg, define
from .common import (
    NiftiImage,
    check_device,
    check_nifti,
    check_subject_id,
    check_threads,
    guarded,
    output_path,
    task_device,
    thread_limits,
)

__all__ = ["AffineRegistration", "affine_pair", "read_affine_config"]


def read_affine_config(path: os.PathLike | str | None):
    """The :class:`~rdmm_pipelines.affine.AffineConfig` of a JSON file: an ``AffineConfig`` dict,
    or a whole ``RegistrationConfig`` dict (its ``affine`` section). None gives the defaults."""
    from rdmm_pipelines.affine import AffineConfig
    from rdmm_pipelines.config import RegistrationConfig

    if path is None:
        return AffineConfig()
    p = Path(os.fspath(path))
    try:
        data = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"config_json: {p} is not a readable JSON file ({exc})") from None
    try:
        if isinstance(data, dict) and isinstance(data.get("affine"), dict):
            return RegistrationConfig.from_dict(data).affine
        return AffineConfig.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"config_json: {p} is not an affine or registration configuration: {exc}") from None


def check_affine_config(_instance: ty.Any, attribute: ty.Any, value: ty.Any) -> None:
    """attrs validator: refuse a malformed affine configuration when the task is built."""
    if isinstance(value, os.PathLike):
        read_affine_config(value)


def affine_pair(
    fixed: os.PathLike | str,
    moving: os.PathLike | str,
    *,
    subject_id: str,
    config_json: os.PathLike | str | None = None,
    device: str = "auto",
    threads: int = 0,
    out_dir: os.PathLike | str | None = None,
    fixed_mask: os.PathLike | str | None = None,
    moving_mask: os.PathLike | str | None = None,
) -> dict[str, ty.Any]:
    """Estimate the fixed -> moving affine and write, into ``out_dir`` (default: the working
    directory), ``{subject_id}_affine_itk.txt`` (ITK text transform, LPS: ANTs/ITK apply it as we
    do), ``{subject_id}_affine_warped.nii.gz`` (the moving image resampled onto the fixed grid)
    and ``{subject_id}_affine_record.json`` (matrix, losses, iterations, warnings).

    ``fixed_mask``, ``moving_mask``: NIfTI masks (nonzero = inside, any grid in their image's
    world space) restricting the similarity to their regions, as
    :func:`rdmm_pipelines.register`'s affine stage uses them; the record names them."""
    from rdmm_pipelines.affine import affine_register
    from rdmm_pipelines.masks import mask_on_grid
    from rdmm_pipelines.provenance import write_json_atomic
    from rdmm_pipelines.spatial import load_image, save_image
    from rdmm_pipelines.transforms import DenseTransform

    config = read_affine_config(config_json)
    with thread_limits(threads):
        dev = task_device(device)
        f, m = load_image(os.fspath(fixed)), load_image(os.fspath(moving))
        masks = {f"{which}_mask": mask_on_grid(os.fspath(path), img.grid, f"{which} mask", f"{which} image")
                 for which, path, img in (("fixed", fixed_mask, f), ("moving", moving_mask, m)) if path is not None}
        estimate = affine_register(f, m, config, device=dev, **masks)
        transform = estimate.transform
        warped = DenseTransform(f.grid, m.grid, transform.moving_voxels(f.grid, m.grid)).apply(m)
    record = {"subject_id": subject_id, "device": str(dev), "config": config.to_dict(),
              "fixed_mask": None if fixed_mask is None else str(Path(os.fspath(fixed_mask)).absolute()),
              "moving_mask": None if moving_mask is None else str(Path(os.fspath(moving_mask)).absolute()),
              **estimate.to_dict()}
    return {
        "affine": transform.to_itk_txt(output_path(subject_id, "affine", "itk", ".txt", out_dir)),
        "warped": save_image(warped, output_path(subject_id, "affine", "warped", ".nii.gz", out_dir)),
        "record": write_json_atomic(output_path(subject_id, "affine", "record", ".json", out_dir), record),
        "device_used": str(dev),
        "seconds": float(estimate.seconds),
    }


def _run_affine(fixed, moving, subject_id, config_json, device, threads, fixed_mask=None, moving_mask=None):
    """The body of :class:`AffineRegistration` (module level: worker processes import it)."""
    return guarded(
        lambda: affine_pair(fixed, moving, subject_id=subject_id, config_json=config_json,
                            device=device, threads=threads, fixed_mask=fixed_mask, moving_mask=moving_mask),
        {"affine": None, "warped": None, "record": None, "device_used": "", "seconds": math.nan},
        what=f"{subject_id}: AffineRegistration",
        error_file=output_path(subject_id, "affine", "error", ".txt"))


@define
class AffineRegistration(Task["AffineRegistration.Outputs"]):
    """Affine pre-registration of a moving image to a fixed image (multi-scale L-BFGS).

    Calls :func:`rdmm_pipelines.affine.affine_register`. The transform maps fixed world points to
    moving world points and is written as an ITK text transform (pass it as ``affine`` to
    :class:`RdmmRegistration`, or to ANTs). A pair that cannot be registered gives
    ``status="failed"`` with the reason instead of raising.

    Args:
        fixed: target image (NIfTI .nii or .nii.gz).
        moving: source image (NIfTI), any grid in the same world space.
        subject_id: pair identifier used in the output names.
        config_json: an AffineConfig as JSON, or a whole RegistrationConfig JSON (its "affine"
            section); default: AffineConfig(). Refused when the task is built if malformed. A
            configuration with "enabled": false gives the identity.
        device: "auto", "cpu", "cuda" or "cuda:N", resolved when the task runs.
        threads: CPU threads while the task runs; 0 = all CPUs available to it.
        fixed_mask: mask of the fixed image (NIfTI, nonzero = inside; any grid in its world
            space): the similarity is measured only inside it. A mask the estimation refuses
            (empty, another dimension, outside the image) fails the pair with the reason.
        moving_mask: mask of the moving image (NIfTI, nonzero = inside), the same way.
    """

    requires_gpu = False

    fixed: NiftiImage = arg(validator=check_nifti)
    moving: NiftiImage = arg(validator=check_nifti)
    subject_id: str = arg(validator=check_subject_id)
    config_json: Json | None = arg(default=None, validator=check_affine_config)
    device: str = arg(default="auto", validator=check_device)
    threads: int = arg(default=0, validator=check_threads)
    fixed_mask: NiftiImage | None = arg(default=None, validator=check_nifti)
    moving_mask: NiftiImage | None = arg(default=None, validator=check_nifti)

    class Outputs(Outputs):
        """
        Args:
            affine: ITK text transform (fixed -> moving, LPS), {subject_id}_affine_itk.txt.
            warped: the moving image resampled onto the fixed grid through the affine.
            record: the estimate as JSON (matrix in RAS, losses, iterations, warnings).
            device_used: the device it ran on ("" if it failed first).
            seconds: wall time of the estimation (NaN if failed).
            status: "ok" or "failed".
            message: the error when failed ("" when ok).
        """

        affine: TextFile | None
        warped: NiftiGz | None
        record: Json | None
        device_used: str
        seconds: float
        status: str
        message: str

    function = staticmethod(_run_affine)
