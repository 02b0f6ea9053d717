"""Dense transforms of a registration: applying, inverting and exporting them.

Convention: the full transform T maps a FIXED world point p to the MOVING world point T(p) (ITK's
fixed -> moving / pull-back direction), T = A o phi with phi the deformation (fixed world -> fixed
world) and A the affine (fixed world -> moving world).

* :class:`DenseTransform` (:mod:`.dense`): T sampled on the fixed grid as moving voxel indices;
  apply it to images and label maps, map world points, write an ITK displacement field.
* :func:`invert` (:mod:`.inverse`): T^-1 on the moving grid by fixed-point iteration.
* :func:`save_itk_composite` (:mod:`.composite`): an ITK HDF5 composite transform (affine +
  displacement field) that ANTs / ITK apply as we do.
"""

from .composite import (
    deformation_voxels_from_domain,
    read_itk_transform_h5,
    save_itk_composite,
    save_result_composite,
)
from .dense import DenseTransform, itk_physical_geometry
from .inverse import InversionReport, invert

__all__ = [
    "DenseTransform",
    "InversionReport",
    "deformation_voxels_from_domain",
    "invert",
    "itk_physical_geometry",
    "read_itk_transform_h5",
    "save_itk_composite",
    "save_result_composite",
]
