"""Evaluate: Dice per label, folds of the Jacobian determinant and landmark TRE of one registration.

A thin task around :mod:`rdmm_pipelines.evaluation`; :func:`evaluate_pair` is the same stage as a
plain function. Every pair gets a record, a failed registration included (status "failed"), so
a cohort table can always be assembled from the ``csv_row`` files.
"""

import math
import os
import typing as ty

from fileformats.application import Json
from fileformats.generic import File
from fileformats.medimage import NiftiGz
from fileformats.text import Csv

from ._pydra import Outputs, Task, arg, define
from .common import (
    NiftiImage,
    check_nifti,
    check_subject_id,
    failure_message,
    guarded,
    output_path,
)

__all__ = ["Evaluate", "evaluate_pair", "measure"]

LANDMARK_CONVENTIONS = ("RAS", "LPS")


def measure(displacement, fixed_labels=None, moving_labels=None, **kwargs):
    """The :class:`~rdmm_pipelines.evaluation.EvaluationResult` of one registration given by its
    ITK displacement field (:func:`rdmm_pipelines.evaluation.evaluate_displacement_field`)."""
    from rdmm_pipelines.evaluation import evaluate_displacement_field

    return evaluate_displacement_field(displacement, fixed_labels, moving_labels, **kwargs)


def evaluate_pair(
    displacement: os.PathLike | str | None,
    fixed_labels: os.PathLike | str | None,
    moving_labels: os.PathLike | str | None,
    *,
    subject_id: str,
    method: str,
    moving: os.PathLike | str | None = None,
    fixed_landmarks: os.PathLike | str | None = None,
    moving_landmarks: os.PathLike | str | None = None,
    landmark_convention: str = "RAS",
    label_warp: str = "nearest",
    seconds: float | None = None,
    registration_status: str = "ok",
    registration_message: str = "",
    out_dir: os.PathLike | str | None = None,
) -> dict[str, ty.Any]:
    """Evaluate one registration and write ``{subject_id}_{method}_evaluation.json`` and a one-row
    ``{subject_id}_{method}_evaluation.csv`` into ``out_dir`` (default: the working directory).

    Without label maps (both None) the record has folds (and TRE) but no Dice; ``moving`` (the
    moving image) then gives the grid the transform maps into. A failed registration
    (``registration_status="failed"`` or no displacement) and a failure while measuring (labels on another grid, unreadable landmarks, ...) still give both files,
    with status "failed" and the reason in the message.

    Returns:
        ``{"evaluation", "csv_row", "warped_labels", "mean_dice", "status", "message"}``; status
        is the record's: "ok", "partial" (some metric undefined, e.g. an empty label map) or
        "failed"; ``warped_labels`` ({subject_id}_{method}_warped_labels.nii.gz, the moving labels
        on the fixed grid) is None when the labels could not be warped.
    """
    from rdmm_pipelines.evaluation import EvaluationResult, write_csv

    if seconds is not None and not math.isfinite(seconds):
        seconds = None
    warped_labels = output_path(subject_id, method, "warped_labels", ".nii.gz", out_dir)
    if registration_status == "failed" or displacement is None:
        reason = registration_message or "no displacement field"
        record = EvaluationResult(subject_id, method, seconds=seconds, status="failed",
                                  message=f"registration failed: {reason}")
    else:
        try:
            record = measure(displacement, fixed_labels, moving_labels, subject_id=subject_id,
                             method=method, moving_image=moving, fixed_landmarks=fixed_landmarks,
                             moving_landmarks=moving_landmarks, landmark_convention=landmark_convention,
                             label_warp=label_warp, seconds=seconds, warped_labels_path=warped_labels)
        except Exception as exc:  # recorded as a failed row: the cohort table still gets this pair
            record = EvaluationResult(subject_id, method, seconds=seconds, status="failed",
                                      message=f"evaluation failed: {failure_message(exc)}")
    return {
        "evaluation": record.to_json(output_path(subject_id, method, "evaluation", ".json", out_dir)),
        "csv_row": write_csv([record], output_path(subject_id, method, "evaluation", ".csv", out_dir)),
        "warped_labels": warped_labels if warped_labels.exists() else None,
        "mean_dice": record.mean_dice,
        "status": record.status,
        "message": record.message,
    }


