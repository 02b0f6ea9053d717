"""VisualReport: the quality-control figure (PNG) and HTML page of one registration.

A thin task around :func:`rdmm_pipelines.qc.render_qc` and
:func:`rdmm_pipelines.qc.write_html_report`; :func:`report_pair` is the same stage as a plain
function. It works from files, so it serves every method (ours and the baselines).
"""

import json
import os
import typing as ty
from pathlib import Path

from fileformats.application import Json
from fileformats.generic import File
from fileformats.image import Png

from ._pydra import Outputs, Task, arg, define
from .common import NiftiImage, check_nifti, check_subject_id, guarded, output_path

__all__ = ["VisualReport", "report_pair"]

_METRIC_KEYS = ("status", "seconds", "mean_dice_before", "mean_dice", "folds", "tre", "message")


def _record(evaluation: os.PathLike | str | None) -> dict[str, ty.Any]:
    """An evaluation record (JSON of :class:`~.evaluate.Evaluate`), {} without one."""
    return {} if evaluation is None else json.loads(Path(os.fspath(evaluation)).read_text())


def _metrics(evaluation: os.PathLike | str | None) -> dict[str, ty.Any]:
    """The headline numbers of an evaluation record."""
    data = _record(evaluation)
    return {k: data[k] for k in _METRIC_KEYS if data.get(k) not in (None, "", {})}


def report_pair(
    fixed: os.PathLike | str,
    moving: os.PathLike | str,
    warped: os.PathLike | str,
    displacement: os.PathLike | str,
    *,
    subject_id: str,
    method: str,
    jacobian: os.PathLike | str | None = None,
    fixed_labels: os.PathLike | str | None = None,
    moving_labels: os.PathLike | str | None = None,
    evaluation: os.PathLike | str | None = None,
    title: str = "",
    out_dir: os.PathLike | str | None = None,
    sigma_t0: os.PathLike | str | None = None,
    sigma_t1: os.PathLike | str | None = None,
) -> dict[str, ty.Any]:
    """Write ``{subject_id}_{method}_qc.png``, the before/after reportlet
    ``{subject_id}_{method}_qc_flicker.svg`` and a self-contained ``{subject_id}_{method}_qc.html``
    into ``out_dir`` (default: the working directory): source, target, before/after differences,
    the deformed grid and det J (computed from the displacement field unless ``jacobian`` is
    given), with label contours and the evaluation's numbers when given, and RDMM's sigma(x)
    at t = 0 and t = 1 when ``sigma_t0`` and ``sigma_t1`` (maps on the fixed grid) are given."""
    from rdmm_pipelines.evaluation import jacobian_determinant_physical
    from rdmm_pipelines.qc import flicker_svg, render_qc, write_html_report
    from rdmm_pipelines.spatial import Image, load_image, load_labels, resample_to_grid
    from rdmm_pipelines.transforms import DenseTransform

    fixed_img, moving_img = load_image(os.fspath(fixed)), load_image(os.fspath(moving))
    transform = DenseTransform.from_displacement_field(os.fspath(displacement), moving_img.grid)
    if jacobian is not None:
        det = load_image(os.fspath(jacobian))
    else:
        voxels = transform.moving_voxels.double()
        det = Image(jacobian_determinant_physical(voxels, transform.fixed_grid, transform.moving_grid).float(),
                    transform.fixed_grid)
    fixed_lab = None if fixed_labels is None else load_labels(os.fspath(fixed_labels))
    warped_lab = None if moving_labels is None else transform.apply(load_labels(os.fspath(moving_labels)))
    metrics = _metrics(evaluation)
    heading = title or f"{method}: {subject_id}"
    warped_img = load_image(os.fspath(warped))
    png = render_qc(
        output_path(subject_id, method, "qc", ".png", out_dir),
        fixed=fixed_img, moving_on_fixed=resample_to_grid(moving_img, fixed_img.grid),
        warped=warped_img, moving_voxels=transform.moving_voxels, jacobian=det,
        fixed_labels=fixed_lab, warped_labels=warped_lab, title=heading, metrics=metrics,
        sigma_t0=None if sigma_t0 is None else load_image(os.fspath(sigma_t0)),
        sigma_t1=None if sigma_t1 is None else load_image(os.fspath(sigma_t1)))
    svg = flicker_svg(output_path(subject_id, method, "qc_flicker", ".svg", out_dir), fixed=fixed_img,
                      warped=warped_img, fixed_labels=fixed_lab)
    record = _record(evaluation)
    html = write_html_report(output_path(subject_id, method, "qc", ".html", out_dir), png, metrics, heading,
                             label_dice=record.get("dice") or None, label_dice_before=record.get("dice_before") or None,
                             figures=[("before/after: fixed and warped moving, alternating", svg.name)])
    return {"png": png, "svg": svg, "html": html}


