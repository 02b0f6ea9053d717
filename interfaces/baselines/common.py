"""Shared plumbing of the baseline runners: the output record, file names, input checks, tool
look-up, thread settings, child processes, logs, and writing a transform in our field convention.

Output convention (the same as our own registration's outputs, so evaluation treats every method
alike): in ``out_dir``, for a method ``m`` and a per-pair ``prefix``,

* ``{prefix}{m}_warped.nii.gz``: the moving image warped onto the fixed grid (float32, zero
  outside the moving image, the fixed image's affine);
* ``{prefix}{m}_displacement.nii.gz``: the FULL transform (initial/affine part included) as an
  ITK/ANTs displacement field on the fixed grid: u(p) = T(p) - p in ITK physical space (LPS mm),
  NIfTI vector image (intent 1007), (X, Y, Z, 1, 3) in 3D and (X, Y, 1, 1, 2) in 2D; see
  :func:`rdmm_pipelines.spatial.save_itk_displacement_field`. ``ants.apply_transforms(fixed,
  moving, [displacement])`` reproduces the warp and
  ``DenseTransform.from_displacement_field(displacement, moving_grid)`` reads it;
* ``{prefix}{m}.log``: what was run, with the tool's own output where there is one.

Intermediate files go to a private temporary directory inside ``out_dir`` that is removed
afterwards; every file we write ourselves is written atomically (temporary name + ``os.replace``).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from rdmm_pipelines.atomic import write_text_atomic
from rdmm_pipelines.spatial import Grid, Image, save_image, save_itk_displacement_field
from rdmm_pipelines.transforms.dense import itk_physical_geometry

__all__ = [
    "METHODS",
    "NIFTYREG_TOOLS",
    "BaselineOutput",
    "check_inputs",
    "find_niftyreg_binaries",
    "output_paths",
    "require_module",
    "run_command",
    "write_field_lps",
    "write_warped",
]

logger = logging.getLogger(__name__)

METHODS = ("ants-syn", "sitk-demons-diffeomorphic", "sitk-demons-fss", "niftyreg-f3d")

# what to install, per missing piece (the messages of the RuntimeErrors)
INSTALL_HINTS = {
    "ants": "pip install 'rdmm_pipelines[ants]' (or: pip install antspyx)",
    "SimpleITK": "pip install 'rdmm_pipelines[sitk]' (or: pip install SimpleITK)",
    "niftyreg": (
        "install NiftyReg: `CMAKE_POLICY_VERSION_MINIMUM=3.5 pip install niftyreg` (builds from "
        "source, needs cmake and a C++ compiler; or install a wheel built once with `pip wheel`), "
        "or put reg_aladin, reg_f3d, reg_resample and reg_transform on PATH, or set NIFTYREG_BIN "
        "to the directory holding them"
    ),
}

NIFTYREG_TOOLS = ("reg_aladin", "reg_f3d", "reg_resample", "reg_transform")

# lines of a tool's stderr/stdout quoted in an error message
_TAIL_LINES = 25


@dataclass(frozen=True)
class BaselineOutput:
    """What a baseline run produced (see the module docstring for the file conventions).

    Attributes:
        method: "ants-syn", "sitk-demons-diffeomorphic", "sitk-demons-fss" or "niftyreg-f3d".
        warped: the moving image warped onto the fixed grid (NIfTI).
        displacement: the full transform as an ITK/ANTs displacement field on the fixed grid
            (vector NIfTI, LPS mm, intent 1007).
        seconds: wall-clock time of the registration (reading inputs to writing outputs).
        tool_version: e.g. "antspyx 0.6.3", "SimpleITK 2.5.7", "NiftyReg 1.5.70".
        log: the run's log file, or None.
    """

    method: str
    warped: Path
    displacement: Path
    seconds: float
    tool_version: str
    log: Path | None


def output_paths(out_dir: Path, prefix: str, method: str) -> dict[str, Path]:
    """The output file names of ``method`` in ``out_dir`` for a per-pair ``prefix``."""
    if os.sep in prefix or (os.altsep and os.altsep in prefix):
        raise ValueError(f"prefix {prefix!r} must be a file-name prefix, not a path")
    stem = f"{prefix}{method}"
    return {
        "warped": out_dir / f"{stem}_warped.nii.gz",
        "displacement": out_dir / f"{stem}_displacement.nii.gz",
        "log": out_dir / f"{stem}.log",
    }


def require_module(name: str, method: str):
    """Import ``name`` (``"ants"`` or ``"SimpleITK"``) or raise RuntimeError naming the install."""
    try:
        return importlib.import_module(name)
    except Exception as exc:  # ImportError, or a broken install (ABI mismatch, ...)
        what = "antspyx" if name == "ants" else name
        raise RuntimeError(
            f"{method} needs {what}, which cannot be imported ({type(exc).__name__}: {exc}): "
            f"{INSTALL_HINTS[name]}"
        ) from exc


def _niftyreg_dirs() -> list[tuple[str, Path]]:
    """Candidate directories for the NiftyReg binaries, in order of precedence."""
    dirs = []
    env = os.environ.get("NIFTYREG_BIN")
    if env:
        dirs.append(("NIFTYREG_BIN", Path(env)))
    try:
        pkg = importlib.import_module("niftyreg")
    except ImportError:
        pkg = None
    if pkg is not None and getattr(pkg, "bin_path", None) is not None:
        dirs.append(("the niftyreg Python package", Path(pkg.bin_path)))
    return dirs


def find_niftyreg_binaries() -> dict[str, Path]:
    """Paths of reg_aladin, reg_f3d, reg_resample and reg_transform.

    Looked for in ``$NIFTYREG_BIN``, then in the ``niftyreg`` Python package's ``bin`` directory,
    then on ``PATH``. Raises RuntimeError (with what to install) when one is missing.
    """
    found: dict[str, Path] = {}
    for tool in NIFTYREG_TOOLS:
        for _, d in _niftyreg_dirs():
            cand = d / tool
            if cand.is_file() and os.access(cand, os.X_OK):
                found[tool] = cand
                break
        else:
            which = shutil.which(tool)
            if which:
                found[tool] = Path(which)
    missing = [t for t in NIFTYREG_TOOLS if t not in found]
    if missing:
        looked = ", ".join(f"{what} ({d})" for what, d in _niftyreg_dirs()) or "nowhere else"
        raise RuntimeError(
            f"niftyreg-f3d needs the NiftyReg binaries; {', '.join(missing)} not found "
            f"(looked in {looked} and on PATH): {INSTALL_HINTS['niftyreg']}"
        )
    return found


# ------------------------------------------------------------------------------------- inputs
def _nifti_path(path: str | os.PathLike, role: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{role} image {p}: no such file")
    name = p.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        raise ValueError(f"{role} image {p}: baselines read NIfTI files (.nii or .nii.gz)")
    return p.resolve()


def _file_grid(p: Path, role: str) -> Grid:
    """The grid of a plain single-channel 2D (X, Y) or 3D (X, Y, Z) NIfTI image.

    Every tool must read the same geometry, so only these layouts are accepted (a (X, Y, 1) file
    is 2D for us but 3D for ITK and NiftyReg).
    """
    from rdmm_pipelines.spatial.io import verify_gzip

    try:
        img = nib.load(str(p))
    except Exception as exc:
        raise ValueError(f"{role} image {p}: cannot be read as NIfTI ({exc})") from exc
    if p.name.lower().endswith(".gz"):  # the tools read it themselves: check the checksum here
        try:
            verify_gzip(p)
        except ValueError as exc:
            raise ValueError(f"{role} image {exc}") from None
    shape = tuple(int(n) for n in img.shape)
    if len(shape) not in (2, 3) or min(shape) < 2:
        raise ValueError(
            f"{role} image {p}: shape {shape}; the baselines take single-channel 2D (X, Y) or 3D "
            "(X, Y, Z) images with every axis longer than 1 (save 2D images as (X, Y))"
        )
    hdr = img.header
    both = int(hdr["sform_code"]) > 0 and int(hdr["qform_code"]) > 0
    if both and not np.allclose(hdr.get_sform(), hdr.get_qform(), atol=1e-3):
        logger.warning(
            "%s image %s: sform and qform differ; ITK (ANTs, SimpleITK) and NiftyReg may read "
            "different geometries (sform\n%s\nqform\n%s)",
            role, p, hdr.get_sform(), hdr.get_qform(),
        )
    return Grid(shape, img.affine)


def check_inputs(
    fixed: str | os.PathLike, moving: str | os.PathLike, out_dir: str | os.PathLike,
    prefix: str, method: str,
) -> tuple[Path, Path, Grid, Grid, dict[str, Path]]:
    """Validate the inputs (without creating anything).

    Returns:
        (fixed path, moving path, fixed grid, moving grid, output paths); the output directory is
        not created here.
    """
    f = _nifti_path(fixed, "fixed")
    m = _nifti_path(moving, "moving")
    fg = _file_grid(f, "fixed")
    mg = _file_grid(m, "moving")
    if fg.ndim != mg.ndim:
        raise ValueError(f"fixed image {f} is {fg.ndim}D but moving image {m} is {mg.ndim}D")
    out = Path(out_dir).resolve()
    if out.exists() and not out.is_dir():
        raise ValueError(f"output directory {out} exists and is not a directory")
    paths = output_paths(out, prefix, method)
    for key, target in paths.items():
        if target in (f, m):
            raise ValueError(f"output {key} {target} would overwrite an input image")
    return f, m, fg, mg, paths


# ------------------------------------------------------------------------------------- running
@contextlib.contextmanager
def work_directory(out_dir: Path, stem: str) -> Iterator[Path]:
    """A private temporary directory inside ``out_dir`` for intermediate files, removed on exit."""
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{stem}.", suffix=".tmp", dir=out_dir))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def thread_environment(threads: int | None) -> Iterator[None]:
    """Set ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS and OMP_NUM_THREADS for the duration (restored
    afterwards). ``None`` leaves the environment alone."""
    if threads is None:
        yield
        return
    keys = ("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "OMP_NUM_THREADS")
    old = {k: os.environ.get(k) for k in keys}
    try:
        for k in keys:
            os.environ[k] = str(threads)
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def check_threads(threads: int | None) -> int | None:
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    return int(threads)


def _tail(text: str, lines: int = _TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_command(
    cmd: Sequence[str | os.PathLike], log: list[str], *, cwd: Path,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run ``cmd`` (no shell); its output goes into ``log``; a non-zero exit (or a missing output
    the caller checks) raises RuntimeError quoting the tail of the tool's stderr."""
    argv = [str(c) for c in cmd]
    log.append("$ " + " ".join(argv))
    start = time.perf_counter()
    try:
        proc = subprocess.run(argv, cwd=cwd, env=None if env is None else dict(env),
                              check=False, capture_output=True, text=True, errors="replace")
    except OSError as exc:
        raise RuntimeError(f"cannot run {argv[0]}: {exc}") from exc
    log.append(proc.stdout.rstrip())
    if proc.stderr.strip():
        log.append("[stderr]\n" + proc.stderr.rstrip())
    log.append(f"[exit {proc.returncode} after {time.perf_counter() - start:.2f} s]")
    if proc.returncode != 0:
        tail = _tail(proc.stderr) or _tail(proc.stdout)
        raise RuntimeError(
            f"{Path(argv[0]).name} failed with exit code {proc.returncode}:\n{tail}"
        )
    return proc


