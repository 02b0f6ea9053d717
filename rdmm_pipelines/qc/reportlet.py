"""The before/after "flicker" reportlet: an SVG that alternates between the fixed image and the
warped moving image, both under the same contours of the fixed image, for each view (the kind of
reportlet fMRIPrep and niworkflows users know). A misregistration shows as anatomy jumping across
the contours; a good registration as only the contrast changing.

The SVG holds two PNG frames (base64, so the file stands alone) and a CSS animation that shows the
second frame every other second; hovering pauses it. Views and orientation are those of the QC
figure (:mod:`.views`): a 3D image is drawn sagittal, coronal and axial in RAS orientation with
L/R, A/P, S/I letters.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..spatial import Image
from .display import _on_grid, _orientation_marks, _robust_range, _spatial
from .views import Orientation, slice_center, views_for

__all__ = ["flicker_svg", "FLICKER_PERIOD_S"]

FLICKER_PERIOD_S = 2.0  # one fixed + one warped frame
_PANEL_IN = 3.0  # the longer side of each view, inches at 100 dpi
_DPI = 100
_CONTOUR_COLOR = "#ff2d2d"  # iso-lines of the fixed image
_LABEL_COLOR = "#00e5ff"  # boundaries of the fixed labels


def _contour_levels(norm: np.ndarray) -> list[float]:
    """Two iso-levels of a normalised image ([0, 1]) that trace its anatomy: the 35th and 70th
    percentiles of its foreground (values above 0.1)."""
    fg = norm[norm > 0.1]
    if fg.size < 10:
        return [0.5]
    levels = sorted({round(float(v), 4) for v in np.percentile(fg, [35, 70])})
    return levels


def _box_smooth(a: np.ndarray) -> np.ndarray:
    """A 3x3 mean of a 2D array (edges replicated): contours that follow anatomy, not noise."""
    p = np.pad(a, 1, mode="edge")
    return sum(p[i:i + a.shape[0], j:j + a.shape[1]] for i in range(3) for j in range(3)) / 9.0


def _frame(arrays: list[np.ndarray], contours: list[list[tuple[np.ndarray, list[float], str]]], views, spacing,
           vrange: tuple[float, float], caption: str) -> tuple[bytes, tuple[int, int]]:
    """One frame: the views side by side, each with its contours; PNG bytes and (width, height) px."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sizes = []
    for view, arr in zip(views, arrays):
        ha, wb = arr.shape[0] * spacing[view.rows], arr.shape[1] * spacing[view.cols]
        scale = _PANEL_IN / max(ha, wb)
        sizes.append((wb * scale, ha * scale))
    top, gap = 0.35, 0.1
    width = sum(w for w, _ in sizes) + gap * (len(sizes) + 1)
    height = max(h for _, h in sizes) + top + gap
    fig = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(fig)
    fig.patch.set_facecolor("black")
    left = gap
    for view, arr, lines, (w, h) in zip(views, arrays, contours, sizes):
        ax = fig.add_axes([left / width, gap / height, w / width, h / height])
        na, nb = arr.shape
        sa, sb = spacing[view.rows], spacing[view.cols]
        extent = (-0.5 * sb, (nb - 0.5) * sb, (na - 0.5) * sa, -0.5 * sa)
        ax.imshow(arr, cmap="gray", vmin=vrange[0], vmax=vrange[1], extent=extent, origin="upper",
                  interpolation="nearest", aspect="equal")
        for field, levels, color in lines:
            ax.contour(np.arange(nb) * sb, np.arange(na) * sa, field, levels=levels, colors=color, linewidths=0.8)
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.set_axis_off()
        if view.marks is not None:
            _orientation_marks(ax, view.marks)
        left += w + gap
    fig.text(0.5, 1 - 0.06 / height, caption, ha="center", va="top", color="white", fontsize=12,
             fontweight="bold")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, facecolor="black")
    w_px, h_px = int(round(width * _DPI)), int(round(height * _DPI))
    return buf.getvalue(), (w_px, h_px)


