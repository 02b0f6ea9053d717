"""The workflow of one fixed/moving pair: (affine ->) registration -> evaluation -> QC report.

:func:`pair_workflow` is the constructor (in the spirit of niworkflows' ``init_*_wf``): it returns
a parameterised :class:`PairWorkflow`, a pydra workflow whose nodes are

* ``affine`` (our methods, when their configuration enables the affine stage):
  :class:`~rdmm_pipelines.interfaces.AffineRegistration`, whose ITK affine the registration
  starts from (intensity normalisation happens inside both, as ``register()`` does it);
* ``register``: :class:`~rdmm_pipelines.interfaces.RdmmRegistration` for our methods
  (:data:`OUR_METHODS`) or a baseline task (:data:`BASELINE_METHODS`);
* ``evaluate``: :class:`~rdmm_pipelines.interfaces.Evaluate`, given the registration's status and
  message, so that a failed registration still gives a (failed) row;
* ``qc``: :class:`PairQc`, the :class:`~rdmm_pipelines.interfaces.VisualReport` stage made
  tolerant of a failed registration (it is then skipped, not failed).

All pydra calls go through :mod:`rdmm_pipelines.interfaces._pydra`. Every stage records a failure
as ``status``/``message`` instead of raising, so a pair never stops a cohort.
"""

from __future__ import annotations

import typing as ty

from fileformats.application import Json
from fileformats.generic import File
from fileformats.image import Png
from rdmm_pipelines.config import NETWORK_METHODS as _NETWORKS
from rdmm_pipelines.config import REFINED_METHODS as _REFINED
from rdmm_pipelines.interfaces._pydra import Outputs, Task, arg, define, workflow
from rdmm_pipelines.interfaces.common import NiftiImage, check_nifti, check_subject_id

__all__ = [
    "BASELINE_METHODS",
    "MASKED_METHODS",
    "METHODS",
    "NETWORK_METHODS",
    "OUR_METHODS",
    "REFINED_NETWORK_METHODS",
    "PairQc",
    "PairWorkflow",
    "pair_workflow",
    "registration_node",
]

#: our methods -> RdmmRegistration inputs (model, regularizer); "rdmm-predefined" also needs the
#: moving image's region map (``moving_regions``)
OUR_METHODS: dict[str, dict[str, ty.Any]] = {
    "vsvf": {"model": "vsvf"},
    "lddmm": {"model": "lddmm"},
    "rdmm-predefined": {"model": "rdmm", "regularizer": "predefined"},
    "rdmm-optimized": {"model": "rdmm", "regularizer": "optimized"},
}

#: baseline methods -> name of their task in rdmm_pipelines.interfaces
BASELINE_METHODS: dict[str, str] = {
    "ants-syn": "AntsSyN",
    "sitk-demons": "SimpleITKDemons",
    "niftyreg": "NiftyRegF3D",
}

#: trained networks' predictions refined by instance optimisation (NetworkRegistration with
#: ``refine``): each needs the checkpoint of its network, e.g. ``{"rdmm-net+io": {"weights":
#: "run/best.pt"}}``; ``refine_scales``, ``refine_iterations`` in its options change the refinement
REFINED_NETWORK_METHODS: tuple[str, ...] = tuple(_REFINED)

#: trained networks -> NetworkRegistration's method; each needs ``weights`` (a checkpoint) in its
#: ``method_options``, e.g. ``{"rdmm-net": {"weights": "run/best.pt"}}``; the "+io" methods refine
#: the prediction (:data:`REFINED_NETWORK_METHODS`)
NETWORK_METHODS: tuple[str, ...] = (*_NETWORKS, *REFINED_NETWORK_METHODS)

#: every method a pair workflow accepts
METHODS: tuple[str, ...] = (*OUR_METHODS, *NETWORK_METHODS, *BASELINE_METHODS)

#: the methods given a pair's masks (``fixed_mask``, ``moving_mask``): ours and ANTs SyN (its
#: metric masks); the other baselines and the trained networks register without them
MASKED_METHODS: tuple[str, ...] = (*OUR_METHODS, "ants-syn")

_OUTPUTS = ["csv_row", "evaluation", "png", "html", "status", "message", "mean_dice", "displacement",
            "warped", "warped_labels", "seconds", "device_used", "subject_id", "method"]


