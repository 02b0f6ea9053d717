"""nipype 1.x interfaces: registration, applying a displacement field, evaluation.

Each ``_run_interface`` calls the stage function shared with the pydra tasks
(:func:`~rdmm_pipelines.interfaces.register.register_pair`,
:func:`~rdmm_pipelines.interfaces.apply.apply_displacement`,
:func:`~rdmm_pipelines.interfaces.evaluate.evaluate_pair`) with the node's working directory as
the output folder.
"""

from __future__ import annotations

import typing as ty
from pathlib import Path

from nipype.interfaces.base import (
    BaseInterface,
    BaseInterfaceInputSpec,
    Directory,
    File,
    TraitedSpec,
    isdefined,
    traits,
)

__all__ = ["RdmmApply", "RdmmEvaluate", "RdmmRegister"]


def _given(value: ty.Any) -> ty.Any:
    """A trait's value, or None where it was left undefined."""
    return value if isdefined(value) else None


def _similarities() -> tuple[str, ...]:
    """The similarity names a registration accepts (:data:`rdmm_pipelines.similarity.SIMILARITIES`)."""
    from rdmm_pipelines.cli_config import similarity_names

    return similarity_names()


def _plain(outputs: dict[str, ty.Any]) -> dict[str, ty.Any]:
    """Paths as strings (nipype traits), None left out (an undefined output), the rest unchanged."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in outputs.items() if v is not None}


# ------------------------------------------------------------------ registration
class RdmmRegisterInputSpec(BaseInterfaceInputSpec):
    fixed = File(exists=True, mandatory=True, desc="target image I1 (NIfTI); outputs lie on its grid")
    moving = File(exists=True, mandatory=True, desc="source image I0 (NIfTI)")
    subject_id = traits.Str(mandatory=True, desc="pair identifier used in the output names")
    model = traits.Enum("rdmm", "lddmm", "vsvf", usedefault=True, desc="registration model")
    regularizer = traits.Enum("predefined", "optimized", desc="RDMM pre-weight source (default: the config's)")
    region_labels = File(exists=True, desc="moving-image label map for a predefined RDMM regulariser")
    preset = traits.Str(desc="preset name (rdmm_pipelines.PRESETS); not with config_json")
    config_json = File(exists=True, desc="RegistrationConfig as JSON (RegistrationConfig.to_dict())")
    affine = File(exists=True, desc="given affine (ITK .txt / ANTs .mat, fixed to moving)")
    fixed_mask = File(exists=True, desc="mask of the fixed image (NIfTI, nonzero = inside; any grid of its world "
                                        "space): the similarity, also in the affine stage, is measured inside it")
    moving_mask = File(exists=True, desc="mask of the moving image (NIfTI, nonzero = inside; any grid of its world "
                                         "space)")
    similarity = traits.Enum(*_similarities(), desc="similarity measure (default: the configuration's); "
                                                    "mi also sets the affine stage's (images of different contrasts)")
    device = traits.Str("auto", usedefault=True, desc='"auto", "cpu", "cuda" or "cuda:N"')
    threads = traits.Int(0, usedefault=True, desc="CPU threads; 0 = all available to the process")


class RdmmRegisterOutputSpec(TraitedSpec):
    warped = File(exists=True, desc="moving image warped onto the fixed grid")
    displacement = File(exists=True, desc="ITK/ANTs displacement field (LPS) on the fixed grid")
    composite = File(exists=True, desc="ITK HDF5 composite transform")
    jacobian = File(exists=True, desc="det J (physical units) on the fixed grid")
    record = File(exists=True, desc="registration.json (config, versions, device, timings, folds)")
    result_dir = Directory(exists=True, desc="the library's complete result directory")
    sigma_t0 = File(exists=True, desc="RDMM only: local scale sigma(x) in mm at t = 0 on the fixed grid")
    sigma_t1 = File(exists=True, desc="RDMM only: local scale sigma(x) in mm at t = 1 on the fixed grid")
    device_used = traits.Str(desc="device the registration ran on")
    seconds = traits.Float(desc="registration wall time")


class RdmmRegister(BaseInterface):
    """Register a moving image to a fixed image with vSVF, LDDMM or RDMM (:func:`rdmm_pipelines.register`).

    Outputs are written into the node's directory as ``{subject_id}_{model}_warped.nii.gz`` etc.,
    plus the complete result directory ``{subject_id}_{model}/``. Errors raise (nipype crash file).
    """

    input_spec = RdmmRegisterInputSpec
    output_spec = RdmmRegisterOutputSpec
    #: the scheduler should give this node a GPU when one is available
    requires_gpu = True

    def _run_interface(self, runtime):
        from ..register import register_pair

        i = self.inputs
        self._results = register_pair(
            i.fixed, i.moving, subject_id=i.subject_id, model=i.model, regularizer=_given(i.regularizer),
            region_labels=_given(i.region_labels), preset=_given(i.preset), config_json=_given(i.config_json),
            affine=_given(i.affine), device=i.device, threads=i.threads, out_dir=runtime.cwd,
            fixed_mask=_given(i.fixed_mask), moving_mask=_given(i.moving_mask), similarity=_given(i.similarity))
        return runtime

    def _list_outputs(self):
        return _plain(self._results)


# ------------------------------------------------------------------ applying
class RdmmApplyInputSpec(BaseInterfaceInputSpec):
    displacement = File(exists=True, mandatory=True, desc="ITK/ANTs displacement field on the fixed grid")
    image = File(exists=True, mandatory=True, desc="image or label map in moving space")
    subject_id = traits.Str(mandatory=True, desc="pair identifier used in the output name")
    labels = traits.Bool(False, usedefault=True, desc="a label map: integers, nearest neighbour")
    interpolation = traits.Enum("linear", "nearest", usedefault=True, desc="for intensity images")


class RdmmApplyOutputSpec(TraitedSpec):
    warped = File(exists=True, desc="the image on the fixed grid")


class RdmmApply(BaseInterface):
    """Warp an image or a label map onto the fixed grid with a displacement field
    (:meth:`rdmm_pipelines.transforms.DenseTransform.from_displacement_field`)."""

    input_spec = RdmmApplyInputSpec
    output_spec = RdmmApplyOutputSpec
    requires_gpu = False

    def _run_interface(self, runtime):
        from ..apply import apply_displacement

        i = self.inputs
        self._results = apply_displacement(i.displacement, i.image, subject_id=i.subject_id, labels=i.labels,
                                           interpolation=i.interpolation, out_dir=runtime.cwd)
        return runtime

    def _list_outputs(self):
        return _plain(self._results)


# ------------------------------------------------------------------ evaluation
class RdmmEvaluateInputSpec(BaseInterfaceInputSpec):
    displacement = File(exists=True, mandatory=True, desc="the registration's displacement field")
    fixed_labels = File(exists=True, mandatory=True, desc="fixed label map (the field's grid)")
    moving_labels = File(exists=True, mandatory=True, desc="moving label map")
    subject_id = traits.Str(mandatory=True, desc="pair identifier (record pair_id, output names)")
    method = traits.Str(mandatory=True, desc='method named in the record, e.g. "rdmm"')
    fixed_landmarks = File(exists=True, requires=["moving_landmarks"], desc="fixed landmarks (world mm)")
    moving_landmarks = File(exists=True, requires=["fixed_landmarks"], desc="moving landmarks (world mm)")
    landmark_convention = traits.Enum("RAS", "LPS", usedefault=True, desc="landmark coordinates")
    label_warp = traits.Enum("nearest", "onehot", usedefault=True, desc="how labels are warped")
    seconds = traits.Float(desc="registration time, copied into the record")


class RdmmEvaluateOutputSpec(TraitedSpec):
    evaluation = File(exists=True, desc="the evaluation record (JSON)")
    csv_row = File(exists=True, desc="the record as a one-row CSV with header")
    warped_labels = File(exists=True, desc="the moving labels warped onto the fixed grid")
    mean_dice = traits.Float(desc="mean Dice over the foreground labels (NaN if not measured)")
    status = traits.Str(desc='"ok", "partial" or "failed"')
    message = traits.Str(desc="why a metric is missing")


class RdmmEvaluate(BaseInterface):
    """Dice per label, folds of det J and landmark TRE of a registration given by its displacement
    field (:mod:`rdmm_pipelines.evaluation`). A measurement that fails is recorded (status
    "failed") rather than raised, so every pair has a row."""

    input_spec = RdmmEvaluateInputSpec
    output_spec = RdmmEvaluateOutputSpec
    requires_gpu = False

    def _run_interface(self, runtime):
        from ..evaluate import evaluate_pair

        i = self.inputs
        self._results = evaluate_pair(
            i.displacement, i.fixed_labels, i.moving_labels, subject_id=i.subject_id, method=i.method,
            fixed_landmarks=_given(i.fixed_landmarks), moving_landmarks=_given(i.moving_landmarks),
            landmark_convention=i.landmark_convention, label_warp=i.label_warp, seconds=_given(i.seconds),
            out_dir=runtime.cwd)
        return runtime

    def _list_outputs(self):
        return _plain(self._results)