def flicker_svg(
    path: str | os.PathLike,
    *,
    fixed: Image,
    warped: Image,
    fixed_labels: Image | None = None,
    windows: tuple[tuple[float, float], tuple[float, float]] | None = None,
    slice_at: Any = "center",
    convention: str = "neurological",
) -> Path:
    """Write the before/after flicker SVG of one registration (atomically) and return its path.

    Args:
        path: the SVG to write.
        fixed: the target image (C, *S); channel 0 is shown.
        warped: the moving image warped onto the fixed grid (same shape).
        fixed_labels: optional label map of the fixed image: its label boundaries are drawn
            (cyan) beside the two iso-lines of the normalised fixed image (red).
        windows: ((lower, upper) of the fixed image, (lower, upper) of the moving image), the
            intensities mapped to 0 and 1 for display; default: each image's 0.1/99.9 percentiles.
        slice_at, convention: as for :func:`~rdmm_pipelines.qc.render_qc`.
    """
    from ..atomic import write_text_atomic

    if not isinstance(fixed, Image):
        raise TypeError(f"fixed: expected an Image, got {type(fixed).__name__}")
    grid = fixed.grid
    d = grid.ndim
    tgt = _spatial(fixed, "fixed", d)
    wrp = _spatial(warped, "warped", d)
    if wrp.shape != tgt.shape:
        raise ValueError(f"warped: spatial shape {wrp.shape} does not match the fixed grid {tgt.shape}")
    flab = _on_grid(fixed_labels, grid, "fixed_labels", labels=True)
    flab = None if flab is None else _spatial(flab, "fixed_labels", d).astype(np.int64)
    center = slice_center(slice_at, tgt.shape, flab) if d == 3 else tuple(n // 2 for n in tgt.shape)
    orient = Orientation.of(grid)
    tgt, wrp = orient.array(tgt), orient.array(wrp)
    flab = None if flab is None else orient.array(flab)
    shape, spacing = tgt.shape, orient.spacing(grid.spacing)
    views = views_for(shape, orient.index(center, grid.shape), convention)
    if windows is None:
        windows = (_robust_range(tgt, lo=0.1, hi=99.9), _robust_range(wrp, lo=0.1, hi=99.9))
    (flo, fhi), (mlo, mhi) = windows
    norm_t = np.clip((tgt - flo) / max(fhi - flo, 1e-12), 0, 1)
    norm_w = np.clip((wrp - mlo) / max(mhi - mlo, 1e-12), 0, 1)

    contours = []
    for view in views:
        sl = view.take(norm_t)
        lines = [(_box_smooth(sl), _contour_levels(sl), _CONTOUR_COLOR)]
        if flab is not None:  # each label's boundary: the 0.5 iso-line of its indicator
            lab = view.take(flab)
            lines += [((lab == v).astype(float), [0.5], _LABEL_COLOR) for v in np.unique(lab) if v != 0]
        contours.append(lines)
    frames = []
    for arr, caption in ((norm_t, "fixed"), (norm_w, "warped moving")):
        frames.append(_frame([view.take(arr) for view in views], contours, views, spacing, (0.0, 1.0), caption))
    (png0, (w, h)), (png1, _) = frames
    b0, b1 = (base64.b64encode(p).decode("ascii") for p in (png0, png1))
    half = FLICKER_PERIOD_S / 2
    svg = f"""<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}">
<title>before/after: fixed and warped moving under the fixed image's contours ({half:g} s each; hover pauses)</title>
<style>
.warped {{ animation: flicker {FLICKER_PERIOD_S:g}s infinite; }}
@keyframes flicker {{ 0%, 49.9% {{ opacity: 0; }} 50%, 100% {{ opacity: 1; }} }}
svg:hover .warped {{ animation-play-state: paused; }}
</style>
<image class="fixed" x="0" y="0" width="{w}" height="{h}" href="data:image/png;base64,{b0}"/>
<image class="warped" x="0" y="0" width="{w}" height="{h}" href="data:image/png;base64,{b1}"/>
</svg>
"""
    return write_text_atomic(Path(path), svg)
