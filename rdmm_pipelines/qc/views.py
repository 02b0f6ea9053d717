"""The 2D views that QC figures draw, in a standard anatomical orientation.

A 2D image has one view, drawn in array order (array axis 0 down the rows, axis 1 across).

A 3D image is first brought to the closest RAS orientation of its affine (an axis permutation and
flips, no resampling: :func:`nibabel.orientations.io_orientation`), so that array index j grows
towards the subject's Right, Anterior and Superior for j = 0, 1, 2. Its three views are then drawn
as nilearn and niworkflows draw them:

* sagittal (normal R): anterior on the right, superior at the top;
* coronal (normal A): superior at the top, the subject's left on the left of the panel
  ("neurological") or on the right ("radiological");
* axial (normal S): anterior at the top, left/right as for the coronal view.

Each view knows its edge letters (L/R, A/P, S/I), which the figures print on every panel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..spatial import Grid

__all__ = ["CONVENTIONS", "Orientation", "View", "views_for", "slice_center"]

#: left/right display conventions of the coronal and axial views
CONVENTIONS = ("neurological", "radiological")

# world axis j of RAS -> (letter at low index, letter at high index)
_LETTERS = (("L", "R"), ("P", "A"), ("I", "S"))


@dataclass(frozen=True)
class Orientation:
    """Array axes -> closest RAS axes: canonical axis j is array axis ``perm[j]``, reversed when
    ``flip[j]`` (so that its index grows towards R, A or S)."""

    perm: tuple[int, ...]
    flip: tuple[bool, ...]

    @classmethod
    def of(cls, grid: Grid) -> "Orientation":
        """The orientation of a 3D grid's affine (identity for a 2D grid)."""
        if grid.ndim != 3:
            return cls(tuple(range(grid.ndim)), (False,) * grid.ndim)
        from nibabel.orientations import io_orientation

        ornt = io_orientation(grid.affine_matrix)  # (3, 2): per array axis (world axis, +-1)
        perm, flip = [0, 0, 0], [False, False, False]
        for k, (world, sign) in enumerate(ornt):
            perm[int(world)] = k
            flip[int(world)] = bool(sign < 0)
        return cls(tuple(perm), tuple(flip))

    @property
    def is_identity(self) -> bool:
        return self.perm == tuple(range(len(self.perm))) and not any(self.flip)

    def array(self, arr: np.ndarray) -> np.ndarray:
        """(*S) in array order -> (*S') in canonical order."""
        out = np.transpose(arr, self.perm)
        for j, f in enumerate(self.flip):
            if f:
                out = np.flip(out, j)
        return np.ascontiguousarray(out)

    def components(self, field: np.ndarray) -> np.ndarray:
        """(d, *S) per-axis components (e.g. moving-voxel coordinates) -> canonical order of both
        the components and the voxels (a component keeps its values: iso-lines are unchanged)."""
        return np.stack([self.array(field[k]) for k in self.perm])

    def index(self, idx: tuple[int, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
        """A voxel index of the array -> its canonical index."""
        out = []
        for j, k in enumerate(self.perm):
            out.append(shape[k] - 1 - idx[k] if self.flip[j] else idx[k])
        return tuple(out)

    def spacing(self, spacing) -> tuple[float, ...]:
        return tuple(float(spacing[k]) for k in self.perm)

    def shape(self, shape) -> tuple[int, ...]:
        return tuple(int(shape[k]) for k in self.perm)


@dataclass(frozen=True)
class View:
    """One 2D view of a (canonical) array: the whole 2D image, or a 3D slice normal to ``axis``
    at ``index``; ``rows``/``cols`` are the in-plane axes drawn down and across, reversed when
    ``flip_rows``/``flip_cols``; ``marks`` = letters at the (top, bottom, left, right) edges."""

    name: str
    label: str
    rows: int
    cols: int
    axis: int | None = None
    index: int | None = None
    flip_rows: bool = False
    flip_cols: bool = False
    marks: tuple[str, str, str, str] | None = None

    def take(self, arr: np.ndarray) -> np.ndarray:
        """(*S) -> the (n_rows, n_cols) panel, top row first."""
        sl = arr if self.axis is None else np.take(arr, self.index, axis=self.axis)
        if self.axis is not None and self.rows > self.cols:
            sl = sl.T
        if self.flip_rows:
            sl = sl[::-1]
        if self.flip_cols:
            sl = sl[:, ::-1]
        return sl


def slice_center(slice_at: Any, shape: tuple[int, ...], fixed_labels: np.ndarray | None) -> tuple[int, ...]:
    """The voxel (array order) that the 3D views cut through: "center", a label value of
    ``fixed_labels`` (the centre of its bounding box) or d voxel indices."""
    if isinstance(slice_at, str):
        if slice_at != "center":
            raise ValueError(
                f"slice_at must be 'center', a label value or {len(shape)} voxel indices; got {slice_at!r}")
        return tuple(n // 2 for n in shape)
    if isinstance(slice_at, (int, np.integer)) and not isinstance(slice_at, bool):
        if fixed_labels is None:
            raise ValueError(f"slice_at={slice_at} (a label value) needs fixed_labels")
        where = np.argwhere(fixed_labels == int(slice_at))
        if where.size == 0:
            present = sorted(int(v) for v in np.unique(fixed_labels))
            raise ValueError(f"label {slice_at} is not in the fixed labels (present: {present})")
        return tuple(int(round((lo + hi) / 2)) for lo, hi in zip(where.min(0), where.max(0)))
    if isinstance(slice_at, (tuple, list)) and len(slice_at) == len(shape):
        idx = tuple(int(i) for i in slice_at)
        if any(not 0 <= i < n for i, n in zip(idx, shape)):
            raise ValueError(f"slice_at {idx} is outside the fixed grid of shape {shape}")
        return idx
    raise ValueError(f"slice_at must be 'center', a label value or {len(shape)} voxel indices; got {slice_at!r}")


def views_for(shape: tuple[int, ...], center: tuple[int, ...], convention: str = "neurological") -> list[View]:
    """The views of a canonical array of ``shape`` (2D: one; 3D: sagittal, coronal, axial through
    ``center``, a canonical voxel index)."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    if len(shape) == 2:
        return [View("", "", 0, 1)]
    radiological = convention == "radiological"
    lr = _LETTERS[0][::-1] if radiological else _LETTERS[0]  # letters at the (left, right) edges
    out = []
    for axis, name, rows, cols in ((0, "sagittal", 2, 1), (1, "coronal", 2, 0), (2, "axial", 1, 0)):
        flip_cols = radiological and cols == 0
        left, right = lr if cols == 0 else _LETTERS[cols]
        top, bottom = _LETTERS[rows][1], _LETTERS[rows][0]  # S / A at the top
        label = f"{name}: slice {center[axis]} of {shape[axis]}"
        out.append(View(name, label, rows, cols, axis, center[axis], flip_rows=True, flip_cols=flip_cols,
                        marks=(top, bottom, left, right)))
    return out
