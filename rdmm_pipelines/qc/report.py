"""Quality-control outputs for a :class:`~rdmm_pipelines.result.RegistrationResult`: its metrics,
its figure (:func:`render_result`) and the PNG + HTML pair (:func:`qc_report`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from ..evaluation import dice_per_label, mean_dice
from ..spatial import Grid, Image, resample_to_grid
from .display import _on_grid
from .figures import render_qc

__all__ = ["render_result", "result_metrics", "qc_report"]


def _labels_image(x: Any, grid: Grid, what: str) -> Image | None:
    """A label Image from an Image, a NIfTI path or an integer tensor ((*S) or (1, *S) on ``grid``)."""
    if x is None:
        return None
    if isinstance(x, Tensor):
        t = x if x.dim() == grid.ndim + 1 else x[None]
        if tuple(t.shape[1:]) != grid.shape:
            raise ValueError(f"{what}: tensor of shape {tuple(x.shape)} does not match the grid {grid.shape}")
        if t.is_floating_point() and not torch.equal(t, t.round()):
            raise ValueError(f"{what}: label tensor has non-integer values")
        return Image(t.long(), grid)
    if isinstance(x, (str, os.PathLike)):
        from ..spatial import load_labels

        return load_labels(x)
    if isinstance(x, Image):
        if not x.is_labels:
            if not torch.equal(x.data, x.data.round()):
                raise ValueError(f"{what}: label image has non-integer values")
            x = x.with_data(x.data.long())
        return x
    raise TypeError(f"{what}: expected an Image, a NIfTI path or a tensor, got {type(x).__name__}")


def _mean_dice(a: Tensor, b: Tensor) -> float:
    """Mean Dice over the labels > 0 present in either map (nan when there are none)."""
    return mean_dice(dice_per_label(a, b))


def _method(result) -> str:
    cfg = result.config
    if cfg.model == "rdmm":
        return f"RDMM ({cfg.regional.source} regulariser)"
    return {"vsvf": "vSVF", "lddmm": "LDDMM"}.get(cfg.model, cfg.model)


def result_metrics(result, fixed_labels: Any = None, moving_labels: Any = None) -> dict[str, Any]:
    """Key numbers of a registration: method, mean Dice before/after (with both label maps),
    folds (voxels with det J < 0 and their percentage, |sum det J| over them, min det J),
    final similarity energy and seconds."""
    metrics: dict[str, Any] = {"method": _method(result)}
    grid = result.fixed.grid
    flab = _labels_image(fixed_labels, grid, "fixed_labels")
    mlab = _labels_image(moving_labels, result.moving.grid, "moving_labels")
    if flab is not None and mlab is not None:
        f = _on_grid(flab, grid, "fixed_labels", labels=True).data
        before = resample_to_grid(mlab, grid, mode="nearest").data
        after = result.apply(mlab).data
        metrics["Dice before"] = _mean_dice(f, before)
        metrics["Dice"] = _mean_dice(f, after)
    folds = result.fold_statistics()
    metrics["folding voxels"] = folds["folding_voxels"]
    metrics["folding %"] = folds["folding_percent"]
    metrics["folds |\u03a3 det J<0|"] = folds["folds"]
    metrics["det J min"] = folds["det_min"]
    energies = result.energies()
    if "similarity" in energies:
        metrics["similarity"] = energies["similarity"]
    if "total" in result.timings:
        metrics["seconds"] = result.timings["total"]
    return metrics


def _title(result) -> str:
    names = []
    for key in ("moving", "fixed"):
        info = (result.inputs or {}).get(key) or {}
        p = info.get("path") if isinstance(info, dict) else None
        names.append(Path(p).name if p else key)
    return f"{_method(result)}: {names[0]} \u2192 {names[1]}"


def intensity_windows(result) -> tuple[tuple[float, float], tuple[float, float]]:
    """((lower, upper) of the fixed image, (lower, upper) of the moving image): the 0.1 and 99.9
    percentiles that the registration's normalisation maps to 0 and 1 (computed the same way)."""
    from ..spatial.intensity import percentiles

    return tuple(tuple(float(v) for v in percentiles(img.data.reshape(-1).float(), (0.1, 99.9)))
                 for img in (result.fixed, result.moving))


