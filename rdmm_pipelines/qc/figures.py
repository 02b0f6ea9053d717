"""Quality-control figures for one registration (the panels of the RDMM paper's figures 1, 3, 4).

Every figure shows, per view, two rows of panels of about 3 inches each (dpi 100):

* row 1: source (the moving image resampled on the fixed grid), target (the fixed image), warped
  source, |target - source| (before) and |target - warped| (after);
* row 2: label contours over the warped image (fixed labels cyan, warped labels red; only with
  labels), the deformed grid (iso-lines of the map's moving-voxel coordinates over the warped
  image), det J (``RdBu_r`` on [0, 2], centred at 1, folds det J <= 0 filled in lime with a legend
  giving their count and percentage) and, for RDMM, sigma(x) at t = 0 and t = 1.

Display scales: each image on its own robust scale (the target on the fixed image's percentiles,
source and warped on the moving image's: they are one image's intensities); the two difference
maps on one scale, computed on normalised intensities (each image's ``windows`` mapped to [0, 1]
and clamped, as :func:`~rdmm_pipelines.spatial.normalize_intensity` makes them for the
registration), so images of different ranges (MNI 0-8364 against Colin27 0-133) compare. sigma(x)
uses the kernel's sigma range (``sigma_range``, the preset's narrowest to widest sigma), not the
maps' own spread, and the spread is printed in the title.

Views (:mod:`.views`): a 2D image has one, in array order; a 3D image is shown in its closest RAS
orientation from the affine: sagittal, coronal and axial, neurological (the subject's left on the
left) or radiological, with L/R, A/P and S/I letters on every panel and the convention in the
footer. Pixels are drawn with their physical size (``extent`` in mm), so anisotropic voxels keep
their true aspect ratio.

matplotlib is imported lazily, inside the functions, with the Agg canvas (no global backend is
set), so ``import rdmm_pipelines`` stays light.
"""

from __future__ import annotations

import math
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from torch import Tensor

from ..spatial import Image
from .display import _flatten, _normalized, _on_grid, _orientation_marks, _robust_range, _spatial, format_value
from .names import metric_name
from .views import CONVENTIONS, Orientation, slice_center, views_for

__all__ = ["qc_figure", "render_qc", "format_value"]

# ------------------------------------------------------------------ layout (inches) and colours
DPI = 100
CELL_W = 3.0  # width of one panel cell
IMG_MAX = 2.1  # the image box fits in IMG_MAX x IMG_MAX, physical aspect kept
TITLE_H = 0.5  # room above each image box for a two-line title
BOTTOM_H = 0.42  # room below each image box for a legend
CB_PAD, CB_W, CB_TICKS = 0.07, 0.11, 0.72  # colourbar gap, width, room for its tick labels and label
LEFT_M = 0.5  # left margin for the view labels
RIGHT_M = 0.15
FOOTER_H = 0.3
N_COLS = 5

FOLD_COLOR = "#39ff14"  # lime: stands out against both ends of RdBu_r
FIXED_LABEL_COLOR = "#00e5ff"
WARPED_LABEL_COLOR = "#ff2d2d"
GRID_COLOR = "#ffb000"
DET_RANGE = (0.0, 2.0)



def _nice_step(n: float, lines: int = 14) -> int:
    """Grid-line spacing in voxels giving about ``lines`` lines over ``n`` voxels (1, 2, 4, 8, 10, 16, ...)."""
    cands = [1, 2, 4, 8, 10, 16, 20, 32, 50, 64, 100, 128]
    return min(cands, key=lambda s: (abs(n / s - lines), s))


# ------------------------------------------------------------------ the figure
@dataclass
class _Panel:
    key: str
    title: str
    draw: Any  # callable(ax, view, geo) -> (mappable | None, colourbar label | None)


