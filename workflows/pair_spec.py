"""The pairs of a cohort manifest: :class:`PairSpec`, :class:`ManifestError`, the column names,
and the small path and id helpers that :mod:`.manifest`, :mod:`.manifest_checks` and
:mod:`.pairing` share. Needs neither pydra nor nipype."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["COLUMNS", "PATH_COLUMNS", "REQUIRED_COLUMNS", "ManifestError", "PairSpec"]

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
