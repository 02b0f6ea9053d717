"""NIfTI reading and (atomic) writing of :class:`~rdmm_pipelines.spatial.image.Image`.

On-disk layouts (nibabel, the affine kept as voxel -> world RAS mm):

* 2D: (X, Y) or (X, Y, 1) -> a 2D grid of shape (X, Y); C > 1 channels as (X, Y, 1, C);
* 3D: (X, Y, Z); C > 1 channels as (X, Y, Z, C) (the last axis is always the channel axis).

Every error is a ``ValueError`` (``FileNotFoundError`` for a missing file) naming the file.
"""

from __future__ import annotations

import gzip
import logging
import os
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from ..atomic import atomic_output
from .grid import Grid
from .image import Image

__all__ = ["load_image", "load_labels", "save_image", "write_nifti_atomic", "set_geometry", "verify_gzip"]

logger = logging.getLogger(__name__)

_FLOAT_DTYPES = {"float": torch.float32, "float32": torch.float32, "float64": torch.float64,
                 "double": torch.float64}


def _nifti_suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return path.name[-len(suffix):]
    raise ValueError(f"{path}: not a NIfTI file name (use .nii or .nii.gz)")


def verify_gzip(p: Path, chunk: int = 1 << 22) -> None:
    """Read a gzip file to its end, so that its CRC-32 and length are checked: nibabel reads only
    the bytes it needs, and a stream whose checksum fails would otherwise load with corrupted
    voxels. Costs one more decompression of the file."""
    try:
        with gzip.open(p, "rb") as fh:
            while fh.read(chunk):
                pass
    except (EOFError, OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{p}: the gzip stream is corrupt or truncated ({type(exc).__name__}: {exc})") from None


def _read_nifti(
    path: str | os.PathLike, dtype: type = np.float64
) -> tuple[np.ndarray, np.ndarray, Path]:
    """Read ``path`` as a float array (scaling applied) and its affine.

    Every failure becomes an error naming the file.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    if not p.is_file():
        raise ValueError(f"{p}: not a regular file")
    try:
        img = nib.load(str(p))
    except Exception as exc:  # nibabel raises ImageFileError, OSError, zlib/gzip errors, ...
        raise ValueError(f"{p}: cannot be read as NIfTI ({type(exc).__name__}: {exc})") from exc
    if p.name.lower().endswith(".gz"):  # a NIfTI header: now the whole stream and its checksum
        verify_gzip(p)
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ValueError(f"{p}: is a {type(img).__name__}, not a NIfTI image")
    if any(int(n) == 0 for n in img.shape):
        raise ValueError(f"{p}: image has zero voxels (shape {img.shape})")
    try:
        arr = np.asarray(img.get_fdata(dtype=dtype))
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as exc:
        raise ValueError(
            f"{p}: image data is truncated or corrupt ({type(exc).__name__}: {exc})"
        ) from exc
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(f"{p}: image contains {int(bad.sum())} NaN or infinite values")
    return arr, np.asarray(img.affine, dtype=np.float64), p


def _to_channels_first(arr: np.ndarray, p: Path) -> np.ndarray:
    """On-disk array -> (C, *S) following the layouts in the module docstring."""
    shape = arr.shape
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim == 3:
        return arr[None, :, :, 0] if shape[2] == 1 else arr[None]
    if arr.ndim == 4:
        chans = np.moveaxis(arr, -1, 0)
        return chans[:, :, :, 0] if shape[2] == 1 else chans
    raise ValueError(
        f"{p}: unsupported image shape {shape}; expected (X, Y), (X, Y, 1), (X, Y, Z) or "
        "(X, Y, Z, C) with channels last"
    )


def load_image(path: str | os.PathLike, *, dtype: str = "float") -> Image:
    """Read a NIfTI intensity image.

    Args:
        path: .nii or .nii.gz file.
        dtype: "float"/"float32" (default) or "float64"/"double".

    Returns:
        Image with data (C, *S) and the file's affine (nibabel's choice of sform/qform).
    """
    if dtype not in _FLOAT_DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_FLOAT_DTYPES)}")
    np_dtype = np.float64 if _FLOAT_DTYPES[dtype] == torch.float64 else np.float32
    arr, affine, p = _read_nifti(path, np_dtype)
    data = _to_channels_first(arr, p)
    image = Image(torch.from_numpy(np.ascontiguousarray(data)).to(_FLOAT_DTYPES[dtype]),
                  _file_grid(data.shape[1:], affine, p))
    logger.debug("read %s: %r", p, image)
    return image


def load_labels(path: str | os.PathLike) -> Image:
    """Read a NIfTI label map as int64 data (C, *S); non-integer values are rejected."""
    arr, affine, p = _read_nifti(path)
    rounded = np.rint(arr)
    off = np.abs(arr - rounded) > 1e-3
    if off.any():
        first = arr[off].flat[0]
        raise ValueError(
            f"{p}: label map has {int(off.sum())} non-integer values (e.g. {first!r}); "
            "is this an intensity image?"
        )
    if np.abs(rounded).max() >= 2**62:
        raise ValueError(f"{p}: label values too large for int64")
    data = _to_channels_first(rounded.astype(np.int64), p)
    return Image(torch.from_numpy(np.ascontiguousarray(data)), _file_grid(data.shape[1:], affine, p))


def _file_grid(shape, affine: np.ndarray, p: Path) -> Grid:
    """The grid of a file's data, with the file named in any error (a singular header, ...)."""
    try:
        return Grid(shape, affine)
    except ValueError as err:
        raise ValueError(f"{p}: {err}") from None