def qc_figure(
    *,
    fixed: Image,
    moving_on_fixed: Image,
    warped: Image,
    moving_voxels: Tensor,
    jacobian: Image,
    sigma_t0: Image | None = None,
    sigma_t1: Image | None = None,
    fixed_labels: Image | None = None,
    warped_labels: Image | None = None,
    title: str = "",
    metrics: dict | None = None,
    slice_at: Any = "center",
    grid_step: int | Sequence[int] | None = None,
    windows: tuple[tuple[float, float], tuple[float, float]] | None = None,
    sigma_range: tuple[float, float] | None = None,
    convention: str = "neurological",
):
    """Build the QC figure (a ``matplotlib.figure.Figure`` on an Agg canvas); see :func:`render_qc`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    if not isinstance(fixed, Image):
        raise TypeError(f"fixed: expected an Image, got {type(fixed).__name__}")
    grid = fixed.grid
    d = grid.ndim
    shape = grid.shape

    def field(x, what):
        arr = _spatial(x, what, d)
        if arr.shape != shape:
            raise ValueError(f"{what}: spatial shape {arr.shape} does not match the fixed grid {shape}")
        return arr

    tgt = field(fixed, "fixed")
    src = field(moving_on_fixed, "moving_on_fixed")
    wrp = field(warped, "warped")
    det = field(jacobian, "jacobian")
    mv = moving_voxels.detach().cpu().double()
    if mv.dim() == d + 2:
        mv = mv[0]
    if tuple(mv.shape) != (d, *shape):
        raise ValueError(f"moving_voxels: shape {tuple(moving_voxels.shape)} is not (1, {d}, *{shape})")
    mv = mv.numpy()
    sig = None
    if (sigma_t0 is None) != (sigma_t1 is None):
        raise ValueError("give both sigma_t0 and sigma_t1, or neither")
    if sigma_t0 is not None:
        sig = (_spatial(_on_grid(sigma_t0, grid, "sigma_t0"), "sigma_t0", d),
               _spatial(_on_grid(sigma_t1, grid, "sigma_t1"), "sigma_t1", d))
    flab = _on_grid(fixed_labels, grid, "fixed_labels", labels=True)
    wlab = _on_grid(warped_labels, grid, "warped_labels", labels=True)
    flab = None if flab is None else _spatial(flab, "fixed_labels", d).astype(np.int64)
    wlab = None if wlab is None else _spatial(wlab, "warped_labels", d).astype(np.int64)

    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    center = slice_center(slice_at, shape, flab) if d == 3 else tuple(n // 2 for n in shape)
    if grid_step is not None:
        steps_given = [int(grid_step)] * d if np.isscalar(grid_step) else [int(s) for s in grid_step]
        if len(steps_given) != d or min(steps_given) < 1:
            raise ValueError(f"grid_step must be a positive int or {d} of them, got {grid_step!r}")

    # ---- everything in the closest RAS orientation (3D; a 2D image stays in array order)
    orient = Orientation.of(grid)
    tgt, src, wrp, det = (orient.array(a) for a in (tgt, src, wrp, det))
    mv = orient.components(mv)
    sig = None if sig is None else tuple(orient.array(a) for a in sig)
    flab = None if flab is None else orient.array(flab)
    wlab = None if wlab is None else orient.array(wlab)
    center, shape, spacing = orient.index(center, shape), orient.shape(shape), orient.spacing(grid.spacing)
    views = views_for(shape, center, convention)

    # ---- colour scales (whole volume, so that the three 3D views agree)
    tvmin, tvmax = _robust_range(tgt, lo=0.1, hi=99.9, extend=True)
    mvmin, mvmax = _robust_range(src, lo=0.1, hi=99.9, extend=True)
    if windows is None:
        windows = (_robust_range(tgt, lo=0.1, hi=99.9), _robust_range(src, lo=0.1, hi=99.9))
    norm_t = _normalized(tgt, windows[0], "fixed")
    diff0 = np.abs(norm_t - _normalized(src, windows[1], "moving"))
    diff1 = np.abs(norm_t - _normalized(wrp, windows[1], "moving"))
    dmax = max(_robust_range(x, lo=0, hi=99.9, extend=True)[1] for x in (diff0, diff1))
    if sig is not None:
        finite = np.concatenate([a[np.isfinite(a)].ravel() for a in sig])
        spread = (np.percentile(finite, [5, 95]) if finite.size else np.array([np.nan, np.nan]))
        if sigma_range is not None:
            smin, smax = (float(v) for v in sigma_range)
        else:
            smin = float(finite.min()) if finite.size else 0.0
            smax = float(finite.max()) if finite.size else 1.0
        if not smax > smin:
            smin, smax = smin - 0.5, smax + 0.5
    fold = det <= 0
    n_fold, pct_fold = int(fold.sum()), 100.0 * float(fold.mean())
    if grid_step is None:  # one spacing for all components, from the largest span of the map
        spans = [float(np.ptp(c[np.isfinite(c)])) if np.isfinite(c).any() else float(n) for c, n in zip(mv, shape)]
        steps = [_nice_step(max(max(spans), 1.0))] * d
    else:
        steps = [steps_given[k] for k in orient.perm]

    # ---- panel drawing functions: each returns (mappable for a colourbar, its label)
    def coords(view):
        na, nb = shape[view.rows], shape[view.cols]
        sa, sb = spacing[view.rows], spacing[view.cols]
        x = np.arange(nb) * sb
        y = np.arange(na) * sa
        extent = (-0.5 * sb, (nb - 0.5) * sb, (na - 0.5) * sa, -0.5 * sa)
        return x, y, extent

    def show(ax, view, arr, sliced=False, **kw):
        _, _, extent = coords(view)
        kw.setdefault("interpolation", "nearest")
        return ax.imshow(arr if sliced else view.take(arr), extent=extent, origin="upper", aspect="equal", **kw)

    def grey(arr, vmin, vmax, alpha=1.0):
        def draw(ax, view):
            return show(ax, view, arr, cmap="gray", vmin=vmin, vmax=vmax, alpha=alpha), "intensity"
        return draw

    def diff(arr):
        def draw(ax, view):
            return show(ax, view, arr, cmap="magma", vmin=0.0, vmax=dmax), "|difference| (normalised)"
        return draw

    def draw_labels(ax, view):
        im = show(ax, view, wrp, cmap="gray", vmin=mvmin, vmax=mvmax)
        x, y, _ = coords(view)
        handles = []
        for lab, color, style, name in ((flab, FIXED_LABEL_COLOR, "-", "fixed labels"),
                                        (wlab, WARPED_LABEL_COLOR, "--", "warped labels")):
            if lab is None:
                continue
            sl = view.take(lab)
            for v in np.unique(sl):
                if v == 0:
                    continue
                ax.contour(x, y, (sl == v).astype(np.float32), levels=[0.5], colors=color,
                           linewidths=1.3, linestyles=style)
            handles.append(Line2D([], [], color=color, lw=1.6, ls=style, label=name))
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=2,
                  fontsize=8, frameon=False, handlelength=1.8, columnspacing=1.0)
        return im, "intensity"

    def draw_grid(ax, view):
        im = show(ax, view, wrp, cmap="gray", vmin=mvmin, vmax=mvmax, alpha=0.85)
        x, y, _ = coords(view)
        for k in (view.rows, view.cols):
            comp = view.take(mv[k])
            ok = comp[np.isfinite(comp)]
            if ok.size == 0:
                continue
            s = steps[k]
            levels = np.arange(math.ceil(ok.min() / s) * s, ok.max() + 1e-9, s)
            if levels.size:
                ax.contour(x, y, comp, levels=levels, colors=GRID_COLOR, linewidths=0.9)
        return im, "intensity"

    fold_cmap = ListedColormap([FOLD_COLOR])

    def draw_det(ax, view):
        im = show(ax, view, det, cmap="RdBu_r", vmin=DET_RANGE[0], vmax=DET_RANGE[1])
        sl = view.take(fold)
        if sl.any():
            show(ax, view, np.ma.masked_where(~sl, np.ones(sl.shape)), sliced=True, cmap=fold_cmap, vmin=0, vmax=1)
            x, y, _ = coords(view)
            ax.contour(x, y, sl.astype(np.float32), levels=[0.5], colors="black", linewidths=0.8)
        text = f"det J \u2264 0: {n_fold} voxels ({pct_fold:.2f} %)"
        if view.axis is not None:
            text += f", {int(sl.sum())} here"
        ax.legend(handles=[Patch(facecolor=FOLD_COLOR, edgecolor="black", label=text)], loc="upper center",
                  bbox_to_anchor=(0.5, -0.01), fontsize=8, frameon=False, handlelength=1.2)
        return im, "det J (1 = volume kept)"

    def draw_sigma(arr):
        def draw(ax, view):
            return show(ax, view, arr, cmap="viridis", vmin=smin, vmax=smax), "\u03c3 (mm)"
        return draw

    step_txt = f"{steps[0]}" if len(set(steps)) == 1 else "(" + ", ".join(str(s) for s in steps) + ")"
    row1 = [
        _Panel("source", "source\n(moving on the fixed grid)", grey(src, mvmin, mvmax)),
        _Panel("target", "target\n(fixed)", grey(tgt, tvmin, tvmax)),
        _Panel("warped", "warped source", grey(wrp, mvmin, mvmax)),
        _Panel("diff_before", f"|target \u2212 source|  before\nmean {np.nanmean(diff0):.4g}", diff(diff0)),
        _Panel("diff_after", f"|target \u2212 warped|  after\nmean {np.nanmean(diff1):.4g}", diff(diff1)),
    ]
    row2 = []
    if flab is not None or wlab is not None:
        row2.append(_Panel("labels", "label contours\nover the warped source", draw_labels))
    row2.append(_Panel("grid", f"deformed grid \u03c6\u207b\u00b9\n(every {step_txt} moving voxels)", draw_grid))
    row2.append(_Panel("jacobian", f"det J  [{np.nanmin(det):.3g}, {np.nanmax(det):.3g}]\n"
                                   f"range shown {DET_RANGE[0]:g}\u2013{DET_RANGE[1]:g}", draw_det))
    if sig is not None:
        sp5, sp95 = (format_value(float(v)) for v in spread)
        row2.append(_Panel("sigma_t0", f"\u03c3(x) at t = 0\nvoxels p5\u2013p95: {sp5}\u2013{sp95} mm",
                           draw_sigma(sig[0])))
        row2.append(_Panel("sigma_t1", "\u03c3(x) at t = 1", draw_sigma(sig[1])))

    # ---- geometry: one block of two rows per view
    boxes = []
    for view in views:
        ha = shape[view.rows] * spacing[view.rows]
        wb = shape[view.cols] * spacing[view.cols]
        scale = IMG_MAX / max(ha, wb)
        boxes.append((wb * scale, ha * scale))  # (width, height) in inches
    fig_w = LEFT_M + N_COLS * CELL_W + RIGHT_M
    metric_items = [f"{metric_name(k)}: {format_value(v)}" for k, v in _flatten(metrics or {}).items()
                    if not (isinstance(v, str) and title and v in title)]  # e.g. the method, already in the title
    chars = int(fig_w * DPI / 7.5)
    metric_lines = textwrap.wrap("     ".join(metric_items), width=chars, break_on_hyphens=False)
    header_h = 0.25 + (0.35 if title else 0.0) + 0.24 * len(metric_lines)
    header_h = max(header_h, 0.35)
    row_h = [TITLE_H + h + BOTTOM_H for _, h in boxes]
    fig_h = header_h + 2 * sum(row_h) + FOOTER_H

    fig = Figure(figsize=(fig_w, fig_h), dpi=DPI)
    FigureCanvasAgg(fig)
    fig.patch.set_facecolor("white")

    def frac(left, bottom, w, h):  # inches from the bottom-left corner -> figure fractions
        return [left / fig_w, bottom / fig_h, w / fig_w, h / fig_h]

    y_top = fig_h - header_h
    for view, (bw, bh), rh in zip(views, boxes, row_h):
        block_top = y_top
        for panels in (row1, row2):
            img_bottom = y_top - TITLE_H - bh
            for c, panel in enumerate(panels):
                group = bw + CB_PAD + CB_W + CB_TICKS
                left = LEFT_M + c * CELL_W + max(0.0, (CELL_W - group) / 2)
                ax = fig.add_axes(frac(left, img_bottom, bw, bh))
                ax.set_gid(f"qc:{panel.key}:{view.axis if view.axis is not None else 'all'}")
                mappable, cb_label = panel.draw(ax, view)
                _, _, extent = coords(view)
                ax.set_xlim(extent[0], extent[1])
                ax.set_ylim(extent[2], extent[3])
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(panel.title, fontsize=10, pad=4)
                if view.marks is not None:
                    _orientation_marks(ax, view.marks)
                if mappable is not None:
                    cax = fig.add_axes(frac(left + bw + CB_PAD, img_bottom, CB_W, bh))
                    extend = "max" if panel.key == "jacobian" else "neither"
                    cb = fig.colorbar(mappable, cax=cax, extend=extend)
                    cb.locator = MaxNLocator(nbins=5)
                    cb.update_ticks()
                    cb.ax.tick_params(labelsize=8)
                    cb.set_label(cb_label, fontsize=8)
            y_top -= rh
        if view.label:
            fig.text(0.12 / fig_w, (block_top + y_top) / 2 / fig_h, view.label, rotation=90,
                     ha="left", va="center", fontsize=10, linespacing=1.4)
            fig.add_artist(_separator(fig, fig_w, fig_h, y_top))

    # ---- header and footer
    y = fig_h - 0.15
    if title:
        fig.text(0.5, y / fig_h, title, ha="center", va="top", fontsize=14, fontweight="bold")
        y -= 0.35
    for line in metric_lines:
        fig.text(0.5, y / fig_h, line, ha="center", va="top", fontsize=11)
        y -= 0.24
    sp = ", ".join(f"{s:.3g}" for s in spacing)
    if d == 3:
        where = (f"Views in world (RAS) orientation from the affine, {convention} convention "
                 f"(the subject's left on the {'left' if convention == 'neurological' else 'right'})")
    else:
        where = "Display in array order: axis 0 down the rows (index 0 at the top), axis 1 across"
    footer = (f"{where}; pixels drawn to scale (spacing {sp} mm). Each image on its own scale; "
              f"differences on normalised intensities.")
    fig.text(0.5, 0.1 / fig_h, footer, ha="center", va="bottom", fontsize=8, color="#555555")
    return fig


def _separator(fig, fig_w: float, fig_h: float, y: float):
    from matplotlib.lines import Line2D

    return Line2D([0.1 / fig_w, 1 - 0.1 / fig_w], [(y + 0.05) / fig_h] * 2, transform=fig.transFigure,
                  color="#bbbbbb", lw=0.8)


def _save_atomic(fig, path: str | os.PathLike) -> Path:
    from ..atomic import atomic_output

    path = Path(path)
    with atomic_output(path, suffix=".tmp.png") as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, facecolor="white")
    return path


def render_qc(
    path: str | os.PathLike,
    *,
    fixed: Image,
    moving_on_fixed: Image,
    warped: Image,
    moving_voxels: Tensor,
    jacobian: Image,
    sigma_t0: Image | None = None,
    sigma_t1: Image | None = None,
    fixed_labels: Image | None = None,
    warped_labels: Image | None = None,
    title: str = "",
    metrics: dict | None = None,
    slice_at: Any = "center",
    grid_step: int | Sequence[int] | None = None,
    windows: tuple[tuple[float, float], tuple[float, float]] | None = None,
    sigma_range: tuple[float, float] | None = None,
    convention: str = "neurological",
) -> Path:
    """Write the QC figure of one registration as a PNG (atomically) and return its path.

    All images live on the fixed grid (label and sigma maps on another grid of the same world
    space are resampled to it; the others must have the fixed grid's shape). Only channel 0 of a
    multi-channel image is shown.

    Args:
        path: the PNG to write (parent folders are created).
        fixed: the target image I1.
        moving_on_fixed: the source I0 resampled on the fixed grid (no transform): the "before".
        warped: the source warped onto the fixed grid: the "after".
        moving_voxels: (1, d, *S_fixed) moving-image voxel indices per fixed voxel (the map
            phi^-1); its in-plane components' iso-lines are drawn as the deformed grid.
        jacobian: (1, *S_fixed) det J of the transform; det J <= 0 (folds) is highlighted.
        sigma_t0, sigma_t1: RDMM's sigma(x) in mm at t = 0 and t = 1 (both or neither).
        fixed_labels, warped_labels: optional label maps, drawn as contours over the warped image.
        title: first line of the heading (e.g. the method and the case).
        metrics: name -> value, written under the title (e.g. Dice, folds, seconds); nested
            dicts are flattened to dotted names.
        slice_at: 3D only: "center" (the grid centre), a label value of ``fixed_labels`` (the
            centre of its bounding box) or d voxel indices.
        grid_step: spacing of the deformed-grid lines in moving voxels (default: about 14 lines over the map).
        windows: ((lower, upper) of the fixed image, (lower, upper) of the moving image): the
            intensities that the registration's normalisation maps to 0 and 1; the difference
            panels compare the normalised images. Default: the 0.1 and 99.9 percentiles of the
            target and of the source (``normalize_intensity``'s defaults).
        sigma_range: (narrowest, widest) kernel sigma in mm: the colour range of the sigma(x)
            panels (default: the maps' own minimum and maximum).
        convention: 3D left/right display, "neurological" (the subject's left on the left) or
            "radiological".

    Returns:
        The path written.
    """
    fig = qc_figure(fixed=fixed, moving_on_fixed=moving_on_fixed, warped=warped, moving_voxels=moving_voxels,
                    jacobian=jacobian, sigma_t0=sigma_t0, sigma_t1=sigma_t1, fixed_labels=fixed_labels,
                    warped_labels=warped_labels, title=title, metrics=metrics, slice_at=slice_at,
                    grid_step=grid_step, windows=windows, sigma_range=sigma_range, convention=convention)
    return _save_atomic(fig, path)


# ------------------------------------------------------------------ from a RegistrationResult
