"""NormalizeIntensity: map an image's percentiles to [0, 1] (the paper's preprocessing).

A thin task around :func:`rdmm_pipelines.spatial.normalize_intensity`; :func:`normalize_image` is
the same stage as a plain function.
"""

import os
import typing as ty

from fileformats.medimage import NiftiGz

from ._pydra import Outputs, Task, arg, define
from .common import (
    NiftiImage,
    check_nifti,
    check_subject_id,
    guarded,
    image_stem,
    output_path,
)

__all__ = ["NormalizeIntensity", "normalize_image"]


def normalize_image(
    image: os.PathLike | str,
    *,
    subject_id: str,
    lower: float = 0.1,
    upper: float = 99.9,
    mask: os.PathLike | str | None = None,
    out_dir: os.PathLike | str | None = None,
) -> dict[str, ty.Any]:
    """Write ``{subject_id}_{image stem}_normalized.nii.gz`` into ``out_dir`` (default: the working
    directory): the ``lower`` and ``upper`` percentiles (over the voxels where ``mask`` is
    non-zero, if given) mapped to 0 and 1, then clamped. Returns ``{"normalized": path}``."""
    from rdmm_pipelines.spatial import load_image, normalize_intensity, save_image

    img = load_image(os.fspath(image))
    region = None if mask is None else load_image(os.fspath(mask))
    out = normalize_intensity(img, lower, upper, mask=region)
    path = output_path(subject_id, "", f"{image_stem(image)}_normalized", ".nii.gz", out_dir)
    return {"normalized": save_image(out, path)}


def _run_normalize(image, subject_id, lower, upper, mask):
    """The body of :class:`NormalizeIntensity` (module level: worker processes import it)."""
    return guarded(
        lambda: normalize_image(image, subject_id=subject_id, lower=lower, upper=upper, mask=mask),
        {"normalized": None},
        what=f"{subject_id}: NormalizeIntensity",
        error_file=output_path(subject_id, "", "normalize_error", ".txt"))


@define
class NormalizeIntensity(Task["NormalizeIntensity.Outputs"]):
    """Map an image's intensity percentiles to 0 and 1 and clamp (the paper's preprocessing).

    Calls :func:`rdmm_pipelines.spatial.normalize_intensity`. (:class:`RdmmRegistration`
    normalises by itself; this stage is for other tools and for inspection.) A constant image
    gives ``status="failed"`` with the reason instead of raising.

    Args:
        image: the image (NIfTI .nii or .nii.gz).
        subject_id: pair/subject identifier used in the output name.
        lower: percentile (%) mapped to 0.
        upper: percentile (%) mapped to 1.
        mask: optional image of the same grid; percentiles are taken where it is non-zero.
    """

    requires_gpu = False

    image: NiftiImage = arg(validator=check_nifti)
    subject_id: str = arg(validator=check_subject_id)
    lower: float = 0.1
    upper: float = 99.9
    mask: NiftiImage | None = arg(default=None, validator=check_nifti)

    class Outputs(Outputs):
        """
        Args:
            normalized: the normalised image, {subject_id}_{image stem}_normalized.nii.gz.
            status: "ok" or "failed".
            message: the error when failed ("" when ok).
        """

        normalized: NiftiGz | None
        status: str
        message: str

    function = staticmethod(_run_normalize)
