"""Affine pre-registration: the world-space affine transform (with ITK/ANTs file I/O) and its
multi-scale optimisation.

Convention: an affine result maps a FIXED world point (RAS mm) to the corresponding MOVING world
point, ``p_moving = A @ [p_fixed, 1]`` (ITK's fixed -> moving direction). See
:mod:`rdmm_pipelines.affine.transform`, :mod:`rdmm_pipelines.affine.optimize` and its image pyramid,
:mod:`rdmm_pipelines.affine.pyramid`.
"""

from .optimize import (
    AffineConfig,
    AffineIterationRecord,
    AffineResult,
    affine_register,
    centroid,
    initial_transform,
    overlap_similarity,
)
from .transform import AffineTransform, ras_to_lps

__all__ = [
    "AffineConfig",
    "AffineIterationRecord",
    "AffineResult",
    "AffineTransform",
    "affine_register",
    "centroid",
    "initial_transform",
    "overlap_similarity",
    "ras_to_lps",
]
