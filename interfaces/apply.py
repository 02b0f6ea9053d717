"""ApplyTransform: warp an image or a label map with a displacement field.

A thin task around :meth:`rdmm_pipelines.transforms.DenseTransform.from_displacement_field`;
:func:`apply_displacement` is the same stage as a plain function.
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

__all__ = ["INTERPOLATIONS", "ApplyTransform", "apply_displacement"]

INTERPOLATIONS = ("linear", "nearest")


def apply_displacement(
    displacement: os.PathLike | str,
    image: os.PathLike | str,
    *,
    subject_id: str,
    labels: bool = False,
    interpolation: str = "linear",
    out_dir: os.PathLike | str | None = None,
) -> dict[str, ty.Any]:
    """Warp ``image`` (moving space, any grid) onto the field's (fixed) grid and write
    ``{subject_id}_{image stem}_warped.nii.gz`` into ``out_dir`` (default: the working directory).

    The field is an ITK/ANTs displacement field (ours or ANTs', e.g. the ``displacement`` output
    of :class:`~.register.RdmmRegistration` or a baseline); labels are read as integers and
    warped with nearest neighbour.
    """
    from rdmm_pipelines.spatial import load_image, load_labels, save_image
    from rdmm_pipelines.transforms import DenseTransform

    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r}; use one of {', '.join(INTERPOLATIONS)}")
    img = load_labels(os.fspath(image)) if labels else load_image(os.fspath(image))
    transform = DenseTransform.from_displacement_field(os.fspath(displacement), img.grid)
    warped = transform.apply(img, "nearest" if labels else interpolation)
    path = output_path(subject_id, "", f"{image_stem(image)}_warped", ".nii.gz", out_dir)
    return {"warped": save_image(warped, path)}


def _run_apply(displacement, image, subject_id, labels, interpolation):
    """The body of :class:`ApplyTransform` (module level: worker processes import it)."""
    return guarded(
        lambda: apply_displacement(displacement, image, subject_id=subject_id, labels=labels,
                                   interpolation=interpolation),
        {"warped": None},
        what=f"{subject_id}: ApplyTransform",
        error_file=output_path(subject_id, "", "apply_error", ".txt"))


@define
class ApplyTransform(Task["ApplyTransform.Outputs"]):
    """Warp an image or a label map from moving space onto the fixed grid with a displacement field.

    The field (ITK/ANTs convention, as :class:`RdmmRegistration` and the baselines write it) holds
    the full transform, affine included; the output lies on the field's grid. A failure gives
    ``status="failed"`` with the reason instead of raising.

    Args:
        displacement: ITK/ANTs displacement field (vector NIfTI, LPS mm) on the fixed grid.
        image: image or label map in the moving image's world space (any grid).
        subject_id: pair identifier used in the output name.
        labels: the image is a label map: read as integers, warped with nearest neighbour.
        interpolation: "linear" or "nearest" for intensity images.
    """

    requires_gpu = False

    displacement: NiftiImage = arg(validator=check_nifti)
    image: NiftiImage = arg(validator=check_nifti)
    subject_id: str = arg(validator=check_subject_id)
    labels: bool = False
    interpolation: str = arg(default="linear", allowed_values=list(INTERPOLATIONS))

    class Outputs(Outputs):
        """
        Args:
            warped: {subject_id}_{image stem}_warped.nii.gz on the fixed grid.
            status: "ok" or "failed".
            message: the error when failed ("" when ok).
        """

        warped: NiftiGz | None
        status: str
        message: str

    function = staticmethod(_run_apply)
