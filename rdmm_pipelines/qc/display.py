"""Small display helpers of the QC figures and pages: values as short text, images as arrays on
the fixed grid, robust intensity ranges and windows, and the anatomical letters of a panel."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..spatial import Grid, Image, resample_to_grid

__all__ = ["format_value"]


def format_value(v: Any) -> str:
    """A short, readable string for a metric value (floats to 4 significant digits)."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if not math.isfinite(v):
            return str(v)
        if v == 0:
            return "0"
        return f"{v:.4g}"
    if isinstance(v, Tensor) and v.numel() == 1:
        return format_value(v.item())
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(format_value(x) for x in v) + "]"
    return str(v)


def _flatten(metrics: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _spatial(x: Image | Tensor, what: str, d: int) -> np.ndarray:
    """Channel 0 of an image (or a (C, *S) / (*S) tensor) as a float64 numpy array (*S)."""
    t = x.data if isinstance(x, Image) else x
    if not isinstance(t, Tensor):
        raise TypeError(f"{what}: expected an Image or a tensor, got {type(x).__name__}")
    t = t.detach().cpu()
    if t.dim() == d + 1:
        t = t[0]
    if t.dim() != d:
        raise ValueError(f"{what}: shape {tuple(t.shape)} is not (C, *S) for a {d}D image")
    return t.double().numpy()


def _on_grid(img: Image | None, grid: Grid, what: str, labels: bool = False) -> Image | None:
    """``img`` on ``grid``: as is when the shapes agree, else resampled through world space."""
    if img is None:
        return None
    if not isinstance(img, Image):
        raise TypeError(f"{what}: expected an Image, got {type(img).__name__}")
    if img.ndim != grid.ndim:
        raise ValueError(f"{what} is {img.ndim}D but the fixed image is {grid.ndim}D")
    if labels and not img.is_labels:
        if not torch.equal(img.data, img.data.round()):
            raise ValueError(f"{what}: label image has non-integer values")
        img = img.with_data(img.data.long())
    if img.grid.shape == grid.shape:
        return img
    return resample_to_grid(img, grid, mode="nearest" if labels else "linear", padding="zeros")


def _robust_range(*arrays: np.ndarray, lo: float = 0.5, hi: float = 99.5,
                  extend: bool = False) -> tuple[float, float]:
    """Percentiles ``lo``/``hi`` of the finite values; with ``extend``, widened to the true min/max
    where those lie within one range-width of the percentiles (small bright structures are not
    clipped, far outliers still are)."""
    vals = np.concatenate([a[np.isfinite(a)].ravel() for a in arrays])
    if vals.size == 0:
        return 0.0, 1.0
    a, b = (float(v) for v in np.percentile(vals, [lo, hi]))
    if extend and b > a:
        vmin, vmax = float(vals.min()), float(vals.max())
        a = vmin if vmin >= a - (b - a) else a
        b = vmax if vmax <= b + (b - a) else b
    if not b > a:
        a, b = float(vals.min()), float(vals.max())
    if not b > a:
        a, b = a - 0.5, a + 0.5
    return a, b


def _normalized(arr: np.ndarray, window: tuple[float, float], what: str) -> np.ndarray:
    """``arr`` with ``window`` = (lower, upper) mapped to [0, 1] and clamped (the registration's
    intensity normalisation)."""
    lo, hi = (float(v) for v in window)
    if not hi > lo:
        raise ValueError(f"intensity window of the {what} image must have upper > lower, got {window}")
    return np.clip((arr - lo) / (hi - lo), 0.0, 1.0)


def _orientation_marks(ax, marks: tuple[str, str, str, str]) -> None:
    """The anatomical letters at the (top, bottom, left, right) edges of a panel."""
    import matplotlib.patheffects as pe

    style = dict(transform=ax.transAxes, fontsize=9, fontweight="bold", color="white",
                 path_effects=[pe.withStroke(linewidth=2, foreground="black")])
    for text, (x, y, ha, va) in zip(marks, ((0.5, 0.985, "center", "top"), (0.5, 0.015, "center", "bottom"),
                                            (0.015, 0.5, "left", "center"), (0.985, 0.5, "right", "center"))):
        ax.text(x, y, text, ha=ha, va=va, gid=f"orientation:{text}", **style)
