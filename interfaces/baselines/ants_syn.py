"""ANTs SyN through antspyx (``ants.registration``), written in our output convention.

Masks (``fixed_mask``, ``moving_mask``: nonzero = inside) are ANTs' metric masks, given to every
stage (``mask_all_stages``: the rigid and affine stages too, as our own registration uses its
masks). ``metric`` names the similarity explicitly: "mattes" (Mattes mutual information in the
linear and SyN stages: what antspyx uses by default, for a multi-modal pair) or "cc" (SyN with
neighbourhood cross-correlation, radius 4, after Mattes MI linear stages, as antspyx's "SyNCC").

ANTs returns the forward transforms as ``[warp, affine]`` (applied right to left: the affine
first, then the warp, fixed -> moving); ``ants.apply_transforms(..., compose=prefix)`` composes them
into one displacement field on the fixed grid, which is re-written in our convention (the fixed
image's exact affine, float32, intent 1007). The warped image is ANTs' own ``warpedmovout``.

Threads: antspyx runs ITK in this process, and ITK reads ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS
once, at its first use in the process; ``threads`` therefore takes effect only when this is the
first ANTs call of the process (as in a pipeline task running in its own process). A later call
asking for a different number logs a warning.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rdmm_pipelines.spatial import load_itk_displacement_field

from .common import (
    BaselineOutput,
    check_inputs,
    check_threads,
    require_module,
    thread_environment,
    versions_header,
    work_directory,
    write_field_lps,
    write_log,
    write_warped,
)

__all__ = ["METHOD", "METRICS", "run_ants_syn"]

logger = logging.getLogger(__name__)

METHOD = "ants-syn"

#: ``metric`` -> the ``ants.registration`` keywords that set it (linear stages, SyN stage)
METRICS: dict[str, dict[str, Any]] = {
    "mattes": {"aff_metric": "mattes", "syn_metric": "mattes"},
    "cc": {"aff_metric": "mattes", "syn_metric": "CC", "syn_sampling": 4},
}

# the ITK thread count in force in this process once ANTs has run (None: not run yet)
_itk_threads_in_process: list[str | None] = []


def _note_threads(threads: int | None) -> None:
    wanted = str(threads) if threads is not None else os.environ.get(
        "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")
    if not _itk_threads_in_process:
        _itk_threads_in_process.append(wanted)
    elif threads is not None and _itk_threads_in_process[0] != wanted:
        logger.warning(
            "ants-syn: threads=%s has no effect: ITK in this process already runs with its "
            "thread count of the first ANTs call (ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=%s); run "
            "each registration in its own process to change it", threads,
            _itk_threads_in_process[0],
        )


def run_ants_syn(
    fixed: str | os.PathLike,
    moving: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    prefix: str = "",
    threads: int | None = None,
    type_of_transform: str = "SyN",
    seed: int = 1,
    registration_kwargs: Mapping[str, Any] | None = None,
    fixed_mask: str | os.PathLike | None = None,
    moving_mask: str | os.PathLike | None = None,
    metric: str | None = None,
) -> BaselineOutput:
    """Register ``moving`` to ``fixed`` with ANTs (default: SyN after rigid + affine).

    Args:
        fixed: fixed (target) NIfTI image, 2D (X, Y) or 3D.
        moving: moving (source) NIfTI image of the same dimension.
        out_dir: output directory (created if needed); outputs are
            ``{prefix}ants-syn_warped.nii.gz``, ``..._displacement.nii.gz`` and ``.log``.
        prefix: per-pair file-name prefix, e.g. ``"sub-01_"``.
        threads: ITK threads (see the module docstring); None: ITK's default.
        type_of_transform: any ``ants.registration`` transform type ("SyN", "SyNRA",
            "Affine", ...); the full composed transform is written whatever it is.
        seed: ANTs' random seed (its metric sampling); with one thread the result is reproducible.
        registration_kwargs: extra keyword arguments for ``ants.registration``
            (e.g. ``{"reg_iterations": (40, 20, 0)}``); ``outprefix`` is always ours.
        fixed_mask: metric mask of the fixed image (NIfTI, nonzero = inside, the images'
            dimension; any grid in the fixed image's world space), used in every stage.
        moving_mask: metric mask of the moving image, the same way.
        metric: a key of :data:`METRICS` ("mattes" or "cc"); None: antspyx's defaults (Mattes
            MI in every stage with antspyx 0.6).

    Returns:
        :class:`BaselineOutput` (method "ants-syn").

    Raises:
        RuntimeError: antspyx is not importable (before any work), or ANTs failed.
        FileNotFoundError / ValueError: bad inputs.
    """
    ants = require_module("ants", "ANTs SyN (ants-syn)")
    threads = check_threads(threads)
    f_path, m_path, f_grid, m_grid, paths = check_inputs(fixed, moving, out_dir, prefix, METHOD)
    extra = dict(registration_kwargs or {})
    for reserved in ("outprefix", "fixed", "moving", "type_of_transform", "mask", "moving_mask"):
        if reserved in extra:
            raise ValueError(f"registration_kwargs may not set {reserved!r}")
    if metric is not None:
        if metric not in METRICS:
            raise ValueError(f"metric {metric!r}: choose one of {', '.join(METRICS)}")
        clash = sorted(set(METRICS[metric]) & set(extra))
        if clash:
            raise ValueError(f"metric {metric!r} sets {', '.join(clash)}: do not set them in registration_kwargs")
        extra.update(METRICS[metric])
    masks = {name: _mask_path(path, name, f_grid.ndim) for name, path in
             (("fixed_mask", fixed_mask), ("moving_mask", moving_mask)) if path is not None}
    version = f"antspyx {getattr(ants, '__version__', 'unknown')}"
    params = {"type_of_transform": type_of_transform, "seed": seed, "threads": threads, **extra,
              **{name: str(path) for name, path in masks.items()}}
    log: list[str] = []
    out_dir = paths["warped"].parent
    start = time.perf_counter()
    config = getattr(ants, "config", None)
    old_seed = getattr(config, "_random_seed", None)
    try:
        with work_directory(out_dir, f"{prefix}{METHOD}") as work, thread_environment(threads):
            _note_threads(threads)
            if config is not None and hasattr(config, "_random_seed"):
                config._random_seed = int(seed)
            else:
                log.append(f"this antspyx has no ants.config._random_seed: seed {seed} not used")
            f_img = ants.image_read(str(f_path))
            m_img = ants.image_read(str(m_path))
            if f_img.dimension != f_grid.ndim or m_img.dimension != m_grid.ndim:
                raise ValueError(
                    f"ANTs reads {f_path} / {m_path} as {f_img.dimension}D / {m_img.dimension}D "
                    f"images, we read {f_grid.ndim}D"
                )
            outprefix = str(work / "reg_")
            mask_kwargs = _read_masks(ants, masks, f_grid.ndim)
            log.append(f"ants.registration(type_of_transform={type_of_transform!r}, "
                       f"outprefix={outprefix!r}, **{extra!r})"
                       + (f" with masks {', '.join(f'{k}={v}' for k, v in masks.items())}" if masks else ""))
            try:
                reg = ants.registration(f_img, m_img, type_of_transform=type_of_transform,
                                        outprefix=outprefix, **mask_kwargs, **extra)
            except Exception as exc:
                raise RuntimeError(f"ants.registration failed: {type(exc).__name__}: {exc}") from exc
            fwd = reg["fwdtransforms"]
            fwd = [fwd] if isinstance(fwd, str) else list(fwd)
            log.append(f"forward transforms (applied last to first): {fwd}")
            if not fwd or any(not Path(t).is_file() for t in fwd):
                raise RuntimeError(f"ants.registration wrote no usable transforms under {work}: {fwd}")
            composed = ants.apply_transforms(f_img, m_img, transformlist=fwd,
                                             compose=str(work / "full_"))
            if not composed or not Path(composed).is_file():
                raise RuntimeError(f"ants.apply_transforms(compose=...) wrote no field ({composed!r})")
            field_grid, u = load_itk_displacement_field(composed)
            if field_grid.shape != f_grid.shape:
                raise RuntimeError(
                    f"ANTs' composed field has shape {field_grid.shape}, fixed grid {f_grid.shape}"
                )
            write_field_lps(paths["displacement"], f_grid, m_grid, u)
            write_warped(paths["warped"], f_grid, reg["warpedmovout"].numpy())
    finally:
        if config is not None and hasattr(config, "_random_seed"):
            config._random_seed = old_seed
        seconds = time.perf_counter() - start
        log.append(f"[{METHOD} finished in {seconds:.2f} s]")
        log_path = write_log(paths["log"], versions_header(METHOD, f_path, m_path, version, params),
                             log)
    return BaselineOutput(METHOD, paths["warped"], paths["displacement"], seconds, version, log_path)


def _mask_path(path: str | os.PathLike, name: str, ndim: int) -> Path:
    """A mask file checked before any work: it exists, is NIfTI, has the images' dimension and
    at least one nonzero voxel (ANTs would otherwise fail late, or sample no point)."""
    from rdmm_pipelines.spatial import load_image

    what = name.replace("_", " ")
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} {p}: no such file")
    try:
        mask = load_image(p)
    except (ValueError, OSError) as exc:
        raise ValueError(f"{what} {p}: {exc}") from None
    if mask.grid.ndim != ndim:
        raise ValueError(f"{what} {p}: a {mask.grid.ndim}D mask, but the images are {ndim}D")
    if not bool((mask.data != 0).any()):
        raise ValueError(f"{what} {p}: empty (no nonzero voxel)")
    return p.resolve()


def _read_masks(ants: Any, masks: Mapping[str, Path], ndim: int) -> dict[str, Any]:
    """The masks as ``ants.registration`` keywords (``mask``, ``moving_mask``), applied in every
    stage (``mask_all_stages``); none without masks."""
    if not masks:
        return {}
    kwargs: dict[str, Any] = {"mask_all_stages": True}
    for name, path in masks.items():
        image = ants.image_read(str(path))
        if image.dimension != ndim:
            raise ValueError(f"ANTs reads the {name.replace('_', ' ')} {path} as a {image.dimension}D image, "
                             f"the images as {ndim}D")
        kwargs["mask" if name == "fixed_mask" else "moving_mask"] = image
    return kwargs
