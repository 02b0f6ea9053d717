"""Baseline registration methods (ANTs SyN, SimpleITK demons, NiftyReg f3d) with outputs shaped
like our own registration's, so evaluation and reports treat every method alike.

Every runner is a plain function ``runner(fixed, moving, out_dir, *, prefix="", threads=None,
...) -> BaselineOutput`` writing, in ``out_dir``, ``{prefix}{method}_warped.nii.gz`` (the moving
image on the fixed grid), ``{prefix}{method}_displacement.nii.gz`` (the full transform as an
ITK/ANTs displacement field on the fixed grid, LPS, intent 1007: ``ants.apply_transforms(fixed,
moving, [displacement])`` and ``DenseTransform.from_displacement_field(displacement,
moving_grid)`` both apply it) and ``{prefix}{method}.log``. Input files are never modified.

Example::

    from rdmm_pipelines.interfaces.baselines import BASELINES, available

    ok, why = available("niftyreg-f3d")
    out = BASELINES["sitk-demons-fss"]("fixed.nii.gz", "moving.nii.gz", "out", prefix="sub-01_")
    out.warped, out.displacement, out.seconds, out.tool_version

A tool that is not installed raises RuntimeError (naming what to install) before any work.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from .ants_syn import run_ants_syn
from .common import METHODS, BaselineOutput, find_niftyreg_binaries, require_module
from .niftyreg import run_niftyreg
from .sitk_demons import run_sitk_demons

__all__ = [
    "BASELINES",
    "METHODS",
    "BaselineOutput",
    "available",
    "run_ants_syn",
    "run_niftyreg",
    "run_sitk_demons",
]

#: method name -> runner (same call shape for all; the demons variants are bound)
BASELINES: dict[str, Callable[..., BaselineOutput]] = {
    "ants-syn": run_ants_syn,
    "sitk-demons-diffeomorphic": functools.partial(run_sitk_demons, variant="diffeomorphic"),
    "sitk-demons-fss": functools.partial(run_sitk_demons, variant="fss"),
    "niftyreg-f3d": run_niftyreg,
}


def available(method: str) -> tuple[bool, str]:
    """Whether ``method``'s tool can run here.

    Returns:
        (True, "<tool and version, or where it was found>") or (False, "<why, and what to
        install>"). antspyx / SimpleITK are really imported (a broken install counts as missing);
        NiftyReg's four binaries are looked up as the runner does.

    Raises:
        ValueError: unknown method name.
    """
    if method not in BASELINES:
        raise ValueError(f"unknown baseline {method!r}; known: {', '.join(METHODS)}")
    try:
        if method == "ants-syn":
            ants = require_module("ants", "ANTs SyN (ants-syn)")
            return True, f"antspyx {getattr(ants, '__version__', 'unknown')}"
        if method.startswith("sitk-demons"):
            sitk = require_module("SimpleITK", f"SimpleITK demons ({method})")
            return True, f"SimpleITK {sitk.Version_VersionString()}"
        bins = find_niftyreg_binaries()
        return True, f"NiftyReg binaries in {bins['reg_f3d'].parent}"
    except RuntimeError as exc:
        return False, str(exc)

