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

The pair type and the column names live in :mod:`.pair_spec`, the checks in
:mod:`.manifest_checks`; this module reads and writes the files. None of them needs pydra or
nipype.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

from rdmm_pipelines.atomic import write_text_atomic

from .manifest_checks import _problems, validate_pairs
from .pair_spec import (
    COLUMNS,
    PATH_COLUMNS,
    REQUIRED_COLUMNS,
    ManifestError,
    PairSpec,
    _norm,
)

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
