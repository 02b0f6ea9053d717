"""Cohort manifests: the list of (fixed, moving) pairs a cohort workflow registers.

A manifest is a CSV or TSV file (the delimiter is sniffed from the header line, the file name's
suffix breaking ties) with one row per pair and a header naming its columns (case-insensitive):

=================== ========== ==========================================================
column              required   content
=================== ========== ==========================================================
``id``              yes        unique pair name, a safe file-name component (letters,
                               digits, ``-``, ``_``, ``.``); names the pair's output folder
``fixed``           yes        NIfTI image (the target)
``moving``          yes        NIfTI image (the source)
``fixed_labels``    no         label map on the fixed image's grid (with ``moving_labels``)
``moving_labels``   no         label map on the moving image's grid (with ``fixed_labels``)
``moving_regions``  no         region map for a pre-defined RDMM regulariser, on the moving
                               image's grid
``fixed_landmarks`` no         point file (see :func:`rdmm_pipelines.evaluation.read_points`),
                               with ``moving_landmarks``, the same number of points
``moving_landmarks`` no        point file, with ``fixed_landmarks``
``fixed_mask``      no         mask of the fixed image (NIfTI, nonzero = inside; any grid
                               of its world space): our methods measure the similarity,
                               also in the affine stage, only inside it
``moving_mask``     no         mask of the moving image, the same way (either mask may be
                               given without the other)
``group``           no         free text (e.g. the subject), for grouping results
=================== ========== ==========================================================

Relative paths are resolved against the manifest's folder (``~`` is expanded; symbolic links are
not followed, so annexed or linked files keep their names). Rows are numbered as lines of the
file: the header is row 1, the first data row is row 2. Blank lines are skipped.

:func:`read_manifest` parses and validates the whole manifest before returning, and raises one
:class:`ManifestError` listing *every* problem (one per line, each with its row and column), so a
cohort run never starts on a manifest that would fail half-way. Images are checked from their
headers only (no voxel data is read): readable NIfTI, a supported layout, a valid affine, and
enough bytes on disk for the data the header promises (the cheap gzip size trailer, with a full
streaming check only when the trailer disagrees); a mask has its image's dimension and one
channel. Intensity values (NaN, constant images), integer label values and a mask's voxels (not
empty, overlapping its image) are checked when a registration reads the data.

The generators in :mod:`.pairing` (``pairs_to_atlas``, ``all_pairs``, ``longitudinal_pairs``)
build pair lists from folder trees; :func:`write_manifest` writes them. Pair ids ``A_to_B`` mean "moving A
registered to fixed B".

This module needs neither pydra nor nipype.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rdmm_pipelines.atomic import write_text_atomic
from rdmm_pipelines.evaluation import read_points

from .nifti_headers import _grid_difference, _Header, _read_header

__all__ = [
    "COLUMNS",
    "PATH_COLUMNS",
    "REQUIRED_COLUMNS",
    "ManifestError",
    "PairSpec",
    "read_manifest",
    "validate_pairs",
    "write_manifest",
]

logger = logging.getLogger(__name__)

COLUMNS = ("id", "fixed", "moving", "fixed_labels", "moving_labels", "moving_regions",
           "fixed_landmarks", "moving_landmarks", "fixed_mask", "moving_mask", "group")
REQUIRED_COLUMNS = ("id", "fixed", "moving")
PATH_COLUMNS = ("fixed", "moving", "fixed_labels", "moving_labels", "moving_regions",
                "fixed_landmarks", "moving_landmarks", "fixed_mask", "moving_mask")
_IMAGE_COLUMNS = ("fixed", "moving")
# label-like maps and the image whose grid they must share
_MAP_COLUMNS = {"fixed_labels": "fixed", "moving_labels": "moving", "moving_regions": "moving"}
# masks and the image whose world space (not grid) they share: the same dimension, one channel
_MASK_COLUMNS = {"fixed_mask": "fixed", "moving_mask": "moving"}
# columns that must be given together
_PAIRED_COLUMNS = (("fixed_labels", "moving_labels"), ("fixed_landmarks", "moving_landmarks"))

_SAFE_ID = re.compile(r"[A-Za-z0-9._-]+")
_MAX_ID_LEN = 200
# register() refuses images with an axis shorter than this
_MIN_AXIS = 4
_NIFTI_SUFFIXES = (".nii.gz", ".nii")


# ------------------------------------------------------------------------------------- types
@dataclass(frozen=True)
class PairSpec:
    """One registration pair of a manifest.

    Attributes:
        id: unique, file-name-safe pair name.
        fixed, moving: NIfTI images.
        fixed_labels, moving_labels: optional label maps (both or neither), on their image's grid.
        moving_regions: optional region map for a pre-defined RDMM regulariser, on the moving grid.
        fixed_landmarks, moving_landmarks: optional point files (both or neither).
        fixed_mask, moving_mask: optional masks (nonzero = inside) of the fixed and the moving
            image, on any grid of their image's world space; each may come without the other.
        group: optional free text (e.g. the subject).
        row: the pair's line in its manifest (header = 1, first pair = 2); generated pairs get
            the line they take when written; 0 means "not from a file".
    """

    id: str
    fixed: Path
    moving: Path
    fixed_labels: Path | None = None
    moving_labels: Path | None = None
    moving_regions: Path | None = None
    fixed_landmarks: Path | None = None
    moving_landmarks: Path | None = None
    fixed_mask: Path | None = None
    moving_mask: Path | None = None
    group: str | None = None
    row: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", "" if self.id is None else str(self.id))
        for name in PATH_COLUMNS:
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                value = Path(value) if str(value).strip() else None
                object.__setattr__(self, name, value)
        if self.group is not None:
            group = str(self.group)
            object.__setattr__(self, "group", group if group.strip() else None)
        object.__setattr__(self, "row", int(self.row))

    def cells(self) -> dict[str, str]:
        """The pair as manifest cells (column -> text; empty for absent values)."""
        out = {}
        for name in COLUMNS:
            value = getattr(self, name)
            out[name] = "" if value is None else str(value)
        return out


class ManifestError(ValueError):
    """A manifest (or a list of pairs) with problems; ``problems`` lists all of them."""

    def __init__(self, problems: Sequence[str], source: str | os.PathLike | None = None):
        self.problems = list(problems)
        self.source = None if source is None else str(source)
        n = len(self.problems)
        head = f"{self.source}: " if self.source else ""
        head += f"{n} problem{'s' if n != 1 else ''} in the manifest:"
        super().__init__("\n".join([head] + [f"  {p}" for p in self.problems]))

    def __reduce__(self):  # picklable across worker processes
        return (type(self), (self.problems, self.source))


# ------------------------------------------------------------------------------------- helpers
def _where(spec: PairSpec, column: str | None = None) -> str:
    loc = f"row {spec.row}" if spec.row > 0 else f"pair {spec.id!r}"
    return f"{loc}, column '{column}'" if column else loc


def _norm(path: Path, base: Path | None = None) -> Path:
    """Absolute, normalised path (``~`` expanded, ``..`` collapsed, links *not* followed)."""
    p = path.expanduser()
    if not p.is_absolute():
        p = (base if base is not None else Path.cwd()) / p
    return Path(os.path.normpath(p))


def _natural_key(text: str) -> tuple:
    parts = re.split(r"(\d+)", text)
    return tuple(int(t) if i % 2 else t.lower() for i, t in enumerate(parts)) + (text,)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in _NIFTI_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return path.stem


def _nifti_ext(path: Path) -> str:
    name = path.name.lower()
    for suffix in _NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return path.name[-len(suffix):]
    return path.suffix


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


def _id_problem(pair_id: str) -> str | None:
    if not pair_id:
        return "empty (required)"
    if not _SAFE_ID.fullmatch(pair_id):
        bad = sorted({c for c in pair_id if not _SAFE_ID.fullmatch(c)})
        return (f"id {pair_id!r} is not a safe file name: it contains {''.join(bad)!r} "
                "(use only letters, digits, '-', '_' and '.')")
    if set(pair_id) == {"."}:
        return f"id {pair_id!r} is not a safe file name (only dots)"
    if len(pair_id) > _MAX_ID_LEN:
        return f"id is {len(pair_id)} characters long (at most {_MAX_ID_LEN})"
    return None


# ----------------------------------------------------------------------------------- validation
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


# -------------------------------------------------------------------------------------- reading
def _delimiter(header_line: str, path: Path) -> str:
    tabs, commas = "\t" in header_line, "," in header_line
    if tabs != commas:
        return "\t" if tabs else ","
    return "\t" if path.suffix.lower() in (".tsv", ".tab") else ","


def read_manifest(path: str | os.PathLike, check_images: bool = True) -> list[PairSpec]:
    """Read and validate a CSV/TSV manifest (see the module docstring).

    Args:
        path: the manifest; relative paths in it are resolved against its folder.
        check_images: also check image headers, grids and landmark counts (default; see
            :func:`validate_pairs`).

    Returns:
        The pairs in file order, paths absolute.

    Raises:
        FileNotFoundError: no such manifest. ManifestError: every problem found, one per line.
    """
    src = Path(path)
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such manifest file")
    base = _norm(src).parent
    try:
        text = src.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError([f"not a UTF-8 text file ({exc})"], src) from exc

    first = next((ln for ln in text.splitlines() if ln.strip()), None)
    if first is None:
        raise ManifestError(["empty manifest: no header and no pairs"], src)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(first, src))

    problems: list[str] = []
    columns: list[str | None] | None = None
    absent: set[str] = set()
    pairs: list[PairSpec] = []
    row_problems: dict[int, list[str]] = {}
    line_end = 0
    try:
        for cells in reader:
            row, line_end = line_end + 1, reader.line_num
            cells = [c.strip() for c in cells]
            if not any(cells):
                continue
            if columns is None:
                columns = []
                unknown, dup = [], []
                for i, name in enumerate(cells):
                    key = name.lower()
                    if not key:  # e.g. a trailing delimiter: fine while its cells stay empty
                        columns.append("")
                    elif key in COLUMNS and key not in columns:
                        columns.append(key)
                    else:
                        (dup if key in COLUMNS else unknown).append(name)
                        columns.append(None)
                if unknown:
                    problems.append(
                        f"row {row} (header): unknown column{'s' if len(unknown) > 1 else ''} "
                        f"{', '.join(repr(u) for u in unknown)}; valid columns are "
                        f"{', '.join(COLUMNS)}")
                if dup:
                    problems.append(f"row {row} (header): repeated column "
                                    f"{', '.join(repr(d) for d in dup)}")
                absent = {c for c in REQUIRED_COLUMNS if c not in columns}
                if absent:
                    problems.append(
                        f"row {row} (header): missing required column"
                        f"{'s' if len(absent) > 1 else ''} "
                        f"{', '.join(repr(c) for c in REQUIRED_COLUMNS if c in absent)}")
                continue
            if len(cells) > len(columns):
                row_problems.setdefault(row, []).append(
                    f"row {row}: {len(cells)} cells but the header has {len(columns)} columns")
            for i, (c, v) in enumerate(zip(columns, cells)):
                if c == "" and v:
                    row_problems.setdefault(row, []).append(
                        f"row {row}: value {v!r} in column #{i + 1}, which has no header name")
            values = {c: v for c, v in zip(columns, cells) if c}
            kwargs: dict[str, object] = {"id": values.get("id", ""), "row": row,
                                         "group": values.get("group") or None}
            for col in PATH_COLUMNS:
                cell = values.get(col, "")
                kwargs[col] = _norm(Path(cell), base) if cell else None
            pairs.append(PairSpec(**kwargs))
    except csv.Error as exc:
        kind = "TSV" if reader.dialect.delimiter == "\t" else "CSV"
        problems.append(f"row {line_end + 1}: malformed {kind} ({exc})")

    if columns is not None and not pairs:
        problems.append("empty manifest: a header but no pairs")
    found = _problems(pairs, check_images, absent) if pairs else []
    # merge per-row problems (cell counts) with validation problems, keeping row order
    ordered: list[tuple[int, int, str]] = []
    for i, p in enumerate(found):
        m = re.match(r"row (\d+)", p)
        ordered.append((int(m.group(1)) if m else 0, i, p))
    for r, ps in row_problems.items():
        ordered += [(r, -1, p) for p in ps]
    problems += [p for _, _, p in sorted(ordered)]
    if problems:
        raise ManifestError(problems, src)
    logger.info("%s: %d pairs", src, len(pairs))
    return pairs


# -------------------------------------------------------------------------------------- writing
def write_manifest(pairs: Sequence[PairSpec], path: str | os.PathLike, *,
                   relative: bool = False) -> Path:
    """Write ``pairs`` as a manifest, atomically (temporary file + ``os.replace``).

    The delimiter follows the suffix: ``.csv`` comma, ``.tsv``/``.tab`` tab. Only the optional
    columns some pair uses are written. The pairs' ``row`` values are not written (reading the file
    numbers the rows again: the i-th pair is row i + 2).

    Args:
        pairs: the pairs; their ids, required images and fixed/moving pairing are checked (files
            need not exist yet).
        path: destination file.
        relative: write paths relative to the manifest's folder (a portable cohort folder)
            instead of absolute.

    Returns:
        The written path.

    Raises:
        ValueError: unknown suffix. ManifestError: structural problems of ``pairs``.
    """
    dest = Path(path)
    suffix = dest.suffix.lower()
    if suffix not in (".csv", ".tsv", ".tab"):
        raise ValueError(f"{dest}: manifest name must end in .csv, .tsv or .tab")
    pairs = list(pairs)
    problems = _problems(pairs, False, check_files=False) if pairs else ["empty manifest: no pairs"]
    if problems:
        raise ManifestError(problems, dest)
    if not dest.parent.is_dir():
        raise ValueError(f"{dest}: directory {dest.parent} does not exist")
    base = _norm(dest).parent
    used = [c for c in COLUMNS if c in REQUIRED_COLUMNS or any(getattr(p, c) is not None for p in pairs)]
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, delimiter="," if suffix == ".csv" else "\t", lineterminator="\n")
    writer.writerow(used)
    for spec in pairs:
        cells = spec.cells()
        if relative:
            for col in PATH_COLUMNS:
                value = getattr(spec, col)
                if value is not None:
                    cells[col] = os.path.relpath(_norm(value), base)
        writer.writerow([cells[c] for c in used])
    write_text_atomic(dest, buf.getvalue())
    logger.info("wrote %s (%d pairs)", dest, len(pairs))
    return dest