def write_log(path: Path, header: Mapping[str, object], lines: list[str]) -> Path | None:
    """Write the run's log; a failure to write it is logged, never raised (it is a by-product)."""
    text = "".join(f"{k}: {v}\n" for k, v in header.items()) + "\n" + "\n".join(lines) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_text_atomic(path, text)
    except OSError as exc:
        logger.warning("could not write log %s: %s", path, exc)
        return None


def versions_header(method: str, fixed: Path, moving: Path, tool_version: str,
                    params: Mapping[str, object]) -> dict[str, object]:
    return {"method": method, "tool": tool_version, "fixed": fixed, "moving": moving,
            "python": sys.version.split()[0], **{f"param {k}": v for k, v in params.items()}}


# ------------------------------------------------------------------------------------- writing
def write_field_lps(path: Path, fixed_grid: Grid, moving_grid: Grid, u: np.ndarray) -> Path:
    """Write a displacement u(p) = T(p) - p, given in ITK physical space (LPS mm) on the fixed
    grid, in our convention (through :func:`save_itk_displacement_field`, atomically).

    Args:
        u: (*fixed_grid.shape, d) LPS mm (ITK's 2D physical space for 2D grids).
    """
    u = np.asarray(u, dtype=np.float64)
    d = fixed_grid.ndim
    if u.shape != (*fixed_grid.shape, d):
        raise ValueError(
            f"displacement field of shape {u.shape} does not fit the fixed grid "
            f"{fixed_grid.shape} ({d} components expected)"
        )
    if not np.all(np.isfinite(u)):
        raise ValueError(f"displacement field has {int((~np.isfinite(u)).sum())} non-finite values")
    f_origin, f_lin = itk_physical_geometry(fixed_grid)
    m_origin, m_lin = itk_physical_geometry(moving_grid)
    idx = fixed_grid.voxel_indices(torch.float64)[0].movedim(0, -1).numpy()
    target = idx @ f_lin.T + f_origin + u
    mv = (target - m_origin) @ np.linalg.inv(m_lin).T
    return save_itk_displacement_field(path, fixed_grid, np.moveaxis(mv, -1, 0)[None], moving_grid)


def write_warped(path: Path, fixed_grid: Grid, data: np.ndarray) -> Path:
    """Save a warped image array (*fixed_grid.shape) on the fixed grid as float32, atomically;
    non-finite values (a tool's padding) become 0."""
    arr = np.asarray(data, dtype=np.float32)
    if arr.shape != fixed_grid.shape:
        raise ValueError(f"warped image shape {arr.shape} does not match fixed grid {fixed_grid.shape}")
    arr = np.where(np.isfinite(arr), arr, np.float32(0.0))
    return save_image(Image(torch.from_numpy(np.ascontiguousarray(arr))[None], fixed_grid), path)
