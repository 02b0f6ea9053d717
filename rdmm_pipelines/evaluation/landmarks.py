"""Landmarks: reading point files, mapping fixed points to moving space, and the TRE.

Coordinates are **world RAS millimetres** (the nibabel convention used by every grid in this
package). ITK, ANTs (``antsApplyTransformsToPoints`` CSV files) and elastix write LPS physical
points: read those with ``read_points(path, convention="LPS")`` or convert with
:func:`lps_to_ras` (x and y change sign; the conversion is its own inverse).

The transform maps *fixed* points to *moving* points: a registration result stores, for every
fixed voxel, the moving point it takes its value from, so a fixed landmark ``f`` corresponds to
``T(f)`` in the moving image and the target registration error is ``|T(f_i) - m_i|``.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..core.interpolation import sample_voxel
from ..spatial import Grid

__all__ = ["read_points", "lps_to_ras", "ras_to_lps", "transform_points", "target_registration_error"]

logger = logging.getLogger(__name__)

_CONVENTIONS = ("RAS", "LPS")
#: mm: a landmark farther than this from a 2D image's plane gets a warning (its normal component is dropped)
_OFF_PLANE_MM = 1e-3
# a point may lie this many voxels outside the first/last voxel centre before it is "outside"
_OUTSIDE_TOL = 1e-6


# ---------------------------------------------------------------------------- reading
def read_points(path: str | os.PathLike, convention: str = "RAS") -> np.ndarray:
    """Read landmark points (world mm) from a text or CSV file.

    Formats:
        * **text**: one point per row, 2 or 3 whitespace-separated numbers (every row the same
          count); ``#`` starts a comment; blank lines are skipped. The elastix/transformix
          header (a line ``point`` followed by a line with the number of points) is accepted.
        * **CSV** (name ending in ``.csv``, or a first data line containing a comma): a header
          row naming columns ``x``, ``y`` and optionally ``z`` (case-insensitive); other columns
          (``label``, ``index``, ``t``, ``comment``, ...) are ignored. A CSV without a header
          may hold 2 or 3 numeric columns.

    2-column points get z = 0.

    Args:
        path: the file.
        convention: ``"RAS"`` (default, as stored) or ``"LPS"`` (ITK/ANTs/elastix physical points,
            converted to RAS on reading).

    Returns:
        (P, 3) float64 world RAS mm, P >= 1.

    Raises:
        FileNotFoundError: no such file. ValueError: malformed row (naming the file and line),
        no points, or an unknown convention.
    """
    if convention.upper() not in _CONVENTIONS:
        raise ValueError(f"unknown point convention {convention!r}; use 'RAS' or 'LPS'")
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such point file")
    try:
        text = p.read_text()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{p}: not a text file ({exc})") from exc
    rows = _data_lines(text)
    if not rows:
        raise ValueError(f"{p}: no points found (the file is empty or only comments)")
    is_csv = p.suffix.lower() == ".csv" or "," in rows[0][1]
    points = _parse_csv(rows, p) if is_csv else _parse_text(rows, p)
    if points.shape[0] == 0:
        raise ValueError(f"{p}: no points found (only a header)")
    return lps_to_ras(points) if convention.upper() == "LPS" else points


def _data_lines(text: str) -> list[tuple[int, str]]:
    """(1-based line number, content without comment) of the non-blank lines."""
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        content = line.split("#", 1)[0].strip()
        if content:
            out.append((n, content))
    return out


def _number(token: str, p: Path, line: int) -> float:
    try:
        value = float(token)
    except ValueError:
        raise ValueError(f"{p}, line {line}: {token!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{p}, line {line}: coordinate {token!r} is not finite")
    return value


def _pad3(coords: list[list[float]]) -> np.ndarray:
    arr = np.asarray(coords, dtype=np.float64).reshape(len(coords), -1)
    if arr.shape[1] == 2:
        arr = np.concatenate([arr, np.zeros((arr.shape[0], 1))], axis=1)
    return arr


def _parse_text(rows: list[tuple[int, str]], p: Path) -> np.ndarray:
    expected_count = None
    first = rows[0][1].lower()
    if first in ("point", "index"):
        if first == "index":
            raise ValueError(
                f"{p}, line {rows[0][0]}: elastix 'index' points are voxel indices; "
                "give world points ('point')"
            )
        rows = rows[1:]
        if rows and len(rows[0][1].split()) == 1:
            line, token = rows[0]
            try:
                expected_count = int(token)
            except ValueError:
                raise ValueError(f"{p}, line {line}: expected the number of points, got {token!r}") from None
            rows = rows[1:]
    coords: list[list[float]] = []
    ncols = None
    for line, content in rows:
        tokens = content.split()
        if len(tokens) not in (2, 3):
            raise ValueError(f"{p}, line {line}: expected 2 or 3 coordinates, got {len(tokens)}: {content!r}")
        if ncols is None:
            ncols = len(tokens)
        elif len(tokens) != ncols:
            raise ValueError(
                f"{p}, line {line}: {len(tokens)} coordinates but earlier rows have {ncols}"
            )
        coords.append([_number(t, p, line) for t in tokens])
    if expected_count is not None and expected_count != len(coords):
        raise ValueError(f"{p}: header says {expected_count} points but the file holds {len(coords)}")
    return _pad3(coords) if coords else np.zeros((0, 3))


def _parse_csv(rows: list[tuple[int, str]], p: Path) -> np.ndarray:
    lines = [n for n, _ in rows]
    records = list(csv.reader([c for _, c in rows]))
    header = [h.strip().strip('"').strip().lower() for h in records[0]]
    try:
        [float(h) for h in header]
        numeric_first = True
    except ValueError:
        numeric_first = False
    if numeric_first:  # no header: 2 or 3 numeric columns
        columns = None
        body = list(zip(lines, records))
    else:
        if "x" not in header or "y" not in header:
            raise ValueError(
                f"{p}, line {lines[0]}: CSV header {records[0]} has no 'x' and 'y' columns"
            )
        columns = [header.index("x"), header.index("y")] + ([header.index("z")] if "z" in header else [])
        body = list(zip(lines[1:], records[1:]))
    coords: list[list[float]] = []
    ncols = None
    for line, rec in body:
        rec = [r.strip() for r in rec]
        if columns is None:
            if len(rec) not in (2, 3):
                raise ValueError(f"{p}, line {line}: expected 2 or 3 coordinates, got {len(rec)}")
            if ncols is not None and len(rec) != ncols:
                raise ValueError(f"{p}, line {line}: {len(rec)} coordinates but earlier rows have {ncols}")
            ncols = len(rec)
            coords.append([_number(t, p, line) for t in rec])
        else:
            if len(rec) <= max(columns):
                raise ValueError(
                    f"{p}, line {line}: {len(rec)} fields but the header has {len(header)}"
                )
            coords.append([_number(rec[c], p, line) for c in columns])
    return _pad3(coords) if coords else np.zeros((0, 3))


def lps_to_ras(points: np.ndarray) -> np.ndarray:
    """(…, 3) LPS world points -> RAS (negate x and y). Its own inverse; returns a new array."""
    out = np.array(points, dtype=np.float64, copy=True)
    if out.shape[-1] != 3:
        raise ValueError(f"points must have 3 components, got shape {out.shape}")
    out[..., :2] *= -1.0
    return out


#: RAS -> LPS is the same sign change
ras_to_lps = lps_to_ras


# ---------------------------------------------------------------------------- mapping
def _check_points(points: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"{name} must have shape (P, 3) (world RAS mm), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contain NaN or infinite coordinates")
    return arr


def transform_points(
    points_world: np.ndarray, moving_voxels: Tensor, fixed_grid: Grid, moving_grid: Grid
) -> np.ndarray:
    """Map fixed-space world points to moving-space world points.

    ``T(x) = A_m [V(A_f^-1 x), 1]``: the point's fixed voxel coordinates, the map ``V`` =
    ``moving_voxels`` interpolated there (linear, border padding), then moving voxel -> world.
    Points outside the fixed grid's voxel centres are logged as a warning (they get the map's
    border value). For 2D grids the component normal to the fixed plane is dropped.

    Args:
        points_world: (P, 3) world RAS mm in fixed space.
        moving_voxels: (1, d, *S_fixed) moving voxel indices per fixed voxel.
        fixed_grid: grid of the map (``S_fixed == fixed_grid.shape``).
        moving_grid: grid whose voxel indices ``moving_voxels`` holds.

    Returns:
        (P, 3) float64 world RAS mm in moving space.
    """
    pts = _check_points(points_world, "fixed points")
    d = fixed_grid.ndim
    expected = (1, d, *fixed_grid.shape)
    if tuple(moving_voxels.shape) != expected:
        raise ValueError(f"moving_voxels shape {tuple(moving_voxels.shape)} must be {expected}")
    if moving_grid.ndim != d:
        raise ValueError(f"fixed grid is {d}D but moving grid is {moving_grid.ndim}D")
    vox = fixed_grid.world_to_voxel(pts)  # (P, d)
    outside = _outside(pts, fixed_grid)
    if outside.any():
        idx = np.flatnonzero(outside)
        logger.warning(
            "%d of %d points lie outside the fixed grid %r (point indices %s); they get the map's "
            "border value", idx.size, pts.shape[0], fixed_grid, idx[:20].tolist())
    field = moving_voxels.detach().to(dtype=torch.float64)
    coords = torch.as_tensor(vox.T, dtype=torch.float64, device=field.device)
    coords = coords.reshape(1, d, pts.shape[0], *([1] * (d - 1)))
    mv = sample_voxel(field, coords, mode="linear", padding="border")  # (1, d, P, 1[, 1])
    mv = mv.reshape(d, pts.shape[0]).T.cpu().numpy()
    return moving_grid.voxel_to_world(mv)


def _outside(points: np.ndarray, grid: Grid) -> np.ndarray:
    """(P,) bool: the world points whose voxel coordinates lie beyond the grid's first/last voxel
    centres by more than the tolerance."""
    vox = grid.world_to_voxel(points)
    upper = np.asarray(grid.shape, dtype=np.float64) - 1.0
    return np.any((vox < -_OUTSIDE_TOL) | (vox > upper + _OUTSIDE_TOL), axis=1)


def _summary(errors: np.ndarray) -> dict[str, float]:
    return {
        "mean": float(errors.mean()),
        "std": float(errors.std()),
        "median": float(np.median(errors)),
        "max": float(errors.max()),
    }


def _onto_plane(points: np.ndarray, grid: Grid) -> np.ndarray:
    """Project world points onto a 2D grid's plane (3D grids: unchanged)."""
    if grid.ndim == 3:
        return points
    return grid.voxel_to_world(grid.world_to_voxel(points))


