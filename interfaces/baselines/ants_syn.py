"""ANTs SyN through antspyx (``ants.registration``), written in our output convention.

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

__all__ = ["METHOD", "run_ants_syn"]

logger = logging.getLogger(__name__)

METHOD = "ants-syn"

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
    for reserved in ("outprefix", "fixed", "moving", "type_of_transform"):
        if reserved in extra:
            raise ValueError(f"registration_kwargs may not set {reserved!r}")
    version = f"antspyx {getattr(ants, '__version__', 'unknown')}"
    params = {"type_of_transform": type_of_transform, "seed": seed, "threads": threads, **extra}
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
            log.append(f"ants.registration(type_of_transform={type_of_transform!r}, "
                       f"outprefix={outprefix!r}, **{extra!r})")
            try:
                reg = ants.registration(f_img, m_img, type_of_transform=type_of_transform,
                                        outprefix=outprefix, **extra)
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