def kernel_sigma_range(result) -> tuple[float, float] | None:
    """(narrowest, widest) sigma in mm of an RDMM result's kernel mixture (None for other models)."""
    sigmas = getattr(getattr(result.model, "metric", None), "sigmas", None)
    if result.config.model != "rdmm" or not sigmas:
        return None
    scale = result.fixed.grid.domain_scale
    return float(min(sigmas)) * scale, float(max(sigmas)) * scale


def render_result(
    result,
    path: str | os.PathLike,
    fixed_labels: Any = None,
    moving_labels: Any = None,
    *,
    title: str | None = None,
    metrics: dict | None = None,
    slice_at: Any = "center",
    grid_step: int | Sequence[int] | None = None,
) -> Path:
    """Write the QC figure of a :class:`~rdmm_pipelines.result.RegistrationResult` (see :func:`render_qc`).

    Args:
        result: the registration.
        path: the PNG to write.
        fixed_labels: optional label map of the fixed image (Image, NIfTI path or tensor on the fixed grid).
        moving_labels: optional label map of the moving image (Image, NIfTI path or tensor on the
            moving grid); it is warped with ``result.apply``.
        title: default "<method>: <moving> -> <fixed>".
        metrics: shown in the heading; default :func:`result_metrics`, to which these are added.
        slice_at, grid_step: as for :func:`render_qc`.
    """
    fixed = result.fixed
    flab = _labels_image(fixed_labels, fixed.grid, "fixed_labels")
    mlab = _labels_image(moving_labels, result.moving.grid, "moving_labels")
    shown = result_metrics(result, flab, mlab)
    shown.update(metrics or {})
    sig = result.sigma_maps()
    return render_qc(
        path,
        fixed=fixed,
        moving_on_fixed=resample_to_grid(result.moving, fixed.grid),
        warped=result.warped(),
        moving_voxels=result.moving_voxels(),
        jacobian=result.jacobian_determinant(),
        sigma_t0=None if sig is None else sig[0],
        sigma_t1=None if sig is None else sig[1],
        fixed_labels=flab,
        warped_labels=None if mlab is None else result.apply(mlab),
        title=_title(result) if title is None else title,
        metrics=shown,
        slice_at=slice_at,
        grid_step=grid_step,
        windows=intensity_windows(result),
        sigma_range=kernel_sigma_range(result),
    )


def qc_report(
    result,
    out_dir: str | os.PathLike,
    fixed_labels: Any = None,
    moving_labels: Any = None,
    *,
    name: str = "qc",
    title: str | None = None,
    metrics: dict | None = None,
    slice_at: Any = "center",
) -> dict[str, Path]:
    """Write ``<name>.png`` (the QC figure), ``<name>_flicker.svg`` (the before/after reportlet:
    fixed and warped moving under the fixed image's contours) and ``<name>.html`` (both, the
    metrics and the configuration) for a registration result into ``out_dir``; returns
    {"png": ..., "svg": ..., "html": ...}."""
    from .html import write_html_report
    from .reportlet import flicker_svg

    out = Path(out_dir)
    fixed = result.fixed
    flab = _labels_image(fixed_labels, fixed.grid, "fixed_labels")
    mlab = _labels_image(moving_labels, result.moving.grid, "moving_labels")
    shown = result_metrics(result, flab, mlab)
    shown.update(metrics or {})
    title = _title(result) if title is None else title
    png = render_result(result, out / f"{name}.png", flab, mlab, title=title, metrics=shown, slice_at=slice_at)
    svg = flicker_svg(out / f"{name}_flicker.svg", fixed=fixed, warped=result.warped(), fixed_labels=flab,
                      windows=intensity_windows(result), slice_at=slice_at)
    after = before = None
    if flab is not None and mlab is not None:  # the Dice per label, before and after
        f = _on_grid(flab, fixed.grid, "fixed_labels", labels=True).data[0]
        after = dice_per_label(result.apply(mlab).data[0], f)
        before = dice_per_label(resample_to_grid(mlab, fixed.grid, mode="nearest").data[0], f, labels=list(after))
    page = write_html_report(out / f"{name}.html", png, shown, title, config=result.config.to_dict(),
                             label_dice=after, label_dice_before=before,
                             figures=[("before/after: fixed and warped moving, alternating", svg.name)])
    return {"png": png, "svg": svg, "html": page}
