"""ITK HDF5 composite transform (``.h5``) of a registration: affine after deformation.

A registration's full transform is T = A o phi (fixed world -> moving world): phi is the
deformation, a map of the fixed world into itself sampled on the fixed grid, and A the affine
(:class:`~rdmm_pipelines.affine.AffineTransform`, fixed world -> moving world). The file holds
both pieces separately, so that ITK / ANTs tools can use or replace either one, and
``ants.apply_transforms(fixed, moving, [path])`` (or ``antsApplyTransforms -t path``) reproduces
our warp ``sample_voxel(moving, moving_voxels)``.

File layout (as written by ITK 5.4's ``HDF5TransformIO``; checked against
``SimpleITK.WriteTransform`` of a ``CompositeTransform``):

* ``/HDFVersion``, ``/ITKVersion``, ``/OSName``, ``/OSVersion``: shape (1,) datasets of one
  variable-length ASCII string each;
* ``/TransformGroup/0/TransformType`` = ``CompositeTransform_double_{d}_{d}`` (no parameters);
* ``/TransformGroup/1``: ``AffineTransform_double_{d}_{d}``, ``TransformParameters`` = [M row-major,
  t] (float64, LPS) and ``TransformFixedParameters`` = centre (LPS), see
  :meth:`AffineTransform.itk_parameters`;
* ``/TransformGroup/2``: ``DisplacementFieldTransform_double_{d}_{d}``; ``TransformParameters`` =
  the displacement vectors u(p) = phi(p) - p (float64, ITK physical space = LPS mm) with the vector
  component fastest, then ITK index i_0, i_1, ...; ``TransformFixedParameters`` = [size (d), origin
  (d), spacing (d), direction (d x d, row-major)] of the fixed grid in ITK physical space.

ITK reads the members after group 0 into the composite's queue in file order and applies the
queue from the back: the point goes through group 2 (phi) first and then group 1 (A), i.e.
T(p) = A(p + u(p)). More than half a voxel outside the fixed grid ITK takes u = 0 (A alone).
``tests/test_transforms.py`` proves the layout and the order with SimpleITK and antspyx.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..affine.transform import AffineTransform
from ..atomic import atomic_output
from ..spatial import Grid, displacement_field_lps
from .dense import itk_physical_geometry

__all__ = [
    "deformation_voxels_from_domain",
    "read_itk_transform_h5",
    "save_itk_composite",
    "save_result_composite",
]

#: the ITK release whose HDF5 transform layout this writer follows
_ITK_FORMAT_VERSION = "5.4.0"
_AXIAL_TOL = 1e-6


def _h5py():
    try:
        import h5py
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "writing ITK HDF5 transforms needs h5py (pip install h5py); alternatively use the "
            "displacement field (NIfTI) and the affine text file"
        ) from exc
    return h5py


def deformation_voxels_from_domain(phi: Tensor, fixed_grid: Grid) -> Tensor:
    """Fixed voxel indices of a map given in fixed registration-domain coordinates.

    ``phi / fixed_grid.domain_spacing`` per channel (see :attr:`Grid.domain_spacing`), float64.
    """
    d = fixed_grid.ndim
    if phi.dim() != d + 2 or phi.shape[1] != d:
        raise ValueError(f"map shape {tuple(phi.shape)} must be (1, {d}, *S) for a {d}D grid")
    h = torch.tensor(fixed_grid.domain_spacing, dtype=torch.float64, device=phi.device)
    return phi.detach().to(torch.float64) / h.view(1, d, *([1] * d))


def _is_axial(grid: Grid) -> bool:
    a = grid.affine_matrix
    return bool(np.all(np.abs(a[2, :2]) <= _AXIAL_TOL * grid.spacing))


def _write_string(f: Any, name: str, value: str) -> None:
    h5py = _h5py()
    f.create_dataset(name, data=np.array([value.encode("ascii")], dtype=object),
                     dtype=h5py.string_dtype("ascii"))


def save_itk_composite(
    path: str | os.PathLike,
    fixed_grid: Grid,
    moving_grid: Grid,
    affine: AffineTransform | None,
    deformation_voxels: Tensor | np.ndarray,
    *,
    center: np.ndarray | None = None,
    overwrite: bool = True,
) -> Path:
    """Write T = A o phi as an ITK HDF5 composite transform (affine + displacement field).

    With a RegistrationResult ``r``::

        save_itk_composite(path, r.fixed.grid, r.moving.grid, r.affine,
                           deformation_voxels_from_domain(r.phi, r.fixed.grid))

    (or simply :func:`save_result_composite`).

    Args:
        path: destination (``.h5``); written through a temporary file and ``os.replace``.
        fixed_grid: the fixed grid (where phi is sampled; the field's geometry).
        moving_grid: the moving image's grid (checks only: dimension and, in 2D, the plane).
        affine: A, fixed world -> moving world (None: the identity).
        deformation_voxels: (1, d, *fixed_grid.shape) FIXED voxel indices of phi(p) for each fixed
            voxel p (the identity map is ``fixed_grid.voxel_indices()``). For a map in fixed
            registration-domain coordinates use :func:`deformation_voxels_from_domain`.
        center: ITK centre of rotation of the affine (LPS mm; default: the fixed grid's centre).
            It does not change the map.
        overwrite: if False, refuse (ValueError) to replace an existing file.

    Returns:
        The written path.

    Raises:
        ValueError: bad shapes, or 2D grids that are not axial (ITK's 2D transforms act on the LPS
            (x, y) of an axial plane; use the displacement field for oblique 2D slices).
    """
    h5py = _h5py()
    d = fixed_grid.ndim
    if moving_grid.ndim != d:
        raise ValueError(f"fixed grid is {d}D but moving grid is {moving_grid.ndim}D")
    affine = AffineTransform.identity(d) if affine is None else affine
    if affine.ndim != d:
        raise ValueError(f"a {affine.ndim}D affine cannot map {d}D grids")
    if d == 2:
        if not (_is_axial(fixed_grid) and _is_axial(moving_grid)):
            raise ValueError(
                "ITK 2D composite transforms need both 2D grids in axial planes (z constant); "
                "write the dense displacement field (save_itk_displacement_field) instead"
            )
        affine.voxel_matrix(fixed_grid, moving_grid)  # raises if A leaves the moving plane

    # the non-affine part: u(p) = phi(p) - p in ITK physical space of the fixed grid
    u = displacement_field_lps(fixed_grid, deformation_voxels, fixed_grid)  # (*S, d) float64
    if not np.all(np.isfinite(u)):
        raise ValueError("the deformation has non-finite values")
    field_params = np.ascontiguousarray(np.transpose(u, (*range(d - 1, -1, -1), d))).ravel()
    origin, lin = itk_physical_geometry(fixed_grid)
    spacing = np.linalg.norm(lin, axis=0)
    direction = lin / spacing
    field_fixed = np.concatenate(
        [np.asarray(fixed_grid.shape, dtype=np.float64), origin, spacing, direction.ravel()]
    )
    if center is None:
        centre_idx = (np.asarray(fixed_grid.shape, dtype=np.float64) - 1.0) / 2.0
        center = origin + lin @ centre_idx
    aff_params, aff_fixed = affine.itk_parameters(center)

    p = Path(path)
    if p.exists() and not overwrite:
        raise ValueError(f"{p}: exists and overwrite=False")
    if not p.parent.is_dir():
        raise ValueError(f"{p}: directory {p.parent} does not exist")
    with atomic_output(p, suffix=".tmp.h5", make_parents=False) as tmp, \
            h5py.File(tmp, "w", libver="earliest") as f:
        _write_string(f, "HDFVersion", f"HDF5 library version: {h5py.version.hdf5_version}")
        _write_string(f, "ITKVersion", _ITK_FORMAT_VERSION)
        _write_string(f, "OSName", platform.system() or "unknown")
        _write_string(f, "OSVersion", platform.release() or "unknown")
        groups = [
            (f"CompositeTransform_double_{d}_{d}", None, None),
            (f"AffineTransform_double_{d}_{d}", aff_params, aff_fixed),
            (f"DisplacementFieldTransform_double_{d}_{d}", field_params, field_fixed),
        ]
        for i, (kind, params, fixed) in enumerate(groups):
            g = f.create_group(f"TransformGroup/{i}")
            _write_string(g, "TransformType", kind)
            if params is not None:
                g.create_dataset("TransformFixedParameters",
                                 data=np.asarray(fixed, dtype="<f8"))
                g.create_dataset("TransformParameters", data=np.asarray(params, dtype="<f8"))
    return p


def save_result_composite(path: str | os.PathLike, result: Any, **kwargs: Any) -> Path:
    """:func:`save_itk_composite` for a :class:`~rdmm_pipelines.result.RegistrationResult`
    (``result.affine`` after ``result.phi``, phi in fixed-domain coordinates)."""
    fixed_grid = result.fixed.grid
    return save_itk_composite(
        path, fixed_grid, result.moving.grid, result.affine,
        deformation_voxels_from_domain(result.phi, fixed_grid), **kwargs,
    )


def read_itk_transform_h5(path: str | os.PathLike) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The transforms stored in an ITK HDF5 transform file, in ``TransformGroup`` order.

    Returns:
        [(TransformType, TransformParameters, TransformFixedParameters)], float64 arrays (empty
        for a composite's own entry). Group 0 of a composite file is the
        ``CompositeTransform_...`` itself; ITK applies its members from the last to the first.
    """
    h5py = _h5py()
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    out = []
    try:
        with h5py.File(p, "r") as f:
            groups = f["TransformGroup"]
            for key in sorted(groups.keys(), key=int):
                g = groups[key]
                kind = g["TransformType"][0]
                kind = kind.decode("ascii") if isinstance(kind, bytes) else str(kind)
                params = np.asarray(g["TransformParameters"][()], dtype=np.float64) \
                    if "TransformParameters" in g else np.zeros(0)
                fixed = np.asarray(g["TransformFixedParameters"][()], dtype=np.float64) \
                    if "TransformFixedParameters" in g else np.zeros(0)
                out.append((kind, params.ravel(), fixed.ravel()))
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"{p}: not an ITK HDF5 transform file ({exc})") from exc
    return out
