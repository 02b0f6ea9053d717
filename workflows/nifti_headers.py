"""Cheap checks of NIfTI files for manifest validation: the header (dimensions, grid, data
type) without loading the data, and whether the file holds as many bytes as the header promises
(the gzip size trailer, or a streamed read). Used by :mod:`.manifest`.
"""

from __future__ import annotations

import bz2
import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from rdmm_pipelines.spatial import Grid

# same tolerance as register()'s check of a region map against the moving grid
_GRID_ATOL = 1e-4
_CHUNK = 1 << 22


@dataclass(frozen=True)
class _Header:
    ndim: int
    channels: int
    grid: Grid


def _spatial_layout(shape: tuple[int, ...]) -> tuple[tuple[int, ...], int] | None:
    """On-disk shape -> (spatial shape, channels), the layouts ``load_image`` accepts."""
    if len(shape) == 2:
        return shape, 1
    if len(shape) == 3:
        return (shape[:2], 1) if shape[2] == 1 else (shape, 1)
    if len(shape) == 4:
        return (shape[:2], shape[3]) if shape[2] == 1 else (shape[:3], shape[3])
    return None


def _stream_size(path: Path, opener) -> int:
    total = 0
    with opener(path, "rb") as fh:
        while True:
            chunk = fh.read(_CHUNK)
            if not chunk:
                return total
            total += len(chunk)


def _data_problem(path: Path, needed: int) -> str | None:
    """Cheap check that ``path`` holds at least ``needed`` (uncompressed) bytes."""
    with open(path, "rb") as fh:
        magic = fh.read(3)
        size = os.fstat(fh.fileno()).st_size
        trailer = b""
        if magic[:2] == b"\x1f\x8b" and size >= 4:
            fh.seek(size - 4)
            trailer = fh.read(4)
    if magic[:2] == b"\x1f\x8b":
        # gzip's last 4 bytes hold the uncompressed size mod 2**32: a truncated file ends in
        # compressed data instead; only when they disagree is the whole stream decompressed
        if len(trailer) == 4 and int.from_bytes(trailer, "little") == needed % 2**32:
            return None
        opener = gzip.open
    elif magic == b"BZh":
        opener = bz2.open
    else:
        if size < needed:
            return f"image data is truncated: the file has {size} bytes, its header needs {needed}"
        return None
    try:
        got = _stream_size(path, opener)
    except (EOFError, OSError, zlib.error, ValueError) as exc:
        return f"image data is truncated or corrupt ({type(exc).__name__}: {exc})"
    if got < needed:
        return f"image data is truncated: {got} bytes uncompressed, its header needs {needed}"
    return None


def _read_header(path: Path) -> _Header | str:
    """The image's layout and grid from its header, or the reason it cannot be used."""
    try:
        img = nib.load(str(path))
    except Exception as exc:  # ImageFileError, OSError, gzip/zlib errors, header errors, ...
        return f"cannot be read as NIfTI ({type(exc).__name__}: {exc})"
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        return f"is a {type(img).__name__}, not a NIfTI image"
    shape = tuple(int(n) for n in img.shape)
    if any(n == 0 for n in shape):
        return f"image has zero voxels (shape {shape})"
    layout = _spatial_layout(shape)
    if layout is None:
        return (f"unsupported image shape {shape}; expected (X, Y), (X, Y, 1), (X, Y, Z) or "
                "(X, Y, Z, C) with channels last")
    spatial, channels = layout
    try:
        grid = Grid(spatial, np.asarray(img.affine, dtype=np.float64))
    except (ValueError, TypeError) as exc:
        return f"invalid geometry: {exc}"
    proxy = img.dataobj
    try:
        offset = int(getattr(proxy, "offset", img.header.get_data_offset()))
        itemsize = np.dtype(getattr(proxy, "dtype", img.header.get_data_dtype())).itemsize
    except Exception as exc:
        return f"cannot interpret the header ({type(exc).__name__}: {exc})"
    try:
        problem = _data_problem(path, offset + int(np.prod(shape)) * itemsize)
    except OSError as exc:
        return f"cannot be read ({type(exc).__name__}: {exc})"
    if problem:
        return problem
    return _Header(len(spatial), channels, grid)


def _grid_difference(a, b) -> str | None:
    if a.shape != b.shape:
        return f"shape {a.shape}"
    diff = float(np.abs(a.affine_matrix - b.affine_matrix).max())
    if diff > _GRID_ATOL:
        return f"affine (largest difference {diff:.4g})"
    return None