def _run_report(
    fixed, moving, warped, displacement, subject_id, method, jacobian, fixed_labels, moving_labels,
    evaluation, title, sigma_t0=None, sigma_t1=None
):
    """The body of :class:`VisualReport` (module level: worker processes import it)."""
    return guarded(
        lambda: report_pair(fixed, moving, warped, displacement, subject_id=subject_id, method=method,
                            jacobian=jacobian, fixed_labels=fixed_labels, moving_labels=moving_labels,
                            evaluation=evaluation, title=title, sigma_t0=sigma_t0, sigma_t1=sigma_t1),
        {"png": None, "svg": None, "html": None},
        what=f"{subject_id}: VisualReport ({method})",
        error_file=output_path(subject_id, method, "qc_error", ".txt"))


@define
class VisualReport(Task["VisualReport.Outputs"]):
    """Quality-control figure and HTML page of one registration (any method).

    Panels: source, target, the source before and after registration with their differences to
    the target, the deformed grid, det J with folds highlighted, and label contours when the
    label maps are given. The HTML page embeds the PNG and lists the evaluation's numbers. A
    failure gives ``status="failed"`` with the reason instead of raising.

    Args:
        fixed: the target image (NIfTI).
        moving: the source image (NIfTI).
        warped: the source warped onto the fixed grid (the registration's output).
        displacement: the registration's ITK/ANTs displacement field on the fixed grid.
        subject_id: pair identifier used in the output names and the default title.
        method: the registration method, in the names and the default title.
        jacobian: det J on the fixed grid; computed from the displacement field when not given.
        fixed_labels: label map of the fixed image, drawn as contours.
        moving_labels: label map of the moving image, warped and drawn as contours.
        evaluation: the Evaluate task's JSON record; its numbers go into the heading and page.
        title: heading; default "{method}: {subject_id}".
        sigma_t0: RDMM's sigma(x) at t = 0 on the fixed grid (RdmmRegistration's output), drawn
            with sigma_t1.
        sigma_t1: RDMM's sigma(x) at t = 1.
    """

    requires_gpu = False

    fixed: NiftiImage = arg(validator=check_nifti)
    moving: NiftiImage = arg(validator=check_nifti)
    warped: NiftiImage = arg(validator=check_nifti)
    displacement: NiftiImage = arg(validator=check_nifti)
    subject_id: str = arg(validator=check_subject_id)
    method: str = arg()
    jacobian: NiftiImage | None = arg(default=None, validator=check_nifti)
    fixed_labels: NiftiImage | None = arg(default=None, validator=check_nifti)
    moving_labels: NiftiImage | None = arg(default=None, validator=check_nifti)
    evaluation: Json | None = None
    title: str = ""
    sigma_t0: NiftiImage | None = arg(default=None, validator=check_nifti)
    sigma_t1: NiftiImage | None = arg(default=None, validator=check_nifti)

    class Outputs(Outputs):
        """
        Args:
            png: the figure, {subject_id}_{method}_qc.png.
            svg: the before/after flicker reportlet, {subject_id}_{method}_qc_flicker.svg.
            html: the self-contained page, {subject_id}_{method}_qc.html.
            status: "ok" or "failed".
            message: the error when failed ("" when ok).
        """

        png: Png | None
        svg: File | None
        html: File | None  # fileformats 0.22 defines text.Html but does not export it
        status: str
        message: str

    function = staticmethod(_run_report)
