"""NiftyReg (reg_aladin affine, then reg_f3d cubic B-spline), written in our output convention.

Commands (all intermediate files in a private temporary directory inside ``out_dir``)::

    reg_aladin   -ref fixed -flo moving -aff aff.txt -res aladin.nii.gz           (if aladin)
    reg_f3d      -ref fixed -flo moving [-aff aff.txt] -cpp cpp.nii.gz -res f3d.nii.gz
    reg_transform -ref fixed -def cpp.nii.gz def.nii.gz
    reg_resample -ref fixed -flo moving -trans cpp.nii.gz -res warped.nii.gz -inter 1 -pad 0

each with ``-omp N`` (and OMP_NUM_THREADS=N for the child) when ``threads`` is given. With
``-aff`` the control-point grid starts from the affine, so ``cpp.nii.gz`` is the full transform.

``reg_transform -def`` gives a DEFORMATION field: for every fixed voxel the absolute position of
its moving point in NiftyReg's world, which is the NIfTI world (RAS mm, sform when its code is
> 0, else qform), stored as (X, Y, Z, 1, 3) (2D: (X, Y, 1, 1, 2), x and y only). We convert it to
our displacement u(p) = T(p) - p in LPS (x and y negated) on the fixed grid.

The warped image is NiftyReg's own resampling (linear, 0 outside the moving image), not reg_f3d's
``-res`` output (cubic, NaN padding).

2D: NiftyReg registers 2D (X, Y) NIfTI images in their x-y plane. This is supported for axial
images only (the image axes' world directions have no z component, as for the images we write);
other 2D geometries raise ValueError.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from rdmm_pipelines.spatial import Grid

from .common import (
    BaselineOutput,
    check_inputs,
    check_threads,
    find_niftyreg_binaries,
    run_command,
    versions_header,
    work_directory,
    write_field_lps,
    write_log,
    write_warped,
)

__all__ = ["METHOD", "niftyreg_version", "run_niftyreg"]

logger = logging.getLogger(__name__)

METHOD = "niftyreg-f3d"
_RAS_TO_LPS = np.array([-1.0, -1.0, 1.0])


def niftyreg_version(binaries: dict[str, Path] | None = None) -> str:
    """'NiftyReg <version>' from ``reg_f3d --version``."""
    bins = binaries or find_niftyreg_binaries()
    try:
        proc = subprocess.run([str(bins["reg_f3d"]), "--version"], capture_output=True, text=True,
                              timeout=30, check=False)
        text = (proc.stdout.strip() or proc.stderr.strip()).splitlines()
        return f"NiftyReg {text[-1].strip()}" if text else "NiftyReg unknown"
    except (OSError, subprocess.SubprocessError):
        return "NiftyReg unknown"


def _check_axial_2d(grid: Grid, path: Path) -> None:
    a = grid.affine_matrix
    if np.abs(a[2, :2]).max() > 1e-6 * grid.spacing.max():
        raise ValueError(
            f"{path}: NiftyReg registers 2D images in their x-y plane; this 2D image's axes have a "
            "world z component (non-axial plane), which is not supported: use a 3D image"
        )


def deformation_to_lps_displacement(deformation: np.ndarray, fixed_grid: Grid) -> np.ndarray:
    """NiftyReg deformation field (absolute RAS positions) -> our LPS displacement u = T(p) - p.

    Args:
        deformation: as read from ``reg_transform -def`` output: (X, Y, Z, 1, 3) in 3D,
            (X, Y, 1, 1, 2) in 2D.
        fixed_grid: the reference (fixed) grid.

    Returns:
        (*fixed_grid.shape, d) float64 LPS mm.
    """
    d = fixed_grid.ndim
    arr = np.asarray(deformation, dtype=np.float64)
    want = (*fixed_grid.shape, 1, 3) if d == 3 else (*fixed_grid.shape, 1, 1, 2)
    if arr.shape != want:
        raise ValueError(f"NiftyReg deformation field has shape {arr.shape}, expected {want}")
    pos = arr[:, :, :, 0, :] if d == 3 else arr[:, :, 0, 0, :]
    idx = fixed_grid.voxel_indices(torch.float64)[0].movedim(0, -1).numpy()
    p = fixed_grid.voxel_to_world(idx)[..., :d]  # RAS mm of the fixed voxels
    return (pos - p) * _RAS_TO_LPS[:d]


def run_niftyreg(
    fixed: str | os.PathLike,
    moving: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    prefix: str = "",
    threads: int | None = None,
    aladin: bool = True,
    f3d_args: Sequence[str] = (),
    aladin_args: Sequence[str] = (),
) -> BaselineOutput:
    """Register ``moving`` to ``fixed`` with NiftyReg (reg_aladin, then reg_f3d).

    Args:
        fixed: fixed (reference) NIfTI image, 3D, or 2D (X, Y) in an axial plane.
        moving: moving (floating) NIfTI image of the same dimension.
        out_dir: output directory (created if needed); outputs ``{prefix}niftyreg-f3d_warped.nii.gz``,
            ``..._displacement.nii.gz`` and ``.log``.
        prefix: per-pair file-name prefix.
        threads: OpenMP threads of the NiftyReg processes (``-omp``); None: NiftyReg's default.
        aladin: run reg_aladin first and start reg_f3d from its affine.
        f3d_args: extra reg_f3d arguments, e.g. ``("-be", "0.005", "-maxit", "300")``.
        aladin_args: extra reg_aladin arguments, e.g. ``("-rigOnly",)``.

    Returns:
        :class:`BaselineOutput` (method "niftyreg-f3d").

    Raises:
        RuntimeError: a NiftyReg binary is missing (before any work), or a command failed (with
            the tail of its output).
        FileNotFoundError / ValueError: bad inputs (e.g. a non-axial 2D image).
    """
    bins = find_niftyreg_binaries()
    threads = check_threads(threads)
    f_path, m_path, f_grid, m_grid, paths = check_inputs(fixed, moving, out_dir, prefix, METHOD)
    if f_grid.ndim == 2:
        _check_axial_2d(f_grid, f_path)
        _check_axial_2d(m_grid, m_path)
    reserved = {"-ref", "-flo", "-aff", "-cpp", "-res", "-omp"} & set(f3d_args)
    if reserved:
        raise ValueError(f"f3d_args may not set {sorted(reserved)}: the runner sets them")
    if {"-ref", "-flo", "-aff", "-res", "-omp"} & set(aladin_args):
        raise ValueError("aladin_args may not set -ref, -flo, -aff, -res or -omp")
    version = niftyreg_version(bins)
    params = {"aladin": aladin, "aladin_args": list(aladin_args), "f3d_args": list(f3d_args),
              "threads": threads}
    env = dict(os.environ)
    omp: list[str] = []
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
        omp = ["-omp", str(threads)]
    log: list[str] = []
    out_dir = paths["warped"].parent
    start = time.perf_counter()
    try:
        with work_directory(out_dir, f"{prefix}{METHOD}") as work:
            run = lambda cmd: run_command(cmd, log, cwd=work, env=env)
            aff = work / "aff.txt"
            cpp, deformation, warped = work / "cpp.nii.gz", work / "def.nii.gz", work / "warped.nii.gz"
            if aladin:
                run([bins["reg_aladin"], "-ref", f_path, "-flo", m_path, "-aff", aff,
                     "-res", work / "aladin.nii.gz", *omp, *aladin_args])
                _require(aff, "reg_aladin", log)
            run([bins["reg_f3d"], "-ref", f_path, "-flo", m_path,
                 *(["-aff", aff] if aladin else []), "-cpp", cpp, "-res", work / "f3d.nii.gz",
                 *omp, *f3d_args])
            _require(cpp, "reg_f3d", log)
            run([bins["reg_transform"], "-ref", f_path, "-def", cpp, deformation, *omp])
            _require(deformation, "reg_transform", log)
            run([bins["reg_resample"], "-ref", f_path, "-flo", m_path, "-trans", cpp,
                 "-res", warped, "-inter", "1", "-pad", "0", *omp])
            _require(warped, "reg_resample", log)
            u = deformation_to_lps_displacement(
                np.asarray(nib.load(str(deformation)).get_fdata(dtype=np.float64)), f_grid)
            write_field_lps(paths["displacement"], f_grid, m_grid, u)
            w = np.asarray(nib.load(str(warped)).get_fdata(dtype=np.float32))
            write_warped(paths["warped"], f_grid, w.reshape(f_grid.shape))
    finally:
        seconds = time.perf_counter() - start
        log.append(f"[{METHOD} finished in {seconds:.2f} s]")
        log_path = write_log(paths["log"], versions_header(METHOD, f_path, m_path, version, params),
                             log)
    return BaselineOutput(METHOD, paths["warped"], paths["displacement"], seconds, version, log_path)


def _require(path: Path, tool: str, log: list[str]) -> None:
    if not path.is_file():
        tail = "\n".join("\n".join(log).splitlines()[-15:])
        raise RuntimeError(f"{tool} exited 0 but wrote no {path.name}:\n{tail}")