def check_method(method: str) -> str:
    """``method`` if it is one of :data:`METHODS`, else a ValueError naming them."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return method


def registration_node(method: str, *, fixed, moving, subject_id, moving_regions=None, config_json=None,
                      preset=None, affine=None, device="auto", threads=0, fixed_mask=None, moving_mask=None,
                      **options: ty.Any) -> Task:
    """The registration task of ``method`` for one pair (not yet added to a workflow).

    Args:
        method: one of :data:`METHODS`.
        fixed, moving, subject_id: the pair.
        moving_regions: region map of the moving image ("rdmm-predefined" only).
        fixed_mask, moving_mask: the pair's masks (nonzero = inside), given to the methods of
            :data:`MASKED_METHODS` and left out for the others.
        config_json, preset, affine, device: RdmmRegistration inputs (our methods only; the
            device is resolved when the task runs, "auto" by default).
        threads: CPU threads of the task (0: all).
        **options: further inputs of the task (e.g. ``levels=1, iterations=5`` for sitk-demons).
    """
    from rdmm_pipelines import interfaces

    check_method(method)
    if method in NETWORK_METHODS:
        if options.get("weights") is None:
            raise ValueError(f"method {method} needs a trained network: method_options={{{method!r}: "
                             "{'weights': 'path/to/best.pt'}} (rdmm cohort --weights)")
        if method in REFINED_NETWORK_METHODS:
            options = {"refine": True, **options}
        return interfaces.NetworkRegistration(fixed=fixed, moving=moving, subject_id=subject_id, method=method,
                                              device=device, threads=threads, **options)
    if method in OUR_METHODS:
        extra = dict(OUR_METHODS[method])
        if extra.get("regularizer") == "predefined":
            extra["region_labels"] = moving_regions
        return interfaces.RdmmRegistration(
            fixed=fixed, moving=moving, subject_id=subject_id, config_json=config_json, preset=preset,
            affine=affine, device=device, threads=threads, fixed_mask=fixed_mask, moving_mask=moving_mask,
            **extra, **options)
    task = getattr(interfaces, BASELINE_METHODS[method])
    if method in MASKED_METHODS:
        options = {"fixed_mask": fixed_mask, "moving_mask": moving_mask, **options}
    return task(fixed=fixed, moving=moving, subject_id=subject_id, threads=threads, **options)


# ------------------------------------------------------------------ QC that tolerates failure
def _run_pair_qc(fixed, moving, warped, displacement, subject_id, method, jacobian, fixed_labels,
                 moving_labels, evaluation, registration_status, registration_message, sigma_t0=None,
                 sigma_t1=None):
    """The body of :class:`PairQc` (module level: worker processes import it)."""
    if registration_status != "ok" or warped is None or displacement is None:
        why = registration_message or "the registration gave no transform"
        return {"png": None, "html": None, "status": "skipped", "message": f"registration failed: {why}"}
    from rdmm_pipelines.interfaces.report import _run_report

    return _run_report(fixed, moving, warped, displacement, subject_id, method, jacobian, fixed_labels,
                       moving_labels, evaluation, "", sigma_t0, sigma_t1)


@define
class PairQc(Task["PairQc.Outputs"]):
    """VisualReport of one registration, skipped (status "skipped") when the registration failed.

    Args:
        fixed: the target image.
        moving: the source image.
        warped: the warped source (None when the registration failed).
        displacement: the registration's displacement field (None when it failed).
        subject_id: pair identifier, in the output names.
        method: the method, in the output names and title.
        jacobian: det J on the fixed grid (computed from the field when not given).
        fixed_labels: label map of the fixed image (contours).
        moving_labels: label map of the moving image (warped contours).
        evaluation: the Evaluate record (numbers in the heading).
        registration_status: the registration's status; anything but "ok" skips the report.
        registration_message: the registration's error, repeated in ``message`` when skipped.
        sigma_t0: RDMM's sigma(x) at t = 0 (drawn with sigma_t1; None for other models).
        sigma_t1: RDMM's sigma(x) at t = 1.
    """

    requires_gpu = False

    fixed: NiftiImage = arg(validator=check_nifti)
    moving: NiftiImage = arg(validator=check_nifti)
    warped: NiftiImage | None = arg(default=None)
    displacement: NiftiImage | None = arg(default=None)
    subject_id: str = arg(validator=check_subject_id)
    method: str = arg()
    jacobian: NiftiImage | None = arg(default=None)
    fixed_labels: NiftiImage | None = arg(default=None)
    moving_labels: NiftiImage | None = arg(default=None)
    evaluation: Json | None = None
    registration_status: str = "ok"
    registration_message: str = ""
    sigma_t0: NiftiImage | None = arg(default=None)
    sigma_t1: NiftiImage | None = arg(default=None)

    class Outputs(Outputs):
        """
        Args:
            png: the QC figure, {subject_id}_{method}_qc.png (None when skipped or failed).
            html: the QC page, {subject_id}_{method}_qc.html (None when skipped or failed).
            status: "ok", "failed" or "skipped".
            message: why it failed or was skipped ("" when ok).
        """

        png: Png | None
        html: File | None
        status: str
        message: str

    function = staticmethod(_run_pair_qc)


def _separate_affine(config_json, preset) -> bool:
    """Whether our registration's affine stage runs as its own ``affine`` node.

    It does when the configuration enables it and :class:`AffineRegistration` would use the same
    affine settings: those of ``config_json``, or, for a preset, when the preset's affine
    settings are the defaults. The node's result is cached on its own: re-running with another
    deformable configuration (same affine section in the same file, or a preset) re-uses it.
    A failed affine node leaves ``affine`` None and the registration estimates it itself.
    """
    import os
    from pathlib import Path

    from rdmm_pipelines.interfaces.common import read_config

    from rdmm_pipelines.affine import AffineConfig
    from rdmm_pipelines.presets import get_preset

    if config_json is not None:
        return read_config(Path(os.fspath(config_json))).affine.enabled
    affine = get_preset(preset or "default").affine
    return affine.enabled and affine == AffineConfig()


# ------------------------------------------------------------------ the pair workflow
@workflow.define(outputs=_OUTPUTS)
def PairWorkflow(
    fixed: NiftiImage,
    moving: NiftiImage,
    subject_id: str,
    method: str,
    fixed_labels: NiftiImage | None = None,
    moving_labels: NiftiImage | None = None,
    moving_regions: NiftiImage | None = None,
    fixed_landmarks: File | None = None,
    moving_landmarks: File | None = None,
    config_json: Json | None = None,
    preset: str | None = None,
    method_options: dict | None = None,
    device: str = "auto",
    threads: int = 0,
    report: bool = True,
    retries: dict | None = None,
    fixed_mask: NiftiImage | None = None,
    moving_mask: NiftiImage | None = None,
):
    """Register one pair with ``method``, evaluate it and draw its QC report.

    The graph depends on ``method`` (our registration or a baseline task), which pydra gives the
    constructor as a plain value, also inside a split.

    Args:
        fixed, moving: the pair's images (NIfTI); outputs lie on the fixed grid.
        subject_id: pair identifier (output names).
        method: one of :data:`METHODS`.
        fixed_labels, moving_labels: their label maps (Dice); None (both): the pair is registered
            and its folds (and TRE) evaluated, without Dice.
        moving_regions: region map of the moving image for "rdmm-predefined".
        fixed_landmarks, moving_landmarks: landmark files (TRE), optional.
        config_json: RegistrationConfig JSON for our methods (their model/regulariser override it).
        preset: preset name for our methods when no config_json is given.
        method_options: {method: {input: value}} further task inputs per method (e.g.
            ``{"sitk-demons": {"levels": 1}}``, ``{"rdmm-predefined": {"config_json": ...}}``);
            only this method's entry is used, and it wins over the shared inputs above.
        device: "auto", "cpu", "cuda[:N]": resolved inside the registration task ("auto" keeps
            the cache hash machine-independent).
        threads: CPU threads per task (0: all).
        report: draw the QC report (the ``qc`` node).
        retries: {method: attempt}: the registration's ``retry`` input (0 when absent); the
            cohort workflow bumps it for a (pair, method) that failed, so that it runs again.
        fixed_mask, moving_mask: masks of the fixed and the moving image (NIfTI, nonzero =
            inside), restricting the similarity of the methods of :data:`MASKED_METHODS` (and
            of the ``affine`` node); the other methods register without them.

    Returns:
        csv_row: the evaluation as a one-row CSV.
        evaluation: the evaluation record (JSON).
        png: the QC figure (None when the registration failed).
        html: the QC page (None when the registration failed).
        status: the evaluation's status, "ok", "partial" or "failed".
        message: why the pair failed ("" when ok).
        mean_dice: mean Dice over the foreground labels (NaN when failed).
        displacement: the registration's ITK displacement field (None when failed).
        warped: the warped moving image (None when failed).
        warped_labels: the moving label map on the fixed grid (None when failed).
        seconds: registration time.
        device_used: the device the registration ran on.
        subject_id: the pair identifier.
        method: the method.
    """
    from rdmm_pipelines.interfaces import Evaluate

    check_method(method)
    options = dict((method_options or {}).get(method) or {})
    options["retry"] = int((retries or {}).get(method, 0))
    ours = method in OUR_METHODS or method in NETWORK_METHODS  # our outputs: det J, RDMM sigma maps
    if method in NETWORK_METHODS:
        options = {"device": device, **options}
    elif ours:  # a method's own options (e.g. its config_json) win over the shared ones
        options = {"config_json": config_json, "preset": preset, "device": device, **options}
        if options.get("affine") is None and _separate_affine(options["config_json"], options["preset"]):
            from rdmm_pipelines.interfaces import AffineRegistration

            aff = workflow.add(
                AffineRegistration(fixed=fixed, moving=moving, subject_id=subject_id,
                                   config_json=options["config_json"], device=device, threads=threads,
                                   fixed_mask=fixed_mask, moving_mask=moving_mask),
                name="affine")
            options["affine"] = aff.affine
    reg = workflow.add(
        registration_node(method, fixed=fixed, moving=moving, subject_id=subject_id,
                          moving_regions=moving_regions, threads=threads, fixed_mask=fixed_mask,
                          moving_mask=moving_mask, **options),
        name="register")
    ev = workflow.add(
        Evaluate(
            displacement=reg.displacement, fixed_labels=fixed_labels, moving_labels=moving_labels,
            moving=moving, subject_id=subject_id, method=method, fixed_landmarks=fixed_landmarks,
            moving_landmarks=moving_landmarks, seconds=reg.seconds, registration_status=reg.status,
            registration_message=reg.message),
        name="evaluate")
    png = html = None
    if report:
        qc = workflow.add(
            PairQc(fixed=fixed, moving=moving, warped=reg.warped, displacement=reg.displacement,
                   subject_id=subject_id, method=method, jacobian=reg.jacobian if ours else None,
                   fixed_labels=fixed_labels, moving_labels=moving_labels, evaluation=ev.evaluation,
                   registration_status=reg.status, registration_message=reg.message,
                   sigma_t0=reg.sigma_t0 if ours else None, sigma_t1=reg.sigma_t1 if ours else None),
            name="qc")
        png, html = qc.png, qc.html
    return (ev.csv_row, ev.evaluation, png, html, ev.status, ev.message, ev.mean_dice, reg.displacement,
            reg.warped, ev.warped_labels, reg.seconds, reg.device_used, subject_id, method)


def pair_workflow(method: str, **options: ty.Any) -> PairWorkflow:
    """Build the workflow of one pair registered with ``method`` (registration -> Evaluate -> QC).

    Args:
        method: one of :data:`METHODS`: "vsvf", "lddmm", "rdmm-predefined", "rdmm-optimized"
            (RdmmRegistration), a trained network "vsvf-net", "lddmm-net", "rdmm-net" or one refined
            "vsvf-net+io", "lddmm-net+io", "rdmm-net+io" (NetworkRegistration, with ``weights=``),
            or a baseline "ants-syn", "sitk-demons", "niftyreg".
        **options: inputs of :class:`PairWorkflow` (``fixed``, ``moving``, ``fixed_labels``,
            ``moving_labels``, ``subject_id``, ``moving_regions``, landmarks, masks,
            ``config_json``, ``preset``, ``device``, ``threads``, ``report``); any other keyword is an input of
            the registration task (e.g. ``levels=1`` for sitk-demons), passed as
            ``method_options``. Inputs left out can be set later or through ``.split(...)``.

    Returns:
        A parameterised :class:`PairWorkflow`; run it with
        :func:`rdmm_pipelines.interfaces.run` (``cache_root=...``, ``worker="cf"``). Its outputs:
        csv_row, evaluation, png, html, status, message, mean_dice, displacement, warped,
        warped_labels, seconds, device_used, subject_id, method.

    Example:
        >>> wf = pair_workflow("lddmm", fixed="f.nii.gz", moving="m.nii.gz", ...)  # doctest: +SKIP
        >>> out = run(wf, cache_root="cache", worker="cf")                         # doctest: +SKIP
    """
    check_method(method)
    fields = set(_FIELDS)
    inputs = {k: v for k, v in options.items() if k in fields}
    task_options = {k: v for k, v in options.items() if k not in fields}
    if task_options:
        given = dict(inputs.pop("method_options", None) or {})
        given[method] = {**given.get(method, {}), **task_options}
        inputs["method_options"] = given
    return PairWorkflow(method=method, **inputs)


#: the inputs of PairWorkflow that pair_workflow takes by name (the rest go to the registration)
_FIELDS = ("fixed", "moving", "fixed_labels", "moving_labels", "subject_id", "moving_regions",
           "fixed_landmarks", "moving_landmarks", "config_json", "preset", "method_options", "device",
           "threads", "report", "retries", "fixed_mask", "moving_mask")