def target_registration_error(
    fixed_points: np.ndarray,
    moving_points: np.ndarray,
    moving_voxels: Tensor,
    fixed_grid: Grid,
    moving_grid: Grid,
) -> dict:
    """Target registration error of corresponding landmarks, in mm.

    ``e_i = |T(f_i) - m_i|`` with ``T`` from :func:`transform_points`, and the error before
    registration ``b_i = |f_i - m_i|``. For 2D grids the points are first projected onto the
    images' planes, so a file's z = 0 does not count against a plane at another height.

    Args:
        fixed_points: (P, 3) world RAS mm landmarks in the fixed image.
        moving_points: (P, 3) the corresponding landmarks in the moving image.
        moving_voxels, fixed_grid, moving_grid: the transform (see :func:`transform_points`).

    Returns:
        ``{"n_points": P, "errors": [e_i], "mean", "std" (ddof 0), "median", "max",
        "before": {"errors": [b_i], "mean", "std", "median", "max"}, "warnings": [...]}``; the
        warnings name points outside the fixed grid and, for 2D grids, points off the image's
        plane (their normal component dropped); evaluation records carry them.

    Raises:
        ValueError: the point counts differ or are zero.
    """
    f = _check_points(fixed_points, "fixed points")
    m = _check_points(moving_points, "moving points")
    if f.shape[0] != m.shape[0]:
        raise ValueError(
            f"landmark counts differ: {f.shape[0]} fixed points but {m.shape[0]} moving points"
        )
    if f.shape[0] == 0:
        raise ValueError("no landmarks given (0 points)")
    warnings = []
    for name, pts, grid in (("fixed", f, fixed_grid), ("moving", m, moving_grid)):
        # z = 0 is what a file of 2 coordinates gives (documented: it does not count); a third
        # coordinate that puts a point off the plane is dropped, and said so
        off = np.linalg.norm(pts - _onto_plane(pts, grid), axis=1) * (np.abs(pts[:, 2]) > _OFF_PLANE_MM)
        if off.max() > _OFF_PLANE_MM:
            warnings.append(f"{int((off > _OFF_PLANE_MM).sum())} of {len(off)} {name} points lie off the 2D image's "
                            f"plane (up to {off.max():.3g} mm): their component normal to it was dropped")
    f = _onto_plane(f, fixed_grid)
    m = _onto_plane(m, moving_grid)
    outside = np.flatnonzero(_outside(f, fixed_grid))
    if outside.size:
        warnings.append(f"{outside.size} of {f.shape[0]} fixed points lie outside the fixed grid (point indices "
                        f"{outside[:20].tolist()}): they get the map's border value")
    mapped = _onto_plane(transform_points(f, moving_voxels, fixed_grid, moving_grid), moving_grid)
    errors = np.linalg.norm(mapped - m, axis=1)
    before = np.linalg.norm(f - m, axis=1)
    return {
        "n_points": int(f.shape[0]),
        "errors": errors.tolist(),
        **_summary(errors),
        "before": {"errors": before.tolist(), **_summary(before)},
        "warnings": warnings,
    }
