"""Validation of manifest pairs (:func:`validate_pairs`): structure, files and image headers, every
problem listed with its row and column (see :mod:`.manifest`). Needs neither pydra nor nipype."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from rdmm_pipelines.evaluation import read_points

from .nifti_headers import _grid_difference, _Header, _read_header
from .pair_spec import (
    _IMAGE_COLUMNS,
    _MASK_COLUMNS,
    _MAP_COLUMNS,
    _MIN_AXIS,
    _PAIRED_COLUMNS,
    PATH_COLUMNS,
    PairSpec,
    _id_problem,
    _where,
)

__all__ = ["validate_pairs"]


def _problems(pairs: Sequence[PairSpec], check_images: bool, absent: Iterable[str] = (),
              check_files: bool = True) -> list[str]:
    """All problems of ``pairs``, in row order. ``absent``: columns missing from the header
    (already reported there, so their empty cells are not reported again); without
    ``check_files`` only the structure is checked."""
    absent = set(absent)
    problems: list[str] = []
    seen_ids: dict[str, PairSpec] = {}
    seen_folded: dict[str, PairSpec] = {}
    headers: dict[Path, _Header | str] = {}
    points: dict[Path, int | str] = {}

    def header(p: Path) -> _Header | str:
        if p not in headers:
            headers[p] = _read_header(p)
        return headers[p]

    def n_points(p: Path) -> int | str:
        if p not in points:
            try:
                points[p] = int(read_points(p).shape[0])
            except (ValueError, OSError) as exc:
                points[p] = f"cannot read the points ({exc})"
        return points[p]

    for spec in pairs:
        # ---- id
        if "id" not in absent:
            bad = _id_problem(spec.id)
            if bad:
                problems.append(f"{_where(spec, 'id')}: {bad}")
            elif spec.id in seen_ids:
                first = seen_ids[spec.id]
                problems.append(f"{_where(spec, 'id')}: duplicate id {spec.id!r} "
                                f"(also {_where(first)})")
            elif spec.id.lower() in seen_folded:
                first = seen_folded[spec.id.lower()]
                problems.append(
                    f"{_where(spec, 'id')}: id {spec.id!r} differs only in case from "
                    f"{first.id!r} ({_where(first)}); they collide on case-insensitive file systems")
            if spec.id and not bad:
                seen_ids.setdefault(spec.id, spec)
                seen_folded.setdefault(spec.id.lower(), spec)
        # ---- required images, pairing of optional columns
        for col in _IMAGE_COLUMNS:
            if getattr(spec, col) is None and col not in absent:
                problems.append(f"{_where(spec, col)}: empty (required)")
        for a, b in _PAIRED_COLUMNS:
            has_a, has_b = getattr(spec, a) is not None, getattr(spec, b) is not None
            if has_a != has_b:
                given, missing = (a, b) if has_a else (b, a)
                problems.append(f"{_where(spec, missing)}: empty, but '{given}' is given "
                                f"(give both or neither)")
        if not check_files:
            continue
        # ---- files
        usable: dict[str, Path] = {}
        for col in PATH_COLUMNS:
            p = getattr(spec, col)
            if p is None:
                continue
            if not p.exists():
                problems.append(f"{_where(spec, col)}: no such file: {p}")
            elif not p.is_file():
                problems.append(f"{_where(spec, col)}: not a regular file: {p}")
            else:
                usable[col] = p
        if not check_images:
            continue
        # ---- image headers
        info: dict[str, _Header] = {}
        for col in (*_IMAGE_COLUMNS, *_MAP_COLUMNS, *_MASK_COLUMNS):
            if col in usable:
                h = header(usable[col])
                if isinstance(h, str):
                    problems.append(f"{_where(spec, col)}: {usable[col]}: {h}")
                else:
                    info[col] = h
        fixed, moving = info.get("fixed"), info.get("moving")
        for col, h in (("fixed", fixed), ("moving", moving)):
            if h is not None and min(h.grid.shape) < _MIN_AXIS:
                problems.append(f"{_where(spec, col)}: image is too small to register "
                                f"(shape {h.grid.shape}; every axis needs >= {_MIN_AXIS} voxels)")
        if fixed is not None and moving is not None:
            if fixed.ndim != moving.ndim:
                problems.append(f"{_where(spec, 'moving')}: moving image is {moving.ndim}D but "
                                f"the fixed image is {fixed.ndim}D")
            elif fixed.channels != moving.channels:
                problems.append(f"{_where(spec, 'moving')}: moving image has {moving.channels} "
                                f"channel(s) but the fixed image has {fixed.channels}")
        for col, ref in _MAP_COLUMNS.items():
            if col in info and ref in info:
                diff = _grid_difference(info[col].grid, info[ref].grid)
                if diff:
                    problems.append(
                        f"{_where(spec, col)}: not on the {ref} image's grid: {diff} differs "
                        f"({col}: {info[col].grid!r}; {ref}: {info[ref].grid!r})")
        for col, ref in _MASK_COLUMNS.items():
            if col not in info:
                continue
            if info[col].channels != 1:
                problems.append(f"{_where(spec, col)}: a mask has one channel; {usable[col]} has "
                                f"{info[col].channels}")
            if ref in info and info[col].ndim != info[ref].ndim:
                problems.append(f"{_where(spec, col)}: the mask is {info[col].ndim}D but the {ref} "
                                f"image is {info[ref].ndim}D")
        # ---- landmarks
        counts = {}
        for col in ("fixed_landmarks", "moving_landmarks"):
            if col in usable:
                n = n_points(usable[col])
                if isinstance(n, str):
                    problems.append(f"{_where(spec, col)}: {n}")
                else:
                    counts[col] = n
        if len(counts) == 2 and counts["fixed_landmarks"] != counts["moving_landmarks"]:
            problems.append(
                f"{_where(spec, 'moving_landmarks')}: {counts['moving_landmarks']} points but "
                f"fixed_landmarks has {counts['fixed_landmarks']}")
    return problems


def validate_pairs(pairs: Sequence[PairSpec], check_images: bool = True) -> list[str]:
    """Every problem of a list of pairs (empty if there is none).

    Always checked: at least one pair; ids present, file-name safe, unique (also ignoring case);
    ``fixed`` and ``moving`` given; labels and landmarks given in fixed/moving pairs; every named
    file exists. With ``check_images`` (default), also from the headers: each image and map is a
    readable, untruncated NIfTI with a valid affine; fixed and moving have the same dimension and
    channel count and at least 4 voxels per axis; label and region maps lie on their image's grid
    (shape and affine); masks have their image's dimension and one channel; landmark files are
    readable and hold the same number of points.

    Each problem starts with ``row N, column 'c'`` (``pair 'id'`` for pairs without a row).
    """
    pairs = list(pairs)
    if not pairs:
        return ["empty manifest: no pairs"]
    return _problems(pairs, check_images)