def _disk_array(image: Image) -> np.ndarray:
    """(C, *S) tensor -> on-disk array with a dtype that fits."""
    data = image.data.detach().cpu()
    if data.is_floating_point():
        arr = data.to(torch.float64 if data.dtype == torch.float64 else torch.float32).numpy()
    else:
        arr = data.numpy()
        lo, hi = int(arr.min()), int(arr.max())
        for cand in (np.int16, np.int32):
            info = np.iinfo(cand)
            if info.min <= lo and hi <= info.max:
                arr = arr.astype(cand)
                break
        else:
            raise ValueError(f"label values [{lo}, {hi}] do not fit in int32 for NIfTI")
    if image.channels == 1:
        return arr[0]
    arr = np.moveaxis(arr, 0, -1)
    return arr[:, :, None, :] if image.ndim == 2 else arr


def write_nifti_atomic(
    img: nib.Nifti1Image, path: str | os.PathLike, overwrite: bool = True
) -> Path:
    """Write ``img`` to ``path`` via a temporary file in the same directory and ``os.replace``.

    Readers never see a half-written file, and a failed write leaves no file behind.
    """
    p = Path(path)
    suffix = _nifti_suffix(p)
    if p.exists() and not overwrite:
        raise ValueError(f"{p}: exists and overwrite=False")
    if not p.parent.is_dir():
        raise ValueError(f"{p}: directory {p.parent} does not exist")
    with atomic_output(p, suffix=f".tmp{suffix}", make_parents=False) as tmp:
        nib.save(img, tmp)
    logger.debug("wrote %s", p)
    return p


def set_geometry(img: nib.Nifti1Image, affine: np.ndarray) -> None:
    """Set qform and sform (code 1, scanner) to ``affine`` and the units to mm / s."""
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")


def save_image(image: Image, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Write ``image`` as NIfTI with its grid's affine, atomically.

    2D: (X, Y) (C = 1) or (X, Y, 1, C); 3D: (X, Y, Z) or (X, Y, Z, C). Floats are stored as float32
    (float64 data as float64); integer labels as int16, or int32 where int16 does not fit.

    Args:
        image: the image.
        path: .nii or .nii.gz destination.
        overwrite: if False, refuse (ValueError) when ``path`` exists.

    Returns:
        The written path.
    """
    affine = image.grid.affine_matrix
    img = nib.Nifti1Image(_disk_array(image), affine)
    set_geometry(img, affine)
    return write_nifti_atomic(img, path, overwrite=overwrite)
