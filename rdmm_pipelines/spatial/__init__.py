"""Spatial types: world-space grids and images, NIfTI I/O, intensity normalisation, resampling,
and ITK/ANTs displacement-field export.

Imports only :mod:`rdmm_pipelines.core` (plus torch, numpy and nibabel).
"""

from .grid import Grid, domain_map_to_moving_voxels, same_grid
from .image import Image, resample_to_grid
from .intensity import normalize_intensity, percentiles
from .io import load_image, load_labels, save_image
from .itk_field import (
    displacement_field_lps,
    load_itk_displacement_field,
    moving_points_world,
    save_itk_displacement_field,
)

__all__ = [
    "Grid",
    "same_grid",
    "Image",
    "domain_map_to_moving_voxels",
    "resample_to_grid",
    "normalize_intensity",
    "percentiles",
    "load_image",
    "load_labels",
    "save_image",
    "displacement_field_lps",
    "moving_points_world",
    "save_itk_displacement_field",
    "load_itk_displacement_field",
]