def _run_evaluate(
    fixed_labels, moving_labels, subject_id, method, displacement, fixed_landmarks,
    moving_landmarks, landmark_convention, label_warp, seconds, registration_status,
    registration_message, moving=None
):
    """The body of :class:`Evaluate` (module level: worker processes import it)."""
    return guarded(
        lambda: evaluate_pair(
            displacement, fixed_labels, moving_labels, subject_id=subject_id, method=method, moving=moving,
            fixed_landmarks=fixed_landmarks, moving_landmarks=moving_landmarks,
            landmark_convention=landmark_convention, label_warp=label_warp, seconds=seconds,
            registration_status=registration_status, registration_message=registration_message),
        {"evaluation": None, "csv_row": None, "warped_labels": None, "mean_dice": math.nan},
        what=f"{subject_id}: Evaluate ({method})",
        error_file=output_path(subject_id, method, "evaluation_error", ".txt"))


@define
class Evaluate(Task["Evaluate.Outputs"]):
    """Evaluate a registration: Dice per label, folds (det J < 0) and landmark TRE.

    Reads the registration's ITK displacement field (ours or a baseline's), warps the moving
    labels onto the fixed grid and compares them with the fixed labels; det J is the full
    Jacobian determinant in physical units. Always writes a JSON record and a one-row CSV, also
    for a failed registration (pass its status and message) or a failed measurement, so that a
    cohort's table has one row per pair.

    Args:
        fixed_labels: label map of the fixed image, on the displacement field's grid; None (with
            ``moving_labels`` None): no Dice, the record has the folds (and TRE) only.
        moving_labels: label map of the moving image (the grid the transform maps into).
        moving: the moving image: the grid the transform maps into when there are no labels.
        subject_id: pair identifier (the record's pair_id and the output names).
        method: registration method named in the record ("rdmm", "lddmm", "ants-syn", ...).
        displacement: the registration's ITK/ANTs displacement field; None when it failed.
        fixed_landmarks: landmark file of the fixed image (text or CSV, world mm).
        moving_landmarks: the corresponding landmarks of the moving image.
        landmark_convention: "RAS" (nibabel world) or "LPS" (ITK/ANTs/elastix points).
        label_warp: "nearest" or "onehot" (linear interpolation of each label's indicator).
        seconds: the registration time, copied into the record.
        registration_status: the registration's status; "failed" records a failed pair.
        registration_message: the registration's error message, copied into the record.
    """

    requires_gpu = False

    subject_id: str = arg(validator=check_subject_id)
    method: str = arg()
    fixed_labels: NiftiImage | None = arg(default=None, validator=check_nifti)
    moving_labels: NiftiImage | None = arg(default=None, validator=check_nifti)
    moving: NiftiImage | None = arg(default=None, validator=check_nifti)
    displacement: NiftiImage | None = arg(default=None, validator=check_nifti)
    fixed_landmarks: File | None = None
    moving_landmarks: File | None = None
    landmark_convention: str = arg(default="RAS", allowed_values=list(LANDMARK_CONVENTIONS))
    label_warp: str = arg(default="nearest", allowed_values=["nearest", "onehot"])
    seconds: float | None = None
    registration_status: str = "ok"
    registration_message: str = ""

    class Outputs(Outputs):
        """
        Args:
            evaluation: the record as JSON, {subject_id}_{method}_evaluation.json.
            csv_row: the record as a one-row CSV with a header (concatenate for a cohort table).
            warped_labels: the moving labels warped onto the fixed grid (label_warp),
                {subject_id}_{method}_warped_labels.nii.gz; None when they could not be.
            mean_dice: mean Dice over the foreground labels (NaN if not measured).
            status: the record's status: "ok", "partial" or "failed".
            message: why a metric is missing or the pair failed ("" when ok).
        """

        evaluation: Json | None
        csv_row: Csv | None
        warped_labels: NiftiGz | None
        mean_dice: float
        status: str
        message: str

    function = staticmethod(_run_evaluate)
