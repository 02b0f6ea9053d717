"""Evaluate a saved registration from its ITK displacement field: the one implementation behind
``rdmm evaluate`` and the ``Evaluate`` pipeline task."""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..spatial import Grid, Image, load_image, load_labels, resample_to_grid, same_grid, save_image
from ..transforms import DenseTransform
from .folds import folded_cells, jacobian_determinant_physical
from .labels import warp_labels
from .landmarks import read_points, target_registration_error
from .table import EvaluationResult, evaluation_record

__all__ = ["evaluate_displacement_field", "identity_labels"]


def identity_labels(moving_labels: Image, fixed_grid: Grid) -> Image | None:
    """The moving label map on the fixed grid with no transform: nearest-neighbour resampling
    through world space (the identity in mm), the reference for the Dice before registration.

    Returns None where the grids have no common world frame (2D grids in different planes).
    """
    try:
        return resample_to_grid(moving_labels, fixed_grid, mode="nearest")
    except ValueError:
        return None


def evaluate_displacement_field(
    displacement: os.PathLike | str,
    fixed_labels: os.PathLike | str | Image | None,
    moving_labels: os.PathLike | str | Image | None,
    *,
    subject_id: str,
    method: str,
    moving_image: os.PathLike | str | Grid | None = None,
    fixed_landmarks: os.PathLike | str | None = None,
    moving_landmarks: os.PathLike | str | None = None,
    landmark_convention: str = "RAS",
    label_warp: str = "nearest",
    seconds: float | None = None,
    warped_labels_path: os.PathLike | str | None = None,
    names: Mapping[str, str] | None = None,
) -> EvaluationResult:
    """Dice per label, folds of det J and (with both landmark files) TRE of a saved transform.

    The moving labels are warped through the ITK displacement field (fixed-to-moving, LPS, on the
    fixed grid) and compared with the fixed labels; det J is the full determinant in physical
    units (:func:`~.folds.jacobian_determinant_physical`).

    With ``warped_labels_path``, the warped moving label map (on the fixed grid) is also saved.
    ``moving_image`` (a path or its Grid) is the grid the transform maps into: the moving labels
    must lie on it (checked, as the fixed labels are checked against the field's grid); without
    labels (both None) it is required, and the record has folds (and TRE) but no Dice. With
    labels the record also has the Dice before registration (``dice_before``, see
    :func:`identity_labels`). The label maps are files or label Images (already read).
    ``names`` says how errors name them (keys ``fixed_labels``, ``moving_labels``; default
    "fixed labels", "moving labels"; the command line passes its flags).

    Raises:
        ValueError: one label map or landmark file without the other, no labels and no moving
            image, fixed labels off the field's grid, or moving labels off the moving image's grid.
    """
    if (fixed_landmarks is None) != (moving_landmarks is None):
        raise ValueError("give both fixed landmarks and moving landmarks, or neither")
    if (fixed_labels is None) != (moving_labels is None):
        raise ValueError("give both fixed labels and moving labels, or neither")
    if moving_labels is None and moving_image is None:
        raise ValueError("without label maps the moving image is needed (the grid the transform maps into)")
    fixed_lab = moving_lab = warped = before = None
    image_grid = None
    if moving_image is not None:
        image_grid = moving_image if isinstance(moving_image, Grid) else load_image(os.fspath(moving_image)).grid
    said = {"fixed_labels": "fixed labels", "moving_labels": "moving labels", **(names or {})}
    for key, given in (("fixed_labels", fixed_labels), ("moving_labels", moving_labels)):
        if given is not None and not isinstance(given, Image):
            said[key] = f"{said[key]} {os.fspath(given)}"
    if moving_labels is not None:
        fixed_lab = fixed_labels if isinstance(fixed_labels, Image) else load_labels(os.fspath(fixed_labels))
        moving_lab = moving_labels if isinstance(moving_labels, Image) else load_labels(os.fspath(moving_labels))
        if image_grid is not None and not same_grid(moving_lab.grid, image_grid):
            raise ValueError(f"{said['moving_labels']}: grid {moving_lab.grid} is not the moving image's "
                             f"grid {image_grid}")
        moving_grid = moving_lab.grid
    else:
        moving_grid = image_grid
    transform = DenseTransform.from_displacement_field(os.fspath(displacement), moving_grid)
    if fixed_lab is not None:
        if transform.fixed_grid.shape != fixed_lab.grid.shape:
            raise ValueError(f"{said['fixed_labels']}: grid {fixed_lab.grid} is not the displacement "
                             f"field's (fixed) grid {transform.fixed_grid}")
        warped = warp_labels(moving_lab, transform.moving_voxels, transform.fixed_grid, method=label_warp)
        if warped_labels_path is not None:
            save_image(warped, warped_labels_path)
        before = identity_labels(moving_lab, transform.fixed_grid)
    det = jacobian_determinant_physical(transform.moving_voxels.double(), transform.fixed_grid,
                                        transform.moving_grid)
    tre = None
    if fixed_landmarks is not None:
        tre = target_registration_error(
            read_points(os.fspath(fixed_landmarks), landmark_convention),
            read_points(os.fspath(moving_landmarks), landmark_convention),
            transform.moving_voxels, transform.fixed_grid, transform.moving_grid)
    cells = folded_cells(transform.moving_voxels.double(), transform.fixed_grid, transform.moving_grid)
    return evaluation_record(subject_id, method, warped_labels=warped, fixed_labels=fixed_lab,
                             moving_labels=moving_lab, before_labels=before, det=det, cells=cells, tre=tre,
                             seconds=seconds)
