"""Evaluation of registrations: Dice per label, Jacobian determinant and folds (per voxel and per
grid cell), landmark TRE, label warping, and result tables (DESIGN.md section 1.6).

Imports only :mod:`rdmm_pipelines.core` and :mod:`rdmm_pipelines.spatial` (plus torch and numpy).
"""

from .folds import (
    FOLD_KEYS,
    diagonal_product_folds,
    fold_statistics,
    folded_cells,
    jacobian_determinant_physical,
)
from .labels import LABEL_WARP_METHODS, warp_labels
from .landmarks import (
    lps_to_ras,
    ras_to_lps,
    read_points,
    target_registration_error,
    transform_points,
)
from .overlap import check_label_sets, dice_per_label, label_values, mean_dice
from .saved import evaluate_displacement_field, identity_labels
from .table import STATUSES, EvaluationResult, evaluation_record, write_csv

__all__ = [
    "dice_per_label",
    "mean_dice",
    "check_label_sets",
    "label_values",
    "fold_statistics",
    "folded_cells",
    "diagonal_product_folds",
    "jacobian_determinant_physical",
    "FOLD_KEYS",
    "warp_labels",
    "LABEL_WARP_METHODS",
    "read_points",
    "lps_to_ras",
    "ras_to_lps",
    "transform_points",
    "target_registration_error",
    "EvaluationResult",
    "evaluation_record",
    "write_csv",
    "evaluate_displacement_field",
    "identity_labels",
    "STATUSES",
]
